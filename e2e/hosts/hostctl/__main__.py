"""`python -m hostctl` (from e2e/hosts/), the same CLI as e2e/hosts/hostctl.py."""
import sys

from .cli import main

sys.exit(main())
