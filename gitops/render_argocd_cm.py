"""Renders examples/gitops/argocd-cm-health.yaml from the Lua health checks, so the ConfigMap a
user merges into argocd-cm never drifts from the tested scripts.

    python gitops/render_argocd_cm.py > examples/gitops/argocd-cm-health.yaml
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent / "argocd" / "resource_customizations"
OUTPUT = Path(__file__).resolve().parent.parent / "examples" / "gitops" / "argocd-cm-health.yaml"
HEADER = """\
# Argo CD health checks for PSSession and PSJob: merge into the argocd-cm ConfigMap. Generated from
# gitops/argocd/resource_customizations by gitops/render_argocd_cm.py; a test checks it is current.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/part-of: argocd
data:
"""


def render() -> str:
    lines = [HEADER.rstrip("\n")]
    for script in sorted(ROOT.glob("*/*/health.lua")):
        group, kind = script.parent.parent.name, script.parent.name
        lines.append(f"  resource.customizations.health.{group}_{kind}: |")
        lines.extend(("    " + line).rstrip() for line in script.read_text().splitlines())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(render(), end="")
