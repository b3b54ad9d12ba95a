"""The peer process end to end, driven by a third-party PSRP client: pypsrp 1.0.0b1 (`psrp`), through the
same pwsh-shim sshd runs (psrp.ProcessInfo starts it; it joins stdio to the peer's socket)."""

from __future__ import annotations

import asyncio
import datetime
import threading
import time
import typing

import psrp
import pytest
from psrpcore.types import ErrorCategory, PSInvocationState, RunspacePoolState

from conftest import arun, process_info

TIMEOUT = 30


async def invoke(rp: psrp.AsyncRunspacePool, script: str, *arguments: typing.Any,
                 **parameters: typing.Any) -> typing.Tuple[psrp.AsyncPowerShell, list]:
    ps = psrp.AsyncPowerShell(rp)
    ps.add_script(script)
    for argument in arguments:
        ps.add_argument(argument)
    for name, value in parameters.items():
        ps.add_parameter(name, value)
    output = await asyncio.wait_for(ps.invoke(), TIMEOUT)
    return ps, output


def with_pool(peer, body: typing.Callable[[psrp.AsyncRunspacePool], typing.Awaitable], timeout: float = 60,
              **pool_options: typing.Any) -> typing.Any:
    async def main():
        async with psrp.AsyncRunspacePool(process_info(peer), **pool_options) as rp:
            assert rp.state == RunspacePoolState.Opened
            return await body(rp)

    return arun(main(), timeout)


def test_pool_opens_and_closes(peer):
    async def main():
        rp = psrp.AsyncRunspacePool(process_info(peer))
        await rp.open()
        assert rp.state == RunspacePoolState.Opened
        assert rp.application_private_data["PSVersionTable"]["PSRemotingProtocolVersion"]
        await rp.close()
        assert rp.state == RunspacePoolState.Closed

    arun(main())


def test_every_value_construct(peer):
    script = """param($Name)
$n = 3
42
-7
'single ''quoted'''
"hello $Name, n=$n"
$true; $false; $null
@(1, 'two')
@{ key = 'value'; n = 2 }
'x' * 5
$n
Get-Date
1..3 | ForEach-Object { "item $_" }
"""

    async def body(rp):
        ps, out = await invoke(rp, script, Name="world")
        assert ps.state == PSInvocationState.Completed and not ps.had_errors
        date = out.pop(12)
        assert out == [42, -7, "single 'quoted'", "hello world, n=3", True, False, None, 1, "two",
                       {"key": "value", "n": 2}, "xxxxx", 3, "item 1", "item 2", "item 3"]
        assert isinstance(date, datetime.datetime) and date.tzinfo is not None
        assert abs((datetime.datetime.now(datetime.timezone.utc) - date).total_seconds()) < 60
        assert type(out[0]).__name__ == "PSInt" and type(out[2]).__name__ == "PSString"

    with_pool(peer, body)


def test_every_stream(peer):
    script = """Write-Output 'out'
Write-Error 'an error'
Write-Warning 'a warning'
Write-Verbose 'verbose text'
Write-Debug 'debug text'
Write-Information 'info text' -Tags 'tag1'
Write-Progress -Activity 'Copying' -PercentComplete 40
'after'
"""

    async def body(rp):
        ps, out = await invoke(rp, script)
        assert out == ["out", "after"]
        assert ps.state == PSInvocationState.Completed, "Write-Error is not terminating"
        assert ps.had_errors
        [error] = ps.streams.error
        assert str(error) == "an error"
        assert error.FullyQualifiedErrorId == "Microsoft.PowerShell.Commands.WriteErrorException"
        assert [w.Message for w in ps.streams.warning] == ["a warning"]
        assert [v.Message for v in ps.streams.verbose] == ["verbose text"]
        assert [d.Message for d in ps.streams.debug] == ["debug text"]
        [info] = ps.streams.information
        assert (info.MessageData, list(info.Tags), info.Source) == ("info text", ["tag1"], "Write-Information")
        [progress] = ps.streams.progress
        assert (progress.Activity, progress.PercentComplete, progress.StatusDescription) == ("Copying", 40, "Processing")

    with_pool(peer, body)


def test_session_variables_persist_across_pipelines_not_pools(peer):
    async def main():
        async with psrp.AsyncRunspacePool(process_info(peer)) as first, \
                psrp.AsyncRunspacePool(process_info(peer)) as second:
            await invoke(first, "$counter = 41")
            await invoke(first, "1..1 | ForEach-Object { $counter = 42 }")
            _, out = await invoke(first, "$counter; \"counter=$counter\"")
            assert out == [42, "counter=42"]
            _, out = await invoke(second, "$counter")
            assert out == [None], "a pool must not see another pool's variables"

    arun(main())


def test_parameters_arrive_typed(peer):
    script = "param($Int, $Str, $Bool, $List, $Map, $Missing)\n" \
             "$Int; $Str; $Bool; Write-Output -NoEnumerate $List; $Map; $Missing"

    async def body(rp):
        _, out = await invoke(rp, script, Int=7, Str="text", Bool=True, List=[1, "b"], Map={"k": [1, 2]})
        assert out == [7, "text", True, [1, "b"], {"k": [1, 2]}, None]
        assert [type(v).__name__ for v in out[:3]] == ["PSInt", "PSString", "bool"]
        _, out = await invoke(rp, "param($A, $B) \"$A/$B\"", "first", "second")
        assert out == ["first/second"], "positional arguments bind in order"

    with_pool(peer, body)


def test_throw_fails_the_pipeline_with_an_error_record(peer):
    async def body(rp):
        ps = psrp.AsyncPowerShell(rp)
        ps.add_script("'before'; throw 'boom'; 'never'")
        output = psrp.AsyncPSDataCollection()
        with pytest.raises(psrp.PipelineFailed) as caught:
            await asyncio.wait_for(ps.invoke(output_stream=output), TIMEOUT)
        assert ps.state == PSInvocationState.Failed
        assert list(output) == ["before"]
        record = caught.value.error_record
        assert str(caught.value) == "boom" and str(record) == "boom"
        assert record.FullyQualifiedErrorId == "boom"
        assert record.CategoryInfo.Category == ErrorCategory.OperationStopped
        assert record.CategoryInfo.Reason == "RuntimeException"
        assert "System.Management.Automation.RuntimeException" in record.Exception.PSTypeNames[0]

    with_pool(peer, body)


def check_command_not_found(record) -> None:
    assert str(record).startswith("The term 'Get-Service' is not recognized as a name of a cmdlet, "
                                  "function, script file, or executable program.")
    assert record.FullyQualifiedErrorId == "CommandNotFoundException"
    assert record.CategoryInfo.Category == ErrorCategory.ObjectNotFound
    assert record.CategoryInfo.TargetName == "Get-Service"
    assert record.Exception.PSTypeNames[0].endswith("System.Management.Automation.CommandNotFoundException")


def test_unknown_command_fails_as_command_not_found(peer):
    """AddCommand of an unknown command fails the pipeline; inside an AddScript script the error is
    statement-terminating, as in PowerShell: written to the error stream, and the script runs on."""
    async def body(rp):
        ps = psrp.AsyncPowerShell(rp)
        ps.add_command("Get-Service")
        with pytest.raises(psrp.PipelineFailed) as caught:
            await asyncio.wait_for(ps.invoke(), TIMEOUT)
        check_command_not_found(caught.value.error_record)

        ps = psrp.AsyncPowerShell(rp)
        ps.add_script("Get-Service WinRM\nWrite-Output 'after'")
        output = await asyncio.wait_for(ps.invoke(), TIMEOUT)
        assert output == ["after"]
        assert ps.had_errors
        assert len(ps.streams.error) == 1
        check_command_not_found(ps.streams.error[0])

    with_pool(peer, body)


def test_parse_error_fails_as_parse_exception(peer):
    async def body(rp):
        ps = psrp.AsyncPowerShell(rp)
        ps.add_script("Write-Output 'unterminated")
        with pytest.raises(psrp.PipelineFailed) as caught:
            await asyncio.wait_for(ps.invoke(), TIMEOUT)
        record = caught.value.error_record
        assert record.FullyQualifiedErrorId == "TerminatorExpectedAtEndOfString"
        assert record.CategoryInfo.Category == ErrorCategory.ParserError
        assert "The string is missing the terminator" in str(record)

    with_pool(peer, body)


def test_add_command_statements_and_input(peer):
    async def body(rp):
        ps = psrp.AsyncPowerShell(rp)
        ps.add_command("Write-Output").add_argument("a").add_argument("b")
        ps.add_statement()
        ps.add_command("Start-Sleep").add_parameter("Milliseconds", 10)
        ps.add_statement()
        ps.add_command("Write-Output").add_argument("c").add_command("Write-Warning")
        ps.add_statement()
        ps.add_script("$fromCommand = 'set'")
        assert await asyncio.wait_for(ps.invoke(), TIMEOUT) == ["a", "b"]
        assert [w.Message for w in ps.streams.warning] == ["c"]
        _, out = await invoke(rp, "$fromCommand")
        assert out == ["set"]

        ps = psrp.AsyncPowerShell(rp)
        ps.add_command("Write-Output")
        assert await asyncio.wait_for(ps.invoke([1, "two", 3]), TIMEOUT) == [1, "two", 3]

    with_pool(peer, body)


def test_stop_a_sleeping_pipeline(peer):
    async def body(rp):
        await invoke(rp, "$kept = 'still here'")
        ps = psrp.AsyncPowerShell(rp)
        ps.add_script("'started'; Start-Sleep -Seconds 120; 'never'")
        output = psrp.AsyncPSDataCollection()
        task = await ps.invoke_async(output_stream=output)
        deadline = time.monotonic() + 10
        while not output and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert list(output) == ["started"]
        started = time.monotonic()
        await asyncio.wait_for(ps.stop(), 5)
        with pytest.raises(psrp.PipelineStopped):
            await asyncio.wait_for(task, 5)
        assert time.monotonic() - started < 2
        assert ps.state == PSInvocationState.Stopped
        _, out = await invoke(rp, "$kept")
        assert out == ["still here"], "stopping a pipeline keeps the session"

    with_pool(peer, body)


def test_output_is_streamed_as_produced(peer):
    async def body(rp):
        arrivals: typing.List[float] = []
        output = psrp.AsyncPSDataCollection()

        async def arrived(_value):
            arrivals.append(time.monotonic())

        output.data_added += arrived
        ps = psrp.AsyncPowerShell(rp)
        ps.add_script("1..4 | ForEach-Object { \"item $_\"; Write-Progress -Activity 'loop' -Status \"$_ of 4\"; "
                      "Start-Sleep -Milliseconds 400 }")
        started = time.monotonic()
        await asyncio.wait_for(ps.invoke(output_stream=output), TIMEOUT)
        finished = time.monotonic()
        assert list(output) == ["item 1", "item 2", "item 3", "item 4"]
        assert arrivals[0] - started < 0.5, "the first item must not wait for the loop to end"
        assert finished - arrivals[0] > 1.0
        assert [p.StatusDescription for p in ps.streams.progress] == ["1 of 4", "2 of 4", "3 of 4", "4 of 4"]

    with_pool(peer, body)


def test_sleep_does_not_block_other_sessions(peer):
    async def main():
        async with psrp.AsyncRunspacePool(process_info(peer)) as sleeper, \
                psrp.AsyncRunspacePool(process_info(peer)) as other:
            ps = psrp.AsyncPowerShell(sleeper)
            ps.add_script("Start-Sleep -Seconds 30")
            task = await ps.invoke_async()
            started = time.monotonic()
            for i in range(5):
                _, out = await invoke(other, f"'quick {i}'")
                assert out == [f"quick {i}"]
            assert time.monotonic() - started < 3
            await ps.stop()
            with pytest.raises(psrp.PipelineStopped):
                await task

    arun(main(), 60)


def test_pipelines_of_a_pool_run_up_to_max_runspaces(peer):
    async def run_two(rp) -> float:
        pipelines = []
        for _ in range(2):
            ps = psrp.AsyncPowerShell(rp)
            ps.add_script("Start-Sleep -Milliseconds 800")
            pipelines.append(ps)
        started = time.monotonic()
        tasks = [await ps.invoke_async() for ps in pipelines]
        await asyncio.wait_for(asyncio.gather(*tasks), TIMEOUT)
        return time.monotonic() - started

    assert with_pool(peer, run_two, max_runspaces=2) < 1.5, "two runspaces: side by side"
    assert with_pool(peer, run_two) >= 1.6, "one runspace (the default): the second waits, as PowerShell queues it"


def test_reset_runspace_state(peer):
    async def body(rp):
        await invoke(rp, "$gone = 1")
        assert await asyncio.wait_for(rp.reset_runspace_state(), TIMEOUT) is True
        _, out = await invoke(rp, "$gone")
        assert out == [None]

    with_pool(peer, body)


def test_large_and_many_outputs(peer):
    async def body(rp):
        _, out = await invoke(rp, "'x' * 1000000")
        assert out == ["x" * 1_000_000], "one object spread over many 32 KiB fragments"
        _, out = await invoke(rp, "1..3000 | ForEach-Object { $_ }")
        assert out == list(range(1, 3001))

    with_pool(peer, body)


def test_get_command_metadata_pipeline_fails_cleanly(peer):
    async def body(rp):
        ps = psrp.AsyncCommandMetaPipeline(rp, "Get-*")
        with pytest.raises(psrp.PipelineFailed, match="does not support"):
            await asyncio.wait_for(ps.invoke(), TIMEOUT)
        _, out = await invoke(rp, "'fine'")
        assert out == ["fine"]

    with_pool(peer, body)


def test_sync_client(peer):
    """pypsrp's threaded client too (run in a thread so a hang cannot outlive the time limit)."""
    result: typing.Dict[str, typing.Any] = {}

    def body():
        with psrp.SyncRunspacePool(process_info(peer)) as rp:
            ps = psrp.SyncPowerShell(rp)
            ps.add_script("$s = 'sync'; $s; Write-Warning 'w'")
            result["out"] = ps.invoke()
            result["warnings"] = [w.Message for w in ps.streams.warning]
            ps = psrp.SyncPowerShell(rp)
            ps.add_script("throw 'sync boom'")
            try:
                ps.invoke()
            except psrp.PipelineFailed as e:
                result["failed"] = str(e)
        result["state"] = rp.state

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "sync client hung"
    assert result == {"out": ["sync"], "warnings": ["w"], "failed": "sync boom", "state": RunspacePoolState.Closed}
