//! The out-of-process framing `pwsh -s`/`-sshs` speaks: one XML packet per line.
