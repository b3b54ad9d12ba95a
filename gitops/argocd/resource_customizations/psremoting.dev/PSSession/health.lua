-- Argo CD health of a PSSession, as DESIGN.md's table "Conditions and what GitOps tools see" says:
-- Opened: Healthy; closed by the idle rule or disconnected on purpose: Suspended; Stalled (wrong
-- credentials, rejected host key, retries used up): Degraded; anything else, including a status
-- that does not yet describe the current generation: Progressing.
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.status.observedGeneration == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local ready, stalled
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Ready" then
    ready = condition
  elseif condition.type == "Stalled" then
    stalled = condition
  end
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = stalled.reason .. ": " .. (stalled.message or "")
  return hs
end
if ready ~= nil and ready.status == "True" then
  if ready.reason == "IdleClosed" or ready.reason == "Disconnected" then
    hs.status = "Suspended"
  else
    hs.status = "Healthy"
  end
  hs.message = ready.reason .. ": " .. (ready.message or "")
  return hs
end
if ready ~= nil then
  hs.message = ready.reason .. ": " .. (ready.message or "")
end
return hs
