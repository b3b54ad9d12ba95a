"""Run records in /run/psso-hosts/<run>.json, so gc can tell live runs from dead ones."""
from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

from .paths import REGISTRY_DIR
from .processes import is_running
from .util import write_atomically

REGISTRY_RE = re.compile(r"^([0-9a-f]{6})\.json$")


@dataclasses.dataclass
class RunRecord:
    run_id: str
    state_dir: str
    owner_pid: int | None  # None: no owner; the run lives until `down` or its state dir vanishes
    owner_start: int | None
    blocks: list[str]  # the /30 networks the run's hosts use
    supervisor_pid: int | None = None
    supervisor_start: int | None = None


def registry_path(run_id: str) -> Path:
    return REGISTRY_DIR / f"{run_id}.json"


def supervisor_socket(run_id: str) -> Path:
    # Kept out of the state dir: short path (sun_path limit) and root-only directory.
    return REGISTRY_DIR / f"{run_id}.sock"


def write_record(record: RunRecord) -> None:
    REGISTRY_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(registry_path(record.run_id), json.dumps(dataclasses.asdict(record)))


def read_record(run_id: str) -> RunRecord | None:
    try:
        return RunRecord(**json.loads(registry_path(run_id).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def all_records() -> list[RunRecord]:
    if not REGISTRY_DIR.is_dir():
        return []
    names = (REGISTRY_RE.match(p.name) for p in REGISTRY_DIR.iterdir())
    records = (read_record(m.group(1)) for m in names if m)
    return [r for r in records if r is not None]


def owner_alive(record: RunRecord) -> bool:
    if record.owner_pid is None:
        return True
    return is_running(record.owner_pid, record.owner_start)


def run_is_dead(run_id: str) -> bool:
    """A run is dead when nothing can still use it: no record, its state dir gone, or its owner gone."""
    record = read_record(run_id)
    if record is None:
        return True
    if not Path(record.state_dir).is_dir():
        return True
    return not owner_alive(record)
