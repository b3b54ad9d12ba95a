"""The peer's cmdlets: the whole command vocabulary of the grammar (e2e/peer/README.md).

Each cmdlet declares its parameters like PowerShell's (name, position, pipeline input, mandatory) so that
binding behaves and fails the same way, and implements process(): called once when the cmdlet is first in a
pipeline, or once per input object downstream, as PowerShell's ProcessRecord is.
"""

from __future__ import annotations

import dataclasses
import datetime
import typing

from psrp_peer.script.binding import ParamSpec, ScriptBlockValue
from psrp_peer.script.errors import ParameterBindingError, write_error_record
from psrp_peer.script.values import enumerate_items

if typing.TYPE_CHECKING:
    from psrp_peer.script.interpreter import CommandContext

Emit = typing.Callable[[typing.Any], typing.Awaitable[None]]


@dataclasses.dataclass(frozen=True)
class ProgressRecord:
    activity: str
    status: str
    activity_id: int
    percent_complete: int
    seconds_remaining: int
    current_operation: typing.Optional[str]
    parent_id: int
    completed: bool


class Cmdlet:
    name: str = ""
    parameters: typing.Tuple[ParamSpec, ...] = ()

    async def process(self, ctx: "CommandContext", args: typing.Dict[str, typing.Any], emit: Emit) -> None:
        raise NotImplementedError


class WriteOutput(Cmdlet):
    name = "Write-Output"
    parameters = (
        ParamSpec("InputObject", position=0, from_pipeline=True, remaining=True),
        ParamSpec("NoEnumerate", "switch"),
    )

    async def process(self, ctx, args, emit):
        if "InputObject" not in args:
            return
        value = args["InputObject"]
        if args.get("NoEnumerate"):
            await emit(value)
            return
        for item in enumerate_items(value):
            await emit(item)


class _WriteMessage(Cmdlet):
    """Write-Warning / -Verbose / -Debug: one string message to a stream."""

    parameters = (ParamSpec("Message", "string", position=0, mandatory=True, from_pipeline=True),)
    stream = ""

    async def process(self, ctx, args, emit):
        await getattr(ctx.streams, self.stream)(args["Message"])


class WriteWarning(_WriteMessage):
    name = "Write-Warning"
    stream = "warning"


class WriteVerbose(_WriteMessage):
    # PowerShell only emits this when $VerbosePreference is Continue (or with -Verbose); the peer always
    # emits, so tests can read the stream without preference variables the grammar lacks.
    name = "Write-Verbose"
    stream = "verbose"


class WriteDebug(_WriteMessage):
    name = "Write-Debug"
    stream = "debug"


class WriteError(Cmdlet):
    name = "Write-Error"
    parameters = (ParamSpec("Message", "string", position=0, mandatory=True, from_pipeline=True),)

    async def process(self, ctx, args, emit):
        # Non-terminating: the record goes to the error stream and the pipeline carries on (HadErrors).
        await ctx.streams.error(write_error_record(args["Message"]))


class WriteInformation(Cmdlet):
    name = "Write-Information"
    parameters = (
        ParamSpec("MessageData", position=0, mandatory=True, from_pipeline=True),
        ParamSpec("Tags", "strings", position=1),
    )

    async def process(self, ctx, args, emit):
        await ctx.streams.information(args["MessageData"], args.get("Tags", []))


class WriteProgress(Cmdlet):
    name = "Write-Progress"
    parameters = (
        ParamSpec("Activity", "string", position=0, mandatory=True),
        ParamSpec("Status", "string", position=1),
        ParamSpec("Id", "int", position=2, minimum=0),
        ParamSpec("PercentComplete", "int", minimum=-1, maximum=100),
        ParamSpec("SecondsRemaining", "int"),
        ParamSpec("CurrentOperation", "string"),
        ParamSpec("ParentId", "int"),
        ParamSpec("Completed", "switch"),
    )

    async def process(self, ctx, args, emit):
        await ctx.streams.progress(
            ProgressRecord(
                activity=args["Activity"],
                status=args.get("Status", "Processing"),  # PowerShell's default status text
                activity_id=args.get("Id", 0),
                percent_complete=args.get("PercentComplete", -1),
                seconds_remaining=args.get("SecondsRemaining", -1),
                current_operation=args.get("CurrentOperation"),
                parent_id=args.get("ParentId", -1),
                completed=bool(args.get("Completed")),
            )
        )


class GetDate(Cmdlet):
    name = "Get-Date"

    async def process(self, ctx, args, emit):
        # A local DateTime with its offset, as PowerShell serializes Get-Date.
        await emit(ctx.now())


class StartSleep(Cmdlet):
    name = "Start-Sleep"
    parameters = (
        ParamSpec("Seconds", "int", position=0, minimum=0),
        ParamSpec("Milliseconds", "int", minimum=0),
    )

    async def process(self, ctx, args, emit):
        if "Seconds" in args and "Milliseconds" in args:
            raise ParameterBindingError(
                self.name,
                "AmbiguousParameterSet",
                "Parameter set cannot be resolved using the specified named parameters. One or more parameters "
                "issued cannot be used together or an insufficient number of parameters were provided.",
            )
        if "Seconds" in args:
            seconds = float(args["Seconds"])
        elif "Milliseconds" in args:
            seconds = args["Milliseconds"] / 1000.0
        else:
            raise ParameterBindingError(
                self.name,
                "MissingMandatoryParameter",
                "Cannot process command because of one or more missing mandatory parameters: Seconds.",
            )
        # An await, not time.sleep: other sessions and pipelines keep running, and a stop signal cancels it.
        await ctx.sleep(seconds)


class ForEachObject(Cmdlet):
    name = "ForEach-Object"
    parameters = (
        ParamSpec("Process", "scriptblock", position=0, mandatory=True),
        ParamSpec("InputObject", from_pipeline=True),
    )

    async def process(self, ctx, args, emit):
        block: ScriptBlockValue = args["Process"]
        await ctx.run_block(block, args.get("InputObject"), emit)


CMDLETS: typing.Dict[str, Cmdlet] = {
    c.name.lower(): c
    for c in (
        WriteOutput(), WriteError(), WriteWarning(), WriteVerbose(), WriteDebug(), WriteInformation(),
        WriteProgress(), GetDate(), StartSleep(), ForEachObject(),
    )
}  # fmt: skip


def lookup(name: str) -> typing.Optional[Cmdlet]:
    return CMDLETS.get(name.lower())


def local_now() -> datetime.datetime:
    return datetime.datetime.now().astimezone()
