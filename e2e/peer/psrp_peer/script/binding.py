"""Parameter binding for the peer's cmdlets, after PowerShell's binder: named parameters (unique prefixes
allowed, `-Name:value` and switches), then positionals by position, then pipeline input, then mandatory
checks. Errors carry PowerShell's messages and FullyQualifiedErrorIds."""

from __future__ import annotations

import dataclasses
import typing

from psrp_peer.script.errors import ParameterBindingError
from psrp_peer.script.values import to_text, type_name


@dataclasses.dataclass(frozen=True)
class ScriptBlockValue:
    """A `{ ... }` argument: the parsed statements, run later in the caller's scope."""

    statements: typing.Tuple[typing.Any, ...]


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    name: str
    kind: str = "object"  # object | string | strings | int | switch | scriptblock
    position: typing.Optional[int] = None
    mandatory: bool = False
    from_pipeline: bool = False  # ValueFromPipeline
    remaining: bool = False  # ValueFromRemainingArguments: extra positionals collect here
    minimum: typing.Optional[int] = None
    maximum: typing.Optional[int] = None


# Common parameters every cmdlet accepts; the peer honours none of them beyond accepting the switch.
COMMON_SWITCHES = (ParamSpec("Verbose", "switch"), ParamSpec("Debug", "switch"))


@dataclasses.dataclass(frozen=True)
class Token:
    """One argument as written: `-Name`, `-Name:value` or a positional value."""

    name: typing.Optional[str]  # None for a positional value
    value: typing.Any = None
    has_value: bool = False  # True for -Name:value and for named PSRP parameters

    @classmethod
    def positional(cls, value: typing.Any) -> "Token":
        return cls(None, value, True)


class Binder:
    def __init__(self, command: str, parameters: typing.Sequence[ParamSpec]) -> None:
        self.command = command
        self.parameters = tuple(parameters) + COMMON_SWITCHES

    def fail(self, error_id: str, message: str) -> ParameterBindingError:
        return ParameterBindingError(self.command, error_id, message)

    def resolve(self, name: str) -> ParamSpec:
        lowered = name.lower()
        exact = [p for p in self.parameters if p.name.lower() == lowered]
        if exact:
            return exact[0]
        matches = [p for p in self.parameters if p.name.lower().startswith(lowered)]
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(p.name for p in matches)
            raise self.fail(
                "AmbiguousParameter",
                f"Parameter cannot be processed because the parameter name '{name}' is ambiguous. "
                f"Possible matches include: {names}.",
            )
        raise self.fail("NamedParameterNotFound", f"A parameter cannot be found that matches parameter name '{name}'.")

    def bind(self, tokens: typing.Sequence[Token]) -> typing.Dict[str, typing.Any]:
        bound: typing.Dict[str, typing.Any] = {}
        positionals: typing.List[typing.Any] = []
        i = 0
        while i < len(tokens):
            token = tokens[i]
            i += 1
            if token.name is None:
                positionals.append(token.value)
                continue
            spec = self.resolve(token.name)
            if spec.name in bound:
                raise self.fail(
                    "ParameterAlreadyBound",
                    f"Cannot bind parameter because parameter '{spec.name}' is specified more than once. To "
                    "provide multiple values to parameters that can accept multiple values, use the array "
                    "syntax. For example, \"-parameter value1,value2,value3\".",
                )
            if spec.kind == "switch":
                bound[spec.name] = bool(token.value) if token.has_value else True
                continue
            if token.has_value:
                value = token.value
            elif i < len(tokens) and tokens[i].name is None:
                value = tokens[i].value
                i += 1
            else:
                raise self.fail(
                    "MissingArgument",
                    f"Missing an argument for parameter '{spec.name}'. Specify a parameter of type "
                    f"'{_dotnet_type(spec)}' and try again.",
                )
            bound[spec.name] = self.convert(spec, value)

        open_positions = sorted(
            (p for p in self.parameters if p.position is not None and p.name not in bound),
            key=lambda p: typing.cast(int, p.position),
        )
        for index, value in enumerate(positionals):
            if not open_positions:
                raise self.fail(
                    "PositionalParameterNotFound",
                    f"A positional parameter cannot be found that accepts argument '{to_text(value)}'.",
                )
            spec = open_positions.pop(0)
            if spec.remaining:
                rest = positionals[index:]
                bound[spec.name] = self.convert(spec, rest[0] if len(rest) == 1 else list(rest))
                break
            bound[spec.name] = self.convert(spec, value)
        return bound

    def bind_input(self, bound: typing.Dict[str, typing.Any], item: typing.Any) -> typing.Dict[str, typing.Any]:
        """Bind one pipeline input object (ValueFromPipeline) on top of the argument binding."""
        for spec in self.parameters:
            if spec.from_pipeline and spec.name not in bound:
                with_input = dict(bound)
                with_input[spec.name] = self.convert(spec, item)
                return with_input
        raise self.fail(
            "InputObjectNotBound",
            "The input object cannot be bound to any parameters for the command either because the command does "
            "not take pipeline input or the input and its properties do not match any of the parameters that "
            "take pipeline input.",
        )

    def check_mandatory(self, bound: typing.Dict[str, typing.Any]) -> None:
        missing = [p.name for p in self.parameters if p.mandatory and p.name not in bound]
        if missing:
            raise self.fail(
                "MissingMandatoryParameter",
                f"Cannot process command because of one or more missing mandatory parameters: {' '.join(missing)}.",
            )

    def convert(self, spec: ParamSpec, value: typing.Any) -> typing.Any:
        if spec.kind == "object":
            return value
        if spec.kind == "string":
            return to_text(value)
        if spec.kind == "strings":
            return [to_text(v) for v in value] if isinstance(value, (list, tuple)) else [to_text(value)]
        if spec.kind == "switch":
            return bool(value)
        if spec.kind == "scriptblock":
            if isinstance(value, ScriptBlockValue):
                return value
            raise self.cannot_convert(spec, value)
        if spec.kind == "int":
            number = self.to_int(spec, value)
            if spec.minimum is not None and number < spec.minimum:
                raise self.fail(
                    "ParameterArgumentValidationError",
                    f"Cannot validate argument on parameter '{spec.name}'. The {number} argument is less than the "
                    f"minimum allowed range of {spec.minimum}. Supply an argument that is greater than or equal "
                    f"to {spec.minimum} and then try the command again.",
                )
            if spec.maximum is not None and number > spec.maximum:
                raise self.fail(
                    "ParameterArgumentValidationError",
                    f"Cannot validate argument on parameter '{spec.name}'. The {number} argument is greater than "
                    f"the maximum allowed range of {spec.maximum}. Supply an argument that is less than or equal "
                    f"to {spec.maximum} and then try the command again.",
                )
            return number
        raise AssertionError(f"unknown parameter kind {spec.kind}")

    def to_int(self, spec: ParamSpec, value: typing.Any) -> int:
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, int):
            return int(value)
        if value is None:
            return 0
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                raise self.fail(
                    "CannotConvertArgumentNoMessage",
                    f"Cannot bind parameter '{spec.name}'. Cannot convert value \"{value}\" to type "
                    "\"System.Int32\". Error: \"The input string '" + value + "' was not in a correct format.\"",
                ) from None
        raise self.cannot_convert(spec, value)

    def cannot_convert(self, spec: ParamSpec, value: typing.Any) -> ParameterBindingError:
        return self.fail(
            "CannotConvertArgument",
            f"Cannot bind parameter '{spec.name}'. Cannot convert the \"{to_text(value)}\" value of type "
            f"\"{type_name(value)}\" to type \"{_dotnet_type(spec)}\".",
        )


def _dotnet_type(spec: ParamSpec) -> str:
    return {
        "object": "System.Object",
        "string": "System.String",
        "strings": "System.String[]",
        "int": "System.Int32",
        "switch": "System.Management.Automation.SwitchParameter",
        "scriptblock": "System.Management.Automation.ScriptBlock",
    }[spec.kind]
