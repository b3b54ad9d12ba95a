-- Argo CD health of a PSJob (DESIGN.md): Queued or Running: Progressing; Completed: Healthy;
-- Failed or Stopped: Degraded, with the Failed condition's reason and message.
local hs = { status = "Progressing", message = "Waiting for the operator" }
if obj.status == nil or obj.status.state == nil then
  return hs
end
if obj.status.observedGeneration == nil or obj.status.observedGeneration ~= obj.metadata.generation then
  hs.message = "Waiting for the operator to observe the latest spec"
  return hs
end
local state = obj.status.state
if state == "Completed" then
  hs.status = "Healthy"
  hs.message = "Completed"
elseif state == "Failed" or state == "Stopped" then
  hs.status = "Degraded"
  hs.message = state
  for _, condition in ipairs(obj.status.conditions or {}) do
    if condition.type == "Failed" and condition.status == "True" then
      hs.message = condition.reason .. ": " .. (condition.message or "")
    end
  end
elseif state == "Queued" and obj.status.queuePosition ~= nil then
  hs.message = "Queued at position " .. obj.status.queuePosition
else
  hs.message = state
end
return hs
