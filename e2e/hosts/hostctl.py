#!/usr/bin/env python3
"""Command-line entry point of the target-host harness; the code is the hostctl/ package beside it.

It stays a file because it is run by path: by e2e/src/hosts.rs, the tests, and the run's own
supervisor, teardown and relay processes, which re-execute it (see hostctl/paths.py).
"""
import sys
from pathlib import Path

# Python puts this directory first on sys.path anyway, but not under -P or -I.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hostctl.cli import main  # noqa: E402  (needs the path above)

if __name__ == "__main__":
    sys.exit(main())
