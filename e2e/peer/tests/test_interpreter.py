"""The script grammar, construct by construct (table-driven), without PSRP: the interpreter writes into a
recording Streams object. Every failure mode has a row too."""

from __future__ import annotations

import asyncio
import datetime
import time
import typing

import pytest

from conftest import arun
from psrp_peer.script import Interpreter, Invocation, SessionState
from psrp_peer.script import errors as E

NOW = datetime.datetime(2024, 1, 31, 13, 5, 0, tzinfo=datetime.timezone.utc)


class Recorder:
    """Streams that keeps every record, in order, as comparable tuples."""

    def __init__(self) -> None:
        self.events: typing.List[tuple] = []

    async def output(self, value):
        self.events.append(("out", value))

    async def error(self, record):
        self.events.append(("error", record.error_id, record.message))

    async def warning(self, message):
        self.events.append(("warning", message))

    async def verbose(self, message):
        self.events.append(("verbose", message))

    async def debug(self, message):
        self.events.append(("debug", message))

    async def information(self, data, tags):
        self.events.append(("information", data, tags))

    async def progress(self, record):
        self.events.append(("progress", record.activity, record.status, record.activity_id,
                            record.percent_complete, record.completed))


def make(state: typing.Optional[SessionState] = None) -> typing.Tuple[Interpreter, Recorder]:
    recorder = Recorder()

    async def fake_sleep(seconds: float) -> None:
        recorder.events.append(("sleep", seconds))

    return Interpreter(state or SessionState(), recorder, sleep=fake_sleep, now=lambda: NOW), recorder


def run(script: str, arguments=(), state=None) -> typing.List[tuple]:
    interpreter, recorder = make(state)
    arun(interpreter.run_script(script, list(arguments)), timeout=10)
    return recorder.events


def outs(*values) -> typing.List[tuple]:
    return [("out", v) for v in values]


# (script, client arguments, expected records in order)
OK_CASES = [
    # values
    ("42", [], outs(42)),
    ("-7", [], outs(-7)),
    ("9223372036854775807", [], outs(2**63 - 1)),
    ("'single'", [], outs("single")),
    ("'it''s'", [], outs("it's")),
    ('"double"', [], outs("double")),
    ('$n = 3; "n=$n!"', [], outs("n=3!")),
    ('"[$nope]"', [], outs("[]")),
    ('$a = @(1, 2); "$a $true $false $null."', [], outs("1 2 True False .")),
    ('$h = @{}; "$h"', [], outs("System.Collections.Hashtable")),
    ('$o = 1; "$o.$o[0]"', [], outs("1.1[0]")),
    ('"a`tb""c`$d"', [], outs('a\tb"c$d')),
    ('"cost: $"', [], outs("cost: $")),
    ("'héllo ✓'", [], outs("héllo ✓")),
    ("$true; $false; $null", [], outs(True, False, None)),
    ("$TRUE", [], outs(True)),
    ("@(1, 'a', $true)", [], outs(1, "a", True)),
    ("@(1, @(2, 3))", [], outs(1, [2, 3])),
    ("@()", [], []),
    ("@(\n  1,\n  2\n)", [], outs(1, 2)),
    ("@{a = 1; 'b c' = 'x'; 3 = $true}", [], outs({"a": 1, "b c": "x", 3: True})),
    ("@{\n  a = 1\n  b = @(1, 2)\n}", [], outs({"a": 1, "b": [1, 2]})),
    ("@{}", [], outs({})),
    ("'ab' * 3", [], outs("ababab")),
    ("'x' * 0", [], outs("")),
    ("$n = 4; '-' * $n", [], outs("----")),
    ("$s = 'ab'; $s * 2", [], outs("abab")),
    ("6 * 7", [], outs(42)),
    ("1..3", [], outs(1, 2, 3)),
    ("3..1", [], outs(3, 2, 1)),
    ("-1..1", [], outs(-1, 0, 1)),
    ("$r = 1..3; $r", [], outs(1, 2, 3)),
    ("$_", [], outs(None)),
    # variables
    ("$x = 5", [], []),
    ("$Name = 'v'; $NAME", [], outs("v")),
    ("$null = 5; 1", [], outs(1)),
    ("$undefined", [], outs(None)),
    # statements, separators, comments
    (";;1;;2;", [], outs(1, 2)),
    ("1\r\n2", [], outs(1, 2)),
    ("# only a comment\n1 # trailing comment", [], outs(1)),
    ("Write-Output `\n  5", [], outs(5)),
    ("\n\n  Write-Output 1\n\n", [], outs(1)),
    # parameters
    ("param($A, $B)\n$A; $B", [("B", 2), (None, 1)], outs(1, 2)),
    ("param($Name)\n$name", [("NAME", "n")], outs("n")),
    ("param($Name)\n$Name", [("Na", "prefix")], outs("prefix")),
    ("param($A, $B) $B", [("A", 1)], outs(None)),
    ("param($A) $A", [("Unknown", 1), (None, "pos")], outs("pos")),
    ("param(\n  $A,  # first\n  $B\n)\n@($A, $B)", [(None, 1), (None, 2)], outs(1, 2)),
    ("param($List, $Map) $List; $Map", [("List", [1, 2]), ("Map", {"k": "v"})], outs(1, 2, {"k": "v"})),
    ("param($A) $A = 9; $A", [("A", 1)], outs(9)),
    ("param()\n1", [], outs(1)),
    ("param ($A) $A", [("A", 3)], outs(3)),
    # Write-Output
    ("Write-Output a b 3", [], outs("a", "b", 3)),
    ("Write-Output 'x' * 3", [], outs("x", "*", 3)),
    ("Write-Output hello-world", [], outs("hello-world")),
    ("Write-Output @(1, 2)", [], outs(1, 2)),
    ("Write-Output -NoEnumerate @(1, 2)", [], outs([1, 2])),
    ("Write-Output -InputObject 5", [], outs(5)),
    ("Write-Output -InputObject:7", [], outs(7)),
    ("Write-Output -In 8", [], outs(8)),
    ("Write-Output $true -NoEnumerate:$false", [], outs(True)),
    ("write-output 1", [], outs(1)),
    ("Write-Output", [], []),
    ("Write-Output @{a = 1}", [], outs({"a": 1})),
    ("Write-Output -5", [], outs(-5)),
    ("Write-Output 2nd", [], outs("2nd")),
    ("1..2 | Write-Output", [], outs(1, 2)),
    # other streams
    ("Write-Error 'bad'; 'after'", [],
     [("error", "Microsoft.PowerShell.Commands.WriteErrorException", "bad"), ("out", "after")]),
    ("Write-Warning 'w'", [], [("warning", "w")]),
    ("'w' | Write-Warning", [], [("warning", "w")]),
    ("Write-Verbose 5", [], [("verbose", "5")]),
    ("Write-Verbose 'x' -Verbose", [], [("verbose", "x")]),
    ("Write-Debug 'd'", [], [("debug", "d")]),
    ("Write-Warning -Message @(1, 2)", [], [("warning", "1 2")]),
    ("Write-Information 'i'", [], [("information", "i", [])]),
    ("Write-Information 'i' -Tags a", [], [("information", "i", ["a"])]),
    ("Write-Information -MessageData @{k = 1} -Tags @('a', 'b')", [], [("information", {"k": 1}, ["a", "b"])]),
    ("Write-Progress -Activity 'a' -PercentComplete 10", [], [("progress", "a", "Processing", 0, 10, False)]),
    ("Write-Progress a b 3 -Completed", [], [("progress", "a", "b", 3, -1, True)]),
    ("Get-Date", [], outs(NOW)),
    ("$d = Get-Date", [], None),  # refused: see FAIL_CASES; placeholder removed below
    ("Start-Sleep -Milliseconds 10", [], [("sleep", 0.01)]),
    ("Start-Sleep -Seconds 2", [], [("sleep", 2.0)]),
    ("Start-Sleep 0", [], [("sleep", 0.0)]),
    ("Start-Sleep -s 1", [], [("sleep", 1.0)]),
    # pipelines and ForEach-Object
    ("1..2 | ForEach-Object { \"item $_\"; Write-Verbose \"v$_\" }", [],
     [("out", "item 1"), ("verbose", "v1"), ("out", "item 2"), ("verbose", "v2")]),
    ("1..3 | ForEach-Object { $last = $_ }; $last", [], outs(3)),
    ("1..2 | ForEach-Object { $o = $_; 1..2 | ForEach-Object { \"$o.$_\" } }", [], outs("1.1", "1.2", "2.1", "2.2")),
    ("$n = 3; 1..$n | ForEach-Object { $_ * 10 }", [], outs(10, 20, 30)),
    ("param($Count) 1..$Count | ForEach-Object { $_ }", [("Count", 2)], outs(1, 2)),
    ("@('a', 'b') | ForEach-Object { \"<$_>\" }", [], outs("<a>", "<b>")),
    ("ForEach-Object { 'once' }", [], outs("once")),
    ("1..2 | ForEach-Object -Process { $_ }", [], outs(1, 2)),
    ("1..2 |\n  ForEach-Object { $_ }", [], outs(1, 2)),
    ("1..3 | ForEach-Object { $_; Start-Sleep -Milliseconds 1 }", [],
     [("out", 1), ("sleep", 0.001), ("out", 2), ("sleep", 0.001), ("out", 3), ("sleep", 0.001)]),
    ("Write-Output 1 2 | ForEach-Object { $_ * 2 } | Write-Output", [], outs(2, 4)),
    ("1..2 | ForEach-Object { Write-Output $_ } | Write-Warning", [], [("warning", "1"), ("warning", "2")]),
    # a binding failure per input object is non-terminating, as in PowerShell
    ("1 | Get-Date; 'next'", [],
     [("error", "InputObjectNotBound,Microsoft.PowerShell.Commands.GetDateCommand",
       "The input object cannot be bound to any parameters for the command either because the command does not "
       "take pipeline input or the input and its properties do not match any of the parameters that take "
       "pipeline input."), ("out", "next")]),
]
OK_CASES = [case for case in OK_CASES if case[2] is not None]


@pytest.mark.parametrize("script,arguments,expected", OK_CASES, ids=[c[0][:50] for c in OK_CASES])
def test_grammar(script, arguments, expected):
    assert run(script, arguments) == expected


# (script, ScriptError subclass, FullyQualifiedErrorId, text in the message, records written before failing)
PARSE = E.ParseError
UNSUPPORTED = "does not support"
FAIL_CASES = [
    # throw: RuntimeException
    ("throw 'boom'", E.RuntimeFailure, "boom", "boom", []),
    ("throw", E.RuntimeFailure, "ScriptHalted", "ScriptHalted", []),
    ('$n = 2; throw "n=$n"', E.RuntimeFailure, "n=2", "n=2", []),
    ("'before'; throw 'x'; 'never'", E.RuntimeFailure, "x", "x", outs("before")),
    ("1..3 | ForEach-Object { $_; if2 }", E.CommandNotFound, "CommandNotFoundException", "'if2'", outs(1)),
    ("1..3 | ForEach-Object { throw \"at $_\" }", E.RuntimeFailure, "at 1", "at 1", []),
    # unknown commands: CommandNotFoundException
    ("Get-Thing", E.CommandNotFound, "CommandNotFoundException",
     "The term 'Get-Thing' is not recognized as a name of a cmdlet, function, script file, or executable program.",
     []),
    ("Write-Output 1; nope", E.CommandNotFound, "CommandNotFoundException", "'nope'", outs(1)),
    ("1 | Get-Thing", E.CommandNotFound, "CommandNotFoundException", "'Get-Thing'", []),
    ("1..2 | foreach { $_ }", E.CommandNotFound, "CommandNotFoundException", "'foreach'", []),
    ("echo 1", E.CommandNotFound, "CommandNotFoundException", "'echo'", []),
    ("param", E.CommandNotFound, "CommandNotFoundException", "'param'", []),
    # parse errors: ParseException, nothing runs
    ("'abc", PARSE, "TerminatorExpectedAtEndOfString", "The string is missing the terminator: '.", []),
    ('1; "abc', PARSE, "TerminatorExpectedAtEndOfString", 'missing the terminator: "', []),
    ("1..3 | ForEach-Object { $_", PARSE, "MissingEndCurlyBrace", "Missing closing '}'", []),
    ("@(1, 2", PARSE, "MissingEndParenthesisInSubexpression", "Missing closing ')'", []),
    ("@{a = 1", PARSE, "MissingEndCurlyBrace", "hash literal", []),
    ("@{a 1}", PARSE, "MissingEqualsInHashLiteral", "Missing '='", []),
    ("@{a = }", PARSE, "MissingExpressionInHashLiteral", "Missing statement", []),
    ("@{a = 1; A = 2}", PARSE, "DuplicateKeyInHashLiteral", "Duplicate keys 'A'", []),
    ("Write-Output 1 |", PARSE, "EmptyPipeElement", "empty pipe element", []),
    ("| Write-Output", PARSE, "EmptyPipeElement", "empty pipe element", []),
    ("Get-Date | 5", PARSE, "ExpressionsMustBeFirstInPipeline", "first element of a pipeline", []),
    ("'x' *", PARSE, "ExpectedValueExpression", "'*' operator", []),
    ("$x =", PARSE, "ExpectedValueExpression", "'=' operator", []),
    ("1..", PARSE, "ExpectedValueExpression", "'..' operator", []),
    ("$ = 1", PARSE, "InvalidVariableReference", "Variable reference is not valid", []),
    ("param($A, $A) 1", PARSE, "DuplicateFormalParameter", "Duplicate parameter $A", []),
    ("param($A", PARSE, "MissingEndParenthesisInFunctionParameterList", "Missing ')'", []),
    ("param($_) 1", PARSE, "ReservedParameterName", "'_'", []),
    ("}", PARSE, "UnexpectedToken", "Unexpected token '}'", []),
    ("1 2", PARSE, "UnexpectedToken", "Unexpected token '2'", []),
    ("'a' 'b'", PARSE, "UnexpectedToken", "Unexpected token", []),
    ("1; 'ok'; 'unterminated", PARSE, "TerminatorExpectedAtEndOfString", "At line:1 char:10", []),
    ("\x00\x01 garbage", PARSE, "UnexpectedToken", "Unexpected token", []),
    ("@(" * 200 + ")" * 200, PARSE, "PeerNestingTooDeep", "nested too deeply", []),
    ("1 | ForEach-Object {" * 100 + "}" * 100, PARSE, "PeerNestingTooDeep", "nested too deeply", []),
    # valid PowerShell outside the grammar: refused by name, never run with another meaning
    ("if ($true) { 1 }", PARSE, "PeerNotSupported", "the 'if' statement", []),
    ("foreach ($i in 1..2) { $i }", PARSE, "PeerNotSupported", "'foreach' statement", []),
    ("function f { 1 }", PARSE, "PeerNotSupported", "'function' statement", []),
    ("$x = Get-Date", PARSE, "PeerNotSupported", "assigning command output", []),
    ("$x = 1 | Write-Output", PARSE, "PeerNotSupported", "assigning pipeline output", []),
    ("$x += 1", PARSE, "PeerNotSupported", "compound assignment", []),
    ("1 + 2", PARSE, "PeerNotSupported", "operators other than", []),
    ("1, 2", PARSE, "PeerNotSupported", "comma array operator", []),
    ("Write-Output 1,2", PARSE, "PeerNotSupported", "comma array operator", []),
    ("$env:PATH", PARSE, "PeerNotSupported", "scope or drive qualified", []),
    ('"$env:PATH"', PARSE, "PeerNotSupported", "scope or drive qualified", []),
    ("$x.Length", PARSE, "PeerNotSupported", "member access", []),
    ("$a[0]", PARSE, "PeerNotSupported", "indexing", []),
    ('"$(1)"', PARSE, "PeerNotSupported", "subexpressions in strings", []),
    ('"${x}"', PARSE, "PeerNotSupported", "braced variable names", []),
    ("(1)", PARSE, "PeerNotSupported", "parenthesized expressions", []),
    ("[int]5", PARSE, "PeerNotSupported", "type literals", []),
    ("Write-Output (1)", PARSE, "PeerNotSupported", "parenthesized expressions", []),
    ("Write-Output 1..3", PARSE, "PeerNotSupported", "ranges as command arguments", []),
    ("1.5", PARSE, "PeerNotSupported", "decimal numbers", []),
    ("10kb", PARSE, "PeerNotSupported", "integers only", []),
    ("Write-Output 0x10", PARSE, "PeerNotSupported", "integers only", []),
    ("99999999999999999999", PARSE, "PeerNotSupported", "beyond Int64", []),
    ("& foo", PARSE, "PeerNotSupported", "call operators", []),
    ("@'\nx\n'@", PARSE, "PeerNotSupported", "here-strings", []),
    ("<# c #> 1", PARSE, "PeerNotSupported", "block comments", []),
    ("param([int]$A) $A", PARSE, "PeerNotSupported", "typed or attributed parameters", []),
    ("param($A = 1) $A", PARSE, "PeerNotSupported", "parameter default values", []),
    ("@(1; 2)", PARSE, "PeerNotSupported", "statements inside @( )", []),
    ("'a' || 'b'", PARSE, "PeerNotSupported", "'||'", []),
    ("{ 1 }", PARSE, "PeerNotSupported", "script blocks outside ForEach-Object", []),
    ("@splat", PARSE, "PeerNotSupported", "splatting", []),
    ("'x' * 2 * 3", PARSE, "PeerNotSupported", "chained operators", []),
    ("Write-Output(1)", PARSE, "PeerNotSupported", "command name syntax", []),
    ("$?", PARSE, "PeerNotSupported", "automatic variable $?", []),
    # parameter binding: ParameterBindingException
    ("Write-Warning", E.ParameterBindingError,
     "MissingMandatoryParameter,Microsoft.PowerShell.Commands.WriteWarningCommand", "missing mandatory parameters: Message", []),
    ("Write-Output -Foo 1", E.ParameterBindingError,
     "NamedParameterNotFound,Microsoft.PowerShell.Commands.WriteOutputCommand",
     "A parameter cannot be found that matches parameter name 'Foo'.", []),
    ("Write-Warning a b", E.ParameterBindingError, "PositionalParameterNotFound,Microsoft.PowerShell.Commands.WriteWarningCommand",
     "A positional parameter cannot be found that accepts argument 'b'.", []),
    ("Start-Sleep -Seconds", E.ParameterBindingError, "MissingArgument,Microsoft.PowerShell.Commands.StartSleepCommand",
     "Missing an argument for parameter 'Seconds'", []),
    ("Start-Sleep -Seconds abc", E.ParameterBindingError,
     "CannotConvertArgumentNoMessage,Microsoft.PowerShell.Commands.StartSleepCommand", "to type \"System.Int32\"", []),
    ("Start-Sleep -Seconds @(1)", E.ParameterBindingError,
     "CannotConvertArgument,Microsoft.PowerShell.Commands.StartSleepCommand", "System.Object[]", []),
    ("Start-Sleep -Seconds -1", E.ParameterBindingError,
     "ParameterArgumentValidationError,Microsoft.PowerShell.Commands.StartSleepCommand", "less than the minimum", []),
    ("Start-Sleep 1 -Milliseconds 5", E.ParameterBindingError,
     "AmbiguousParameterSet,Microsoft.PowerShell.Commands.StartSleepCommand", "Parameter set cannot be resolved", []),
    ("Start-Sleep", E.ParameterBindingError,
     "MissingMandatoryParameter,Microsoft.PowerShell.Commands.StartSleepCommand", "Seconds", []),
    ("Write-Progress -Activity a -PercentComplete 101", E.ParameterBindingError,
     "ParameterArgumentValidationError,Microsoft.PowerShell.Commands.WriteProgressCommand", "greater than the maximum", []),
    ("Write-Progress -Activity a -P 5", E.ParameterBindingError,
     "AmbiguousParameter,Microsoft.PowerShell.Commands.WriteProgressCommand", "is ambiguous", []),
    ("Write-Output -InputObject 1 -InputObject 2", E.ParameterBindingError,
     "ParameterAlreadyBound,Microsoft.PowerShell.Commands.WriteOutputCommand", "more than once", []),
    ("ForEach-Object 'notablock'", E.ParameterBindingError,
     "CannotConvertArgument,Microsoft.PowerShell.Commands.ForEachObjectCommand", "ScriptBlock", []),
    ("Get-Date -Format o", E.ParameterBindingError,
     "NamedParameterNotFound,Microsoft.PowerShell.Commands.GetDateCommand", "'Format'", []),
    # runtime errors
    ("$true = 1", E.VariableNotWritable, "VariableNotWritable", "Cannot overwrite variable true", []),
    ("@{} * 2", E.RuntimeFailure, "MethodNotFound", "op_Multiply", []),
    ("'x' * 'y'", E.RuntimeFailure, "InvalidArgument", "System.Int32", []),
    ("'x' * 100000000", E.RuntimeFailure, "PeerLimitExceeded", "at most", []),
    ("$r = 1..2000000", E.RuntimeFailure, "PeerLimitExceeded", "at most", []),
    ("'a'..'c'", E.NotSupported, "PeerNotSupported", "integers only", []),
    ("99999999999 * 99999999999", E.NotSupported, "PeerNotSupported", "beyond Int64", []),
]


STATEMENT_TERMINATING = (E.CommandNotFound, E.ParameterBindingError)


def test_statement_terminating_errors_let_the_script_run_on():
    interpreter, recorder = make()
    arun(interpreter.run_script("Write-Output 1; Get-Thing; Write-Output 2; Write-Warning; 3"), timeout=10)
    assert [event[:2] for event in recorder.events] == [
        ("out", 1), ("error", "CommandNotFoundException"), ("out", 2),
        ("error", "MissingMandatoryParameter,Microsoft.PowerShell.Commands.WriteWarningCommand"), ("out", 3)]


@pytest.mark.parametrize("script,error_type,error_id,text,before", FAIL_CASES,
                         ids=[c[0][:50].replace("\n", " ") for c in FAIL_CASES])
def test_failures(script, error_type, error_id, text, before):
    interpreter, recorder = make()
    if error_type in STATEMENT_TERMINATING:
        # Inside a script PowerShell writes these errors and runs on: the statement fails, the script
        # completes (HadErrors). The record is the same one a failed AddCommand pipeline carries.
        arun(interpreter.run_script(script), timeout=10)
        errors = [event for event in recorder.events if event[0] == "error"]
        assert errors, recorder.events
        assert errors[0][1] == error_id and text in errors[0][2], errors
        assert recorder.events[:len(before)] == before
        return
    with pytest.raises(E.ScriptError) as caught:
        arun(interpreter.run_script(script), timeout=10)
    error = caught.value
    assert type(error) is error_type
    assert error.error_id == error_id
    assert text in error.message
    assert recorder.events == before
    if error_type is E.ParseError:
        assert error.message.startswith("At line:")
        assert error.category == "ParserError"
        assert error.exception_types[0] == "System.Management.Automation.ParseException"


def test_error_record_fields_follow_powershell():
    thrown = E.RuntimeFailure.thrown("boom", "boom")
    assert (thrown.category, thrown.reason, thrown.target_name, thrown.target_type) == (
        "OperationStopped", "RuntimeException", "boom", "String")
    missing = E.CommandNotFound("Get-Thing")
    assert (missing.category, missing.reason, missing.target_name) == (
        "ObjectNotFound", "CommandNotFoundException", "Get-Thing")
    assert missing.exception_types[:2] == ("System.Management.Automation.CommandNotFoundException",
                                           "System.Management.Automation.RuntimeException")
    written = E.write_error_record("bad")
    assert (written.category, written.reason) == ("NotSpecified", "WriteErrorException")


def test_session_variables_persist_across_scripts():
    state = SessionState()
    assert run("$count = 5; $greeting = 'hi'", state=state) == []
    assert run("$count; $GREETING", state=state) == outs(5, "hi")
    assert run("1..3 | ForEach-Object { $count = $_ }", state=state) == []
    assert run("$count", state=state) == outs(3)
    assert state.snapshot() == {"count": 3, "greeting": "hi"}
    assert run("$count", state=SessionState()) == outs(None), "another session must not see them"


def test_parameters_do_not_leak_into_the_session():
    state = SessionState()
    assert run("param($A) $B = $A", [("A", 7)], state=state) == []
    assert run("$A; $B", state=state) == outs(None, 7)


def test_loop_variable_does_not_leak():
    state = SessionState()
    run("$_ = 'outer'; 1..2 | ForEach-Object { $_ }", state=state)
    assert run("$_", state=state) == outs("outer")


# ---- PSRP-level invocations (PowerShell.AddCommand / AddStatement / input) -------------------------------

def invoke(statements, input_items=None) -> typing.List[tuple]:
    interpreter, recorder = make()
    arun(interpreter.invoke(statements, input_items), timeout=10)
    return recorder.events


def cmd(text, *arguments, script=False) -> Invocation:
    return Invocation(text, script, list(arguments))


def test_add_command_with_positional_and_named_arguments():
    assert invoke([[cmd("Write-Output", (None, "a"), (None, "b"))]]) == outs("a", "b")
    assert invoke([[cmd("Write-Output", ("InputObject", [1, 2]), ("NoEnumerate", True))]]) == outs([1, 2])
    assert invoke([[cmd("Start-Sleep", ("Milliseconds", 5))]]) == [("sleep", 0.005)]
    assert invoke([[cmd(" Write-Output ", (None, 1))]]) == outs(1)


def test_add_command_pipeline_and_statements():
    # ps.add_command('Write-Output').add_argument(1).add_command('Write-Warning'); ps.add_statement() ...
    events = invoke([[cmd("Write-Output", (None, 1)), cmd("Write-Warning")],
                     [cmd("$x = 2; $x", script=True)],
                     [cmd("Get-Date")]])
    assert events == [("warning", "1"), ("out", 2), ("out", NOW)]


def test_add_command_unknown_fails_as_command_not_found():
    with pytest.raises(E.CommandNotFound):
        invoke([[cmd("Get-Thing")]])


def test_pipeline_input_feeds_the_first_command():
    assert invoke([[cmd("Write-Output")]], input_items=[1, "two"]) == outs(1, "two")
    assert invoke([[cmd("Write-Verbose")]], input_items=["a"]) == [("verbose", "a")]


def test_script_with_input_or_not_first_is_refused():
    with pytest.raises(E.NotSupported):
        invoke([[cmd("1", script=True)]], input_items=[1])
    with pytest.raises(E.NotSupported):
        invoke([[cmd("Write-Output", (None, 1)), cmd("$_", script=True)]])


def test_parse_error_fails_before_any_statement_runs():
    with pytest.raises(E.ParseError):
        invoke([[cmd("Write-Output", (None, 1))], [cmd("'unterminated", script=True)]])


# ---- scheduling: stop, fairness ---------------------------------------------------------------------------

def test_cancellation_stops_a_sleep_promptly():
    async def body():
        interpreter = Interpreter(SessionState(), Recorder())
        task = asyncio.ensure_future(interpreter.run_script("Start-Sleep -Seconds 60"))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - started

    assert arun(body(), timeout=10) < 1


def test_long_loops_yield_to_other_tasks():
    async def body():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticking = asyncio.ensure_future(ticker())
        await Interpreter(SessionState(), Recorder()).run_script("1..20000 | ForEach-Object { $x = $_ }")
        ticking.cancel()
        return ticks

    assert arun(body(), timeout=30) > 100


# ---- robustness: odd input only ever fails as a ScriptError ----------------------------------------------

FRAGMENTS = ["$x", "$_", "$", "=", "'a'", "''", '"b$x"', '"', "'", "@(", "@{", "(", ")", "{", "}", "[", "]", ";", "\n",
             "|", ",", "*", "..", "-", "1", "-5", "99999999999999999999", " ", "\t", "#c\n", "`", "`\n", "param(",
             "throw", "Write-Output", "ForEach-Object", "Start-Sleep", "-Seconds", "-Milliseconds:", "Get-Date",
             "Write-Progress", "-Activity", "x", "=", "$true", "$null", "\x00", "é", "\u202e", ":", "&", ".", "%"]


@pytest.mark.parametrize("seed", range(20))
def test_random_input_never_escapes_as_anything_but_script_errors(seed):
    import random

    rng = random.Random(seed)

    async def body():
        for _ in range(150):
            source = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 25)))
            interpreter, _ = make()
            try:
                await asyncio.wait_for(interpreter.run_script(source, [("x", 1)]), 2)
            except E.ScriptError:
                pass

    arun(body(), timeout=60)
