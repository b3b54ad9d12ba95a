"""Runs the peer's script grammar (e2e/peer/README.md) against a session's variables.

The interpreter knows nothing of PSRP: it writes to a Streams object (the engine's adapter sends the records
through psrpcore; tests collect them in lists) and awaits between items, so output leaves as it is produced,
Start-Sleep never blocks the event loop, and a stop (task cancellation) lands promptly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import typing

from psrp_peer.script import cmdlets, nodes
from psrp_peer.script.binding import Binder, ScriptBlockValue, Token
from psrp_peer.script.errors import (
    CommandNotFound,
    NotSupported,
    ParameterBindingError,
    RuntimeFailure,
    ScriptError,
    VariableNotWritable,
)
from psrp_peer.script.parser import MAX_INT64, parse
from psrp_peer.script.values import enumerate_items, to_text, type_name

MAX_STRING_CHARS = 16 * 1024 * 1024  # 'x' * N: serializing more would stall every session of the shared process
MAX_RANGE_ITEMS = 1_000_000  # a range held in a variable; 1..N at the head of a pipeline streams, unbounded
CONSTANTS = {"true": True, "false": False, "null": None}


class Streams(typing.Protocol):
    """Where a pipeline's output and records go. Every call may wait (backpressure)."""

    async def output(self, value: typing.Any) -> None: ...
    async def error(self, record: ScriptError) -> None: ...
    async def warning(self, message: str) -> None: ...
    async def verbose(self, message: str) -> None: ...
    async def debug(self, message: str) -> None: ...
    async def information(self, message_data: typing.Any, tags: typing.List[str]) -> None: ...
    async def progress(self, record: cmdlets.ProgressRecord) -> None: ...


class SessionState:
    """Variables of one runspace pool: what a later pipeline sees of an earlier one. Names are
    case-insensitive, as PowerShell's; the spelling of the last assignment is kept for listings."""

    def __init__(self) -> None:
        self._variables: typing.Dict[str, typing.Tuple[str, typing.Any]] = {}

    def get(self, name: str) -> typing.Any:
        return self._variables.get(name.lower(), (name, None))[1]

    def set(self, name: str, value: typing.Any) -> None:
        self._variables[name.lower()] = (name, value)

    def clear(self) -> None:
        self._variables.clear()

    def snapshot(self) -> typing.Dict[str, typing.Any]:
        return {name: value for name, value in self._variables.values()}


class Scope:
    """Pipeline-local variables ($_ and bound parameters) over the session's. Assignment writes to the
    innermost scope that has the name, otherwise to the session (where `$x = 1` must persist)."""

    def __init__(self, state: SessionState, parent: typing.Optional["Scope"] = None,
                 local: typing.Optional[typing.Dict[str, typing.Any]] = None) -> None:
        self.state = state
        self.parent = parent
        self.local = {k.lower(): v for k, v in (local or {}).items()}

    def lookup(self, name: str) -> typing.Any:
        key = name.lower()
        scope: typing.Optional[Scope] = self
        while scope is not None:
            if key in scope.local:
                return scope.local[key]
            scope = scope.parent
        return self.state.get(name)

    def assign(self, name: str, value: typing.Any) -> None:
        key = name.lower()
        scope: typing.Optional[Scope] = self
        while scope is not None:
            if key in scope.local:
                scope.local[key] = value
                return
            scope = scope.parent
        self.state.set(name, value)


@dataclasses.dataclass(frozen=True)
class Invocation:
    """One command of a PSRP pipeline as the client sent it (MS-PSRP 2.2.2.10 CREATE_PIPELINE): a script
    (PowerShell.AddScript, IsScript=true) or a command name (AddCommand) with its N/V parameters."""

    text: str
    is_script: bool
    arguments: typing.Sequence[typing.Tuple[typing.Optional[str], typing.Any]] = ()


@dataclasses.dataclass
class _BoundCommand:
    cmdlet: cmdlets.Cmdlet
    binder: Binder
    args: typing.Dict[str, typing.Any]
    context: "CommandContext"


@dataclasses.dataclass
class _ScriptStage:
    script: nodes.Script
    arguments: typing.Sequence[typing.Tuple[typing.Optional[str], typing.Any]]


class CommandContext:
    """What a cmdlet may use: the streams, the clock, sleeping, and running a script block."""

    def __init__(self, interpreter: "Interpreter", scope: Scope) -> None:
        self.interpreter = interpreter
        self.scope = scope
        self.streams = interpreter.streams
        self.now = interpreter.now
        self.sleep = interpreter.sleep

    async def run_block(self, block: ScriptBlockValue, item: typing.Any, emit: cmdlets.Emit) -> None:
        # ForEach-Object's block runs in the caller's scope with its own $_.
        await self.interpreter.exec_statements(block.statements, Scope(self.scope.state, self.scope, {"_": item}),
                                               emit)


Emit = cmdlets.Emit


class Interpreter:
    def __init__(
        self,
        state: SessionState,
        streams: Streams,
        *,
        sleep: typing.Callable[[float], typing.Awaitable[None]] = asyncio.sleep,
        now: typing.Callable[[], datetime.datetime] = cmdlets.local_now,
        yield_every: int = 64,
    ) -> None:
        self.state = state
        self.streams = streams
        self.sleep = sleep
        self.now = now
        self._yield_every = yield_every
        self._steps = 0

    # ---- entry points ---------------------------------------------------------------------------------

    async def run_script(self, source: str,
                         arguments: typing.Sequence[typing.Tuple[typing.Optional[str], typing.Any]] = ()) -> None:
        await self.invoke([[Invocation(source, True, arguments)]])

    async def invoke(self, statements: typing.Sequence[typing.Sequence[Invocation]],
                     input_items: typing.Optional[typing.Sequence[typing.Any]] = None) -> None:
        """Run a PSRP pipeline: statements in order, each a chain of commands; client input (if any) feeds
        the first statement. Raises ScriptError for a terminating error."""
        # Parse every script first: a parse error fails the pipeline before anything ran, as in PowerShell.
        prepared = [[self._prepare(inv) for inv in statement] for statement in statements]
        for index, stages in enumerate(prepared):
            if not stages:
                continue
            await self._run_psrp_statement(stages, input_items if index == 0 else None)

    def _prepare(self, invocation: Invocation) -> typing.Union[_ScriptStage, Invocation]:
        if invocation.is_script:
            return _ScriptStage(parse(invocation.text), invocation.arguments)
        return invocation

    async def _run_psrp_statement(self, stages: typing.List[typing.Union[_ScriptStage, Invocation]],
                                  input_items: typing.Optional[typing.Sequence[typing.Any]]) -> None:
        scope = Scope(self.state)
        if any(isinstance(s, _ScriptStage) for s in stages[1:]):
            raise NotSupported("a script after the first command of a pipeline")
        downstream = [self._bind_invocation(typing.cast(Invocation, s), scope) for s in stages[1:]]
        sink = self._chain(downstream, self.streams.output)
        first = stages[0]
        if isinstance(first, _ScriptStage):
            if input_items is not None:
                raise NotSupported("pipeline input to a script ($input)")
            await self._run_script_stage(first, sink)
            return
        command = self._bind_invocation(first, scope)
        if input_items is None:
            await self._run_first(command, sink)
        else:
            receive = self._chain([command], sink)
            for item in input_items:
                await receive(item)

    def _bind_invocation(self, invocation: Invocation, scope: Scope) -> _BoundCommand:
        cmdlet = cmdlets.lookup(invocation.text.strip())
        if cmdlet is None:
            raise CommandNotFound(invocation.text.strip())
        tokens = [Token(name, value, True) if name else Token.positional(value)
                  for name, value in invocation.arguments]
        binder = Binder(cmdlet.name, cmdlet.parameters)
        return _BoundCommand(cmdlet, binder, binder.bind(tokens), CommandContext(self, scope))

    async def _run_script_stage(self, stage: _ScriptStage, emit: Emit) -> None:
        await self.exec_statements(stage.script.statements, self._script_scope(stage), emit)

    def _script_scope(self, stage: _ScriptStage) -> Scope:
        """Bind client parameters to the script's param() names, typed as psrpcore deserialized them.

        Like a PowerShell script without [CmdletBinding()], arguments that match no parameter would land in
        $args (which the grammar has not) rather than fail; parameters nobody passed are $null."""
        names = list(stage.script.parameters)
        local: typing.Dict[str, typing.Any] = {n: None for n in names}
        unbound = list(names)
        positionals = []
        for name, value in stage.arguments:
            if name is None:
                positionals.append(value)
                continue
            match = [n for n in unbound if n.lower() == name.lower()]
            if not match:
                match = [n for n in unbound if n.lower().startswith(name.lower())]
            if len(match) == 1:
                local[match[0]] = value
                unbound.remove(match[0])
        for name, value in zip(unbound, positionals):
            local[name] = value
        return Scope(self.state, None, local)

    # ---- statements and pipelines ---------------------------------------------------------------------

    async def exec_statements(self, statements: typing.Sequence[nodes.Statement], scope: Scope,
                              emit: Emit) -> None:
        for statement in statements:
            await self._checkpoint()
            if isinstance(statement, nodes.Assignment):
                self._assign(statement, scope, self._eval(statement.value, scope))
            elif isinstance(statement, nodes.Throw):
                value = None if statement.value is None else self._eval(statement.value, scope)
                raise RuntimeFailure.thrown(value, to_text(value))
            else:
                try:
                    await self._run_pipeline(statement, scope, emit)
                except (CommandNotFound, ParameterBindingError) as error:
                    # Statement-terminating inside a script, as in PowerShell: the error record is
                    # written, the next statement runs, and the pipeline completes with HadErrors.
                    await self.streams.error(error)

    def _assign(self, statement: nodes.Assignment, scope: Scope, value: typing.Any) -> None:
        name = statement.name.lower()
        if name in ("true", "false"):
            raise VariableNotWritable(name)
        if name == "null":  # `$null = ...` discards, as in PowerShell
            return
        scope.assign(statement.name, value)

    async def _run_pipeline(self, pipeline: nodes.Pipeline, scope: Scope, emit: Emit) -> None:
        # PowerShell resolves and binds every command of a pipeline before the first one runs.
        first, rest = pipeline.elements[0], pipeline.elements[1:]
        downstream = [self._bind_command(typing.cast(nodes.Command, c), scope) for c in rest]
        first_command = self._bind_command(first, scope) if isinstance(first, nodes.Command) else None
        sink = self._chain(downstream, emit)
        if first_command is not None:
            await self._run_first(first_command, sink)
        elif isinstance(first, nodes.Range):
            # Streamed: `1..N | ForEach-Object {...}` sends each item as it is produced.
            start, end = self._range_bounds(first, scope)
            step = 1 if end >= start else -1
            for number in range(start, end + step, step):
                await self._checkpoint()
                await sink(number)
        else:
            for item in enumerate_items(self._eval(typing.cast(nodes.Expression, first), scope)):
                await sink(item)

    def _bind_command(self, command: nodes.Command, scope: Scope) -> _BoundCommand:
        cmdlet = cmdlets.lookup(command.name)
        if cmdlet is None:
            raise CommandNotFound(command.name)
        tokens: typing.List[Token] = []
        for argument in command.arguments:
            if isinstance(argument, nodes.ParameterToken):
                value = self._argument(argument.value, scope) if argument.has_colon_value else None
                tokens.append(Token(argument.name, value, argument.has_colon_value))
            else:
                tokens.append(Token.positional(self._argument(argument.value, scope)))
        binder = Binder(cmdlet.name, cmdlet.parameters)
        return _BoundCommand(cmdlet, binder, binder.bind(tokens), CommandContext(self, scope))

    def _argument(self, value: typing.Any, scope: Scope) -> typing.Any:
        if isinstance(value, nodes.ScriptBlock):
            return ScriptBlockValue(value.statements)
        return self._eval(value, scope)

    async def _run_first(self, command: _BoundCommand, emit: Emit) -> None:
        command.binder.check_mandatory(command.args)
        await command.cmdlet.process(command.context, command.args, emit)

    def _chain(self, commands: typing.Sequence[_BoundCommand], emit: Emit) -> Emit:
        sink = emit
        for command in reversed(commands):
            sink = self._receiver(command, sink)
        return sink

    def _receiver(self, command: _BoundCommand, downstream: Emit) -> Emit:
        async def receive(item: typing.Any) -> None:
            await self._checkpoint()
            try:
                args = command.binder.bind_input(command.args, item)
            except ParameterBindingError as e:
                # Per input object and non-terminating in PowerShell: report it, go on with the next one.
                await self.streams.error(e)
                return
            command.binder.check_mandatory(args)
            await command.cmdlet.process(command.context, args, downstream)

        return receive

    async def _checkpoint(self) -> None:
        """Yield to the event loop now and then, so a tight loop neither starves other sessions nor
        delays a stop signal."""
        self._steps += 1
        if self._steps % self._yield_every == 0:
            await asyncio.sleep(0)

    # ---- values ---------------------------------------------------------------------------------------

    def _eval(self, expression: nodes.Expression, scope: Scope) -> typing.Any:
        if isinstance(expression, nodes.Literal):
            return expression.value
        if isinstance(expression, nodes.Variable):
            return scope.lookup(expression.name)
        if isinstance(expression, nodes.ExpandableString):
            return "".join(part if isinstance(part, str) else to_text(self._variable(part.name, scope))
                           for part in expression.parts)
        if isinstance(expression, nodes.ArrayLiteral):
            return [self._eval(item, scope) for item in expression.items]
        if isinstance(expression, nodes.HashLiteral):
            return {key: self._eval(value, scope) for key, value in expression.entries}
        if isinstance(expression, nodes.Range):
            start, end = self._range_bounds(expression, scope)
            if abs(end - start) + 1 > MAX_RANGE_ITEMS:
                raise RuntimeFailure.peer_limit(
                    f"The peer keeps ranges of at most {MAX_RANGE_ITEMS} items in a value; stream larger ones "
                    "with 1..N | ForEach-Object { ... }.")
            step = 1 if end >= start else -1
            return list(range(start, end + step, step))
        if isinstance(expression, nodes.Multiply):
            return self._multiply(self._eval(expression.left, scope), self._eval(expression.right, scope))
        raise NotSupported(f"the expression {type(expression).__name__}")

    @staticmethod
    def _variable(name: str, scope: Scope) -> typing.Any:
        # $true/$false/$null are constants; the parser folds them in code, strings refer to them by name.
        lowered = name.lower()
        if lowered in CONSTANTS:
            return CONSTANTS[lowered]
        return scope.lookup(name)

    def _range_bounds(self, expression: nodes.Range, scope: Scope) -> typing.Tuple[int, int]:
        return (self._range_operand(self._eval(expression.start, scope)),
                self._range_operand(self._eval(expression.end, scope)))

    @staticmethod
    def _range_operand(value: typing.Any) -> int:
        if value is None:
            return 0
        if isinstance(value, (bool, int)):
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.strip())
            except ValueError:
                pass
        raise NotSupported(f"ranges over {type_name(value)} values (integers only)")

    @staticmethod
    def _multiply(left: typing.Any, right: typing.Any) -> typing.Any:
        if isinstance(right, str):
            try:
                right = int(right.strip())
            except ValueError:
                pass
        if isinstance(right, bool) or not isinstance(right, int):
            raise RuntimeFailure(
                f"Cannot convert value \"{to_text(right)}\" to type \"System.Int32\".",
                error_id="InvalidArgument", category="InvalidArgument", reason="RuntimeException")
        count = max(0, int(right))
        if isinstance(left, str):
            if len(left) * count > MAX_STRING_CHARS:
                raise RuntimeFailure.peer_limit(
                    f"The peer builds strings of at most {MAX_STRING_CHARS} characters.")
            return str(left) * count
        if isinstance(left, int) and not isinstance(left, bool):
            product = int(left) * int(right)
            if abs(product) > MAX_INT64:
                raise NotSupported("integer results beyond Int64")
            return product
        if isinstance(left, list):
            if len(left) * count > MAX_RANGE_ITEMS:
                raise RuntimeFailure.peer_limit(f"The peer builds arrays of at most {MAX_RANGE_ITEMS} items.")
            return list(left) * count
        raise RuntimeFailure(
            f"Method invocation failed because [{type_name(left)}] does not contain a method named 'op_Multiply'.",
            error_id="MethodNotFound", category="InvalidOperation", reason="RuntimeException")
