"""Every script in examples/ stays inside the peer's grammar (DESIGN.md, "Real parts in tests").

Each example file's PSJobs run, in document order, on the real peer through a third-party client
(pypsrp), one runspace pool per PSSession they name, with their parameters bound as a client binds
them: a script that leaves the grammar fails here, not in a later end-to-end test.
"""

from __future__ import annotations

import collections
import typing
from pathlib import Path

import pytest
import yaml

from test_peer_client import invoke, with_pool

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


def jobs_by_session(path: Path) -> typing.Dict[str, typing.List[dict]]:
    jobs: typing.Dict[str, typing.List[dict]] = collections.defaultdict(list)
    for document in yaml.safe_load_all(path.read_text()):
        if document and document.get("kind") == "PSJob":
            jobs[document["spec"]["sessionRef"]["name"]].append(document)
    return jobs


EXAMPLE_FILES = sorted(p for p in EXAMPLES.glob("*.yaml") if jobs_by_session(p))


def test_the_examples_have_jobs():
    assert len(EXAMPLE_FILES) >= 3, EXAMPLE_FILES


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=[p.name for p in EXAMPLE_FILES])
def test_example_scripts_run_without_errors(peer, path):
    for session, jobs in jobs_by_session(path).items():
        async def body(rp):
            results = {}
            for job in jobs:
                ps, output = await invoke(rp, job["spec"]["script"], **job["spec"].get("parameters", {}))
                errors = [str(e) for e in ps.streams.error]
                assert not ps.had_errors, f"{path.name} {job['metadata']['name']}: {errors}"
                results[job["metadata"]["name"]] = output
            return results

        results = with_pool(peer, body)
        assert all(results.values()), f"{path.name} ({session}): a job printed nothing: {results}"


def test_session_state_example_shares_state_between_jobs(peer):
    jobs = jobs_by_session(EXAMPLES / "psjob-session-state.yaml")["web01"]

    async def body(rp):
        outputs = []
        for job in jobs:
            _, output = await invoke(rp, job["spec"]["script"])
            outputs.append(output)
        return outputs

    staged, reported = with_pool(peer, body)
    assert staged == ["staged v1.4.2"]
    assert reported[0] == "running v1.4.2"


def test_parameters_example_keeps_types(peer):
    job = jobs_by_session(EXAMPLES / "psjob-parameters.yaml")["linux01"][0]

    async def body(rp):
        _, output = await invoke(rp, job["spec"]["script"], **job["spec"]["parameters"])
        return output

    output = with_pool(peer, body)
    assert output[:3] == ["nginx", 14, True]
    assert output[3:5] == ["/var/log/nginx", "/var/log/app"]
    assert dict(output[5]) == {"team": "platform", "ticket": "OPS-1234"}
