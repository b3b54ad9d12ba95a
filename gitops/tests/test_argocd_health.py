"""Runs the Argo CD health checks in gitops/argocd/resource_customizations against their
health_test.yaml cases, the way Argo CD's own resource-customization tests do: the object is the
global `obj`, the script returns {status, message}. Argo CD embeds gopher-lua (Lua 5.1); this runs
the scripts on Lua 5.1 too (lupa's lua51 runtime)."""

from pathlib import Path

import lupa.lua51 as lua51
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent / "argocd" / "resource_customizations"


def cases():
    for test_file in sorted(ROOT.glob("*/*/health_test.yaml")):
        for case in yaml.safe_load(test_file.read_text())["tests"]:
            yield pytest.param(test_file.parent, case, id=f"{test_file.parent.name}-{Path(case['inputPath']).stem}")


def to_lua(runtime, value):
    """Python data to Lua tables: maps keep their keys, lists become 1-based arrays."""
    if isinstance(value, dict):
        return runtime.table_from({k: to_lua(runtime, v) for k, v in value.items()})
    if isinstance(value, list):
        return runtime.table_from([to_lua(runtime, v) for v in value])
    return value


@pytest.mark.parametrize("kind_dir,case", list(cases()))
def test_health(kind_dir, case):
    runtime = lua51.LuaRuntime(unpack_returned_tuples=True)
    obj = yaml.safe_load((kind_dir / case["inputPath"]).read_text())
    runtime.globals().obj = to_lua(runtime, obj)
    script = (kind_dir / "health.lua").read_text()
    result = runtime.execute(script)
    assert result["status"] == case["healthStatus"]["status"]
    assert result["message"] == case["healthStatus"]["message"]


def test_every_kind_has_cases():
    kinds = {p.parent.name for p in ROOT.glob("*/*/health.lua")}
    tested = {p.parent.name for p in ROOT.glob("*/*/health_test.yaml")}
    assert kinds == tested == {"PSSession", "PSJob"}


def test_the_argocd_cm_example_is_current():
    import importlib.util

    spec = importlib.util.spec_from_file_location("render", ROOT.parent.parent / "render_argocd_cm.py")
    render = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(render)
    assert render.OUTPUT.read_text() == render.render(), "run gitops/render_argocd_cm.py"
