"""The peer's script language: a small, fixed subset of PowerShell (see e2e/peer/README.md).

parser.py turns text into nodes.py trees; interpreter.py runs them with cmdlets.py (bound by binding.py)
against a SessionState, writing to a Streams object. Nothing here knows PSRP.
"""

from psrp_peer.script.errors import ParseError, ScriptError
from psrp_peer.script.interpreter import Interpreter, Invocation, SessionState, Streams
from psrp_peer.script.parser import parse

__all__ = ["Interpreter", "Invocation", "ParseError", "ScriptError", "SessionState", "Streams", "parse"]
