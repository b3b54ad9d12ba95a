"""The run's ssh test users, their credentials and keys."""
from __future__ import annotations

import pwd
import re
import secrets
from pathlib import Path

from .locking import GLOBAL_LOCK
from .util import run, write_atomically

# Like namespaces and veths, user names carry the run id, so `gc` can tell whose they are.
USER_RE = re.compile(r"^psso-([0-9a-f]{6})-(pw|key)$")


def user_names(run_id: str) -> tuple[str, str]:
    """(password user, key user). Per run: a password is machine-wide, so parallel runs with
    per-run passwords, or a test that expires a credential, would break each other on shared users."""
    return f"psso-{run_id}-pw", f"psso-{run_id}-key"


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def ensure_user(name: str) -> None:
    """Create the user once; idempotent. Login shell /bin/sh, which prints nothing for `sh -c`."""
    with GLOBAL_LOCK:  # useradd/userdel of parallel runs would fight over /etc/shadow's lock
        if not user_exists(name):
            # '*' = no password, but not locked: with UsePAM no, sshd refuses even key login to an
            # account whose password field is locked ('!'), which is useradd's default.
            run(["useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", name])


def set_password(name: str, password: str) -> None:
    with GLOBAL_LOCK:
        run(["chpasswd"], input=f"{name}:{password}\n")


def remove_user(name: str) -> None:
    with GLOBAL_LOCK:
        if user_exists(name):
            run(["userdel", "--remove", "--force", name])


def run_users() -> dict[str, list[str]]:
    """Test users on the machine, by run id."""
    users: dict[str, list[str]] = {}
    with open("/etc/passwd") as f:
        for line in f:
            match = USER_RE.match(line.split(":", 1)[0])
            if match:
                users.setdefault(match.group(1), []).append(match.group(0))
    return users


def keygen(path: Path, comment: str, passphrase: str = "") -> str:
    """Make an ed25519 keypair at `path`; return the public key line."""
    path.unlink(missing_ok=True)
    Path(f"{path}.pub").unlink(missing_ok=True)
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", comment, "-f", str(path)])
    return Path(f"{path}.pub").read_text().strip()


def make_users(run_id: str, state_dir: Path) -> dict:
    """Users, their credentials and authorized keys; returns hosts.json's `users`."""
    pw_user, key_user = user_names(run_id)
    for name in (pw_user, key_user):
        ensure_user(name)
    password = secrets.token_urlsafe(18)
    set_password(pw_user, password)

    key_dir = state_dir / "users"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    key = key_dir / "id_ed25519"
    passphrase_key = key_dir / "id_ed25519_passphrase"
    passphrase = secrets.token_urlsafe(12)
    public = keygen(key, f"{key_user}@psso-{run_id}")
    passphrase_public = keygen(passphrase_key, f"{key_user}+passphrase@psso-{run_id}", passphrase)

    # sshd reads authorized keys as the user, so this directory is world-readable (keys are public).
    auth_dir = state_dir / "authorized_keys"
    auth_dir.mkdir(mode=0o755, exist_ok=True)
    write_atomically(auth_dir / key_user, f"{public}\n{passphrase_public}\n", mode=0o644)
    return {
        "password": {"name": pw_user, "password": password},
        "key": {"name": key_user, "private_key": str(key), "public_key": public},
        "passphrase_key": {"name": key_user, "private_key": str(passphrase_key),
                           "public_key": passphrase_public, "passphrase": passphrase},
    }
