//! The SSH transport: the `powershell` subsystem of an SSH server, as a byte stream.
