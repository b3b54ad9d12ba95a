//! CLIXML: the PowerShell serialization format PSRP message bodies are written in.
