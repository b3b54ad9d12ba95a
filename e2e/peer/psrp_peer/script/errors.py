"""PowerShell errors as the interpreter raises or writes them.

Pure Python on purpose (no psrpcore here): the engine turns a ScriptError into the psrpcore ErrorRecord it
sends (psrp_peer/records.py). Each error carries what a client reads off a real PowerShell ErrorRecord: the
.NET exception type chain, the message, FullyQualifiedErrorId and the category info, so tests of the
operator see the same fields a real host would produce.
"""

from __future__ import annotations

import typing

# .NET type chains, most derived first; System.Exception and System.Object are appended by the engine.
RUNTIME_EXCEPTION = ("System.Management.Automation.RuntimeException", "System.SystemException")


class ScriptError(Exception):
    """An error record: terminating when raised, non-terminating when passed to Streams.error()."""

    def __init__(
        self,
        message: str,
        *,
        error_id: str,
        category: str,
        exception_types: typing.Sequence[str] = RUNTIME_EXCEPTION,
        reason: typing.Optional[str] = None,
        target: typing.Any = None,
        target_name: typing.Optional[str] = None,
        target_type: typing.Optional[str] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_id = error_id
        # A psrpcore ErrorCategory member name (NotSpecified, ObjectNotFound, ParserError, ...).
        self.category = category
        self.exception_types = tuple(exception_types)
        # PowerShell's CategoryInfo.Reason is the exception's short type name.
        self.reason = reason or self.exception_types[0].rsplit(".", 1)[-1]
        self.target = target
        self.target_name = target_name
        self.target_type = target_type

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, error_id={self.error_id!r})"


class RuntimeFailure(ScriptError):
    """`throw 'm'` and other runtime errors: System.Management.Automation.RuntimeException."""

    @classmethod
    def thrown(cls, value: typing.Any, text: str) -> "RuntimeFailure":
        # PowerShell: `throw 'boom'` -> RuntimeException 'boom', FullyQualifiedErrorId 'boom',
        # CategoryInfo OperationStopped (boom:String) [], RuntimeException. A bare `throw` says ScriptHalted.
        if value is None:
            return cls("ScriptHalted", error_id="ScriptHalted", category="OperationStopped")
        return cls(
            text,
            error_id=text,
            category="OperationStopped",
            target=value,
            target_name=text,
            target_type="String" if isinstance(value, str) else type(value).__name__,
        )

    @classmethod
    def peer_limit(cls, message: str) -> "RuntimeFailure":
        return cls(message, error_id="PeerLimitExceeded", category="LimitsExceeded")


class CommandNotFound(ScriptError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"The term '{name}' is not recognized as a name of a cmdlet, function, script file, or executable "
            "program.\nCheck the spelling of the name, or if a path was included, verify that the path is "
            "correct and try again.",
            error_id="CommandNotFoundException",
            category="ObjectNotFound",
            exception_types=("System.Management.Automation.CommandNotFoundException",) + RUNTIME_EXCEPTION,
            target=name,
            target_name=name,
            target_type="String",
        )


class ParseError(ScriptError):
    """The whole script is rejected before it runs, as PowerShell's parser does (ParseException)."""

    def __init__(self, source: str, offset: int, error_id: str, message: str) -> None:
        line_no, column, line_text = _locate(source, offset)
        caret = " " * (column - 1) + "~"
        super().__init__(
            f"At line:{line_no} char:{column}\n+ {line_text}\n+ {caret}\n{message}",
            error_id=error_id,
            category="ParserError",
            exception_types=("System.Management.Automation.ParseException",) + RUNTIME_EXCEPTION,
        )
        self.short_message = message
        self.offset = offset


class ParameterBindingError(ScriptError):
    def __init__(self, command: str, error_id: str, message: str) -> None:
        # PowerShell qualifies binding error ids with the cmdlet's class, e.g.
        # NamedParameterNotFound,Microsoft.PowerShell.Commands.WriteOutputCommand
        super().__init__(
            message,
            error_id=f"{error_id},Microsoft.PowerShell.Commands.{command.replace('-', '')}Command",
            category="InvalidArgument",
            exception_types=("System.Management.Automation.ParameterBindingException",) + RUNTIME_EXCEPTION,
            target_name=command,
        )


class VariableNotWritable(ScriptError):
    def __init__(self, name: str) -> None:
        super().__init__(
            f"Cannot overwrite variable {name} because it is read-only or constant.",
            error_id="VariableNotWritable",
            category="WriteError",
            exception_types=("System.Management.Automation.SessionStateUnauthorizedAccessException",)
            + RUNTIME_EXCEPTION,
            target=name,
            target_name=name,
            target_type="String",
        )


class NotSupported(ScriptError):
    """Something valid in PowerShell that the peer's fixed grammar does not do, said plainly."""

    def __init__(self, what: str) -> None:
        super().__init__(
            f"The PSRP test peer does not support {what}; see e2e/peer/README.md for its grammar.",
            error_id="PeerNotSupported",
            category="NotImplemented",
            exception_types=("System.NotSupportedException", "System.SystemException"),
        )


def write_error_record(message: str) -> ScriptError:
    """The non-terminating record `Write-Error 'm'` writes (not raised)."""
    return ScriptError(
        message,
        error_id="Microsoft.PowerShell.Commands.WriteErrorException",
        category="NotSpecified",
        exception_types=("Microsoft.PowerShell.Commands.WriteErrorException", "System.SystemException"),
    )


def _locate(source: str, offset: int) -> typing.Tuple[int, int, str]:
    offset = max(0, min(offset, len(source)))
    line_start = source.rfind("\n", 0, offset) + 1
    line_end = source.find("\n", offset)
    if line_end == -1:
        line_end = len(source)
    return source.count("\n", 0, offset) + 1, offset - line_start + 1, source[line_start:line_end]
