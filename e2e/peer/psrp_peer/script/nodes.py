"""Syntax tree of the peer's script grammar (see e2e/peer/README.md). Every node keeps its source offset so
runtime errors can point at it."""

from __future__ import annotations

import dataclasses
import typing


@dataclasses.dataclass(frozen=True)
class Node:
    pos: int


# ---- values -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Literal(Node):
    value: typing.Any  # int, str, bool or None


@dataclasses.dataclass(frozen=True)
class Variable(Node):
    name: str  # as written; lookups are case-insensitive like PowerShell's


@dataclasses.dataclass(frozen=True)
class ExpandableString(Node):
    """A double-quoted string: literal text and $name references, in order."""

    parts: typing.Tuple[typing.Union[str, Variable], ...]


@dataclasses.dataclass(frozen=True)
class ArrayLiteral(Node):
    items: typing.Tuple["Expression", ...]


@dataclasses.dataclass(frozen=True)
class HashLiteral(Node):
    entries: typing.Tuple[typing.Tuple[typing.Any, "Expression"], ...]  # (key, value); keys are constants


@dataclasses.dataclass(frozen=True)
class Range(Node):
    start: "Expression"
    end: "Expression"


@dataclasses.dataclass(frozen=True)
class Multiply(Node):
    left: "Expression"
    right: "Expression"


@dataclasses.dataclass(frozen=True)
class ScriptBlock(Node):
    """`{ ... }`, only meaningful as ForEach-Object's -Process argument."""

    statements: typing.Tuple["Statement", ...]


Expression = typing.Union[Literal, Variable, ExpandableString, ArrayLiteral, HashLiteral, Range, Multiply]


# ---- commands -----------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ParameterToken(Node):
    """`-Name` or `-Name:value`; whether a bare `-Name` takes the next argument is up to the binder."""

    name: str
    value: typing.Optional[typing.Union[Expression, ScriptBlock]] = None
    has_colon_value: bool = False


@dataclasses.dataclass(frozen=True)
class Argument(Node):
    value: typing.Union[Expression, ScriptBlock]


@dataclasses.dataclass(frozen=True)
class Command(Node):
    name: str
    arguments: typing.Tuple[typing.Union[ParameterToken, Argument], ...]


@dataclasses.dataclass(frozen=True)
class Pipeline(Node):
    """First element a command or an expression; the rest commands, joined by `|`."""

    elements: typing.Tuple[typing.Union[Command, Expression], ...]


# ---- statements ---------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Assignment(Node):
    name: str
    value: Expression


@dataclasses.dataclass(frozen=True)
class Throw(Node):
    value: typing.Optional[Expression]


Statement = typing.Union[Assignment, Throw, Pipeline]


@dataclasses.dataclass(frozen=True)
class Script(Node):
    parameters: typing.Tuple[str, ...]  # from a leading param(...) block
    statements: typing.Tuple[Statement, ...]
