"""The one exception type of the harness, so callers and the CLI tell its failures from bugs."""
from __future__ import annotations


class HostctlError(Exception):
    """A failure the CLI reports as one line on stderr (exit status 1)."""
