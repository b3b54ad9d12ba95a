"""How PowerShell turns values into text and into pipeline items, for the value types the grammar has."""

from __future__ import annotations

import datetime
import typing


def to_text(value: typing.Any) -> str:
    """PowerShell's string conversion as used by "$name" expansion and [string] parameters.

    Expansion uses the invariant culture, so a DateTime reads 01/31/2024 13:05:00, booleans True/False,
    arrays are joined by $OFS (a space) and a hashtable shows its type name.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, datetime.datetime):
        return value.strftime("%m/%d/%Y %H:%M:%S")
    if isinstance(value, dict):
        return "System.Collections.Hashtable"
    if isinstance(value, (list, tuple)):
        return " ".join(to_text(v) for v in value)
    return str(value)


def enumerate_items(value: typing.Any) -> typing.List[typing.Any]:
    """Items a value becomes when written to a pipeline: arrays unroll one level, everything else is one
    item (strings and hashtables included, as in PowerShell)."""
    if isinstance(value, (list, tuple)):
        return list(value)
    return [value]


def type_name(value: typing.Any) -> str:
    """The .NET type name PowerShell would show in binding errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "System.Boolean"
    if isinstance(value, int):
        return "System.Int32" if -(2**31) <= value < 2**31 else "System.Int64"
    if isinstance(value, str):
        return "System.String"
    if isinstance(value, dict):
        return "System.Collections.Hashtable"
    if isinstance(value, (list, tuple)):
        return "System.Object[]"
    if isinstance(value, datetime.datetime):
        return "System.DateTime"
    return type(value).__name__
