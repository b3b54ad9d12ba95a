"""DIR/hosts.json, the contract with the tests, and the state dir that holds it."""
from __future__ import annotations

import contextlib
import json
import re
import shutil
import stat
from pathlib import Path
from typing import Iterator

from .errors import HostctlError
from .locking import FileLock
from .paths import SHIM
from .registry import read_record
from .util import require_root, write_atomically

# The state dir ends up unquoted in sshd_config and in the subsystem's shell command line.
SAFE_PATH_RE = re.compile(r"^[A-Za-z0-9._/+-]+$")
UNIX_PATH_MAX = 107  # sun_path is 108 bytes including the terminating NUL


def hosts_json(state_dir: Path) -> Path:
    return state_dir / "hosts.json"


def load_state(state_dir: Path) -> dict:
    try:
        return json.loads(hosts_json(state_dir).read_text())
    except FileNotFoundError:
        raise HostctlError(f"{hosts_json(state_dir)} not found: run `hostctl.py up` first") from None
    except (OSError, ValueError) as e:
        raise HostctlError(f"{hosts_json(state_dir)}: {e}") from None


def save_state(state: dict) -> None:
    # Root only: it holds the test password and passphrase.
    write_atomically(hosts_json(Path(state["state_dir"])), json.dumps(state, indent=2) + "\n", mode=0o600)


@contextlib.contextmanager
def live_state(state_dir: str | Path) -> Iterator[dict]:
    """Load hosts.json of a running run under the state dir's lock; save it if the body succeeds."""
    require_root()
    state_dir = Path(state_dir).resolve()
    with FileLock(state_dir / ".hostctl.lock"):
        state = load_state(state_dir)
        if read_record(state["run_id"]) is None:
            raise HostctlError(f"run {state['run_id']} of {state_dir} is down")
        yield state
        save_state(state)


@contextlib.contextmanager
def live_host(state_dir: str | Path, name: str) -> Iterator[tuple[dict, dict]]:
    """live_state and the named host in it: a fault command changes one host and prints its entry."""
    with live_state(state_dir) as state:
        yield state, find_host(state, name)


def find_host(state: dict, name: str) -> dict:
    for host in state["hosts"]:
        if host["name"] == name:
            return host
    names = ", ".join(h["name"] for h in state["hosts"])
    raise HostctlError(f"no host {name!r} in {state['state_dir']} (hosts: {names})")


def prepare_state_dir(state_dir: str | Path, count: int) -> Path:
    """Create the state dir and check the ssh users can reach into it.

    sshd reads authorized_keys as the user and the subsystem shim, running as the user, connects
    to DIR/<host>/peer.sock: every ancestor must be traversable by others.
    """
    path = Path(state_dir).resolve()
    if not SAFE_PATH_RE.match(str(path)):
        raise HostctlError(f"state dir {path}: only [A-Za-z0-9._/+-] allowed "
                           f"(it appears unquoted in sshd_config and the subsystem command)")
    longest_socket = path / f"h{count - 1}" / "peer.sock"
    if len(str(longest_socket)) > UNIX_PATH_MAX:
        raise HostctlError(f"state dir {path} is too long: {longest_socket} exceeds the "
                           f"{UNIX_PATH_MAX}-byte Unix socket path limit")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o711)  # traversable, not listable
    for ancestor in path.parents:
        if not ancestor.stat().st_mode & stat.S_IXOTH:
            raise HostctlError(f"state dir {path}: the ssh test users cannot traverse {ancestor} "
                               f"(mode {stat.S_IMODE(ancestor.stat().st_mode):04o}); "
                               f"use a directory under a world-traversable one such as /tmp")
    # sshd runs the subsystem as the test user, who may not be able to reach the checkout (a clone
    # under /root or a mktemp -d dir is 0700): run a copy from the state dir, which they can.
    shim = path / SHIM.name
    shutil.copyfile(SHIM, shim)
    shim.chmod(0o755)
    return path
