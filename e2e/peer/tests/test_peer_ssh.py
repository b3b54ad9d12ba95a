"""The shim where it is meant to run: as a real OpenSSH sshd's `powershell` subsystem on loopback (the host
harness in e2e/hosts/ does the same inside network namespaces). Skipped where sshd cannot run."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import time
import typing
from pathlib import Path

import psrp
import pytest

from conftest import SHIM, Peer, _die_with_parent, arun

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"

pytestmark = pytest.mark.skipif(not (os.path.exists(SSHD) and os.geteuid() == 0 and shutil.which("ssh-keygen")),
                                reason="needs root and OpenSSH's sshd")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sshd:
    def __init__(self, directory: Path, peer_socket: Path) -> None:
        self.dir = directory
        self.port = free_port()
        for name in ("host", "client"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(directory / name)], check=True)
        (directory / "authorized_keys").write_text((directory / "client.pub").read_text())
        (directory / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {(directory / 'host.pub').read_text()}")
        (directory / "sshd_config").write_text(f"""Port {self.port}
ListenAddress 127.0.0.1
HostKey {directory}/host
PidFile none
AuthorizedKeysFile {directory}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
Subsystem powershell {SHIM} {peer_socket}
""")
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd insists on
        self.process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(directory / "sshd_config")],
                                        stdout=subprocess.DEVNULL, stderr=open(directory / "sshd.log", "wb"),
                                        preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError((directory / "sshd.log").read_text())
                time.sleep(0.05)

    def info(self) -> psrp.SSHInfo:
        import asyncssh

        options = asyncssh.SSHClientConnectionOptions(username="root", client_keys=[str(self.dir / "client")],
                                                      known_hosts=str(self.dir / "known_hosts"))
        return psrp.SSHInfo("127.0.0.1", port=self.port, options=options)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def sshd(tmp_path, fresh_peer) -> typing.Iterator[typing.Tuple[Sshd, Peer]]:
    (tmp_path / "ssh").mkdir()
    server = Sshd(tmp_path / "ssh", fresh_peer.socket)
    yield server, fresh_peer
    server.stop()


def test_session_over_ssh_subsystem(sshd):
    server, peer = sshd

    async def main():
        async with psrp.AsyncRunspacePool(server.info()) as rp:
            ps = psrp.AsyncPowerShell(rp)
            ps.add_script("$where = 'over ssh'; $where; 1..3 | ForEach-Object { $_ }")
            assert await ps.invoke() == ["over ssh", 1, 2, 3]
            ps = psrp.AsyncPowerShell(rp)
            ps.add_script("Start-Sleep -Seconds 60")
            task = await ps.invoke_async()
            await asyncio.sleep(0.2)
            await ps.stop()
            with pytest.raises(psrp.PipelineStopped):
                await task
            ps = psrp.AsyncPowerShell(rp)
            ps.add_script("$where")
            assert await ps.invoke() == ["over ssh"]

    arun(main(), 60)
    peer.wait_for_log("closed by the client")
    assert "opened by root (uid 0" in peer.log_text()


CLIENT = """
import asyncio, asyncssh, psrp, sys
async def main():
    options = asyncssh.SSHClientConnectionOptions(username="root", client_keys=[sys.argv[1] + "/client"],
                                                  known_hosts=sys.argv[1] + "/known_hosts")
    rp = psrp.AsyncRunspacePool(psrp.SSHInfo("127.0.0.1", port=int(sys.argv[2]), options=options))
    await rp.open()
    ps = psrp.AsyncPowerShell(rp)
    ps.add_script("Start-Sleep -Seconds 120")
    await ps.invoke_async()
    print("ready", flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""


def test_killed_ssh_client_abandons_its_runspace(sshd):
    """The client process dies mid-pipeline: sshd ends the subsystem, the shim's socket closes, and the
    runspace ends with it (no disconnect over SSH); the peer stays up."""
    server, peer = sshd
    client = subprocess.Popen([sys.executable, "-c", CLIENT, str(server.dir), str(server.port)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_die_with_parent)
    try:
        line = client.stdout.readline()
        assert line == b"ready\n", client.stderr.read().decode()[-2000:]
        assert peer.stats()["pipelines"] == 1
    finally:
        client.kill()
        client.wait(10)
        client.stdout.close()
        client.stderr.close()
    peer.wait_for_log("abandoned: connection lost without Close", timeout=15)
    assert peer.alive() and peer.stats()["sessions"] == 0
