"""PowerShell Remoting Protocol peer for pssession-operator's end-to-end tests.

One asyncio process per test host serves every PSRP session (see README.md): server.py accepts Unix socket
connections from the pwsh-shim that sshd runs as the `powershell` subsystem, outofproc.py speaks the
out-of-process framing on each (framing.py), and engine.py runs the transport-agnostic session: a psrpcore
ServerRunspacePool, its pipelines (runner.py) and the script interpreter (script/).
"""
