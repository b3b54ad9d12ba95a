"""Writes the fuzz corpora's seed files: real PSRP traffic between psrpcore's client and server.

psrpcore (PyPI, MIT) is the engine of the project's protocol peer (e2e/peer), so these are the bytes
the client meets in the tests: a runspace pool opened, a pipeline with parameters run, output, every
record stream, a failed pipeline, a host call. Run with the peer's venv python:

    python3 psrp/fuzz/seeds.py psrp/fuzz/corpus

Seeds: corpus/defragment/* (fragment bytes as one Data packet carries them), corpus/outofproc/* (the
out-of-process lines), corpus/clixml/* (each message's CLIXML). Files are named seed-SHA1 (libFuzzer names its finds SHA1):
run.sh's minimization keeps seeds and replaces only the finds, and re-running adds nothing twice.
"""

import base64
import hashlib
import pathlib
import sys
import uuid

import psrpcore
from psrpcore.types import ErrorCategoryInfo, ErrorRecord, NETException, PSRPMessageType

OUT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "corpus")
FRAGMENT_SIZE = 32768


def save(target: str, data: bytes) -> None:
    directory = OUT / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / ("seed-" + hashlib.sha1(data).hexdigest())).write_bytes(data)


def line(payload: psrpcore.PSRPPayload) -> bytes:
    stream = "PromptResponse" if payload.stream_type == psrpcore.StreamType.prompt_response else "Default"
    guid = str(payload.pipeline_id or uuid.UUID(int=0))
    return b"<Data Stream='%s' PSGuid='%s'>%s</Data>\n" % (stream.encode(), guid.encode(),
                                                         base64.b64encode(payload.data))


def pump(sender, receiver, size: int = FRAGMENT_SIZE) -> None:
    """Moves everything `sender` has to `receiver`, saving each payload as seeds."""
    while True:
        payload = sender.data_to_send(size)
        if payload is None:
            return
        save("defragment", payload.data)
        save("outofproc", line(payload))
        guid = str(payload.pipeline_id or uuid.UUID(int=0))
        save("outofproc", b"<DataAck PSGuid='%s' />\n<CommandAck PSGuid='%s' />\n" % (guid.encode(), guid.encode()))
        # The CLIXML of each message, parsed the way the peer parses it.
        offset = 0
        data = payload.data
        while offset + 21 <= len(data):
            length = int.from_bytes(data[offset + 17:offset + 21], "big")
            blob = data[offset + 21:offset + 21 + length]
            if data[offset + 16] & 0x1 and len(blob) > 40:
                xml = blob[40:]
                if xml.startswith(b"\xef\xbb\xbf"):
                    xml = xml[3:]
                if xml:
                    save("clixml", xml)
            offset += 21 + length
        receiver.receive_data(payload)
        while receiver.next_event() is not None:
            pass


def main() -> None:
    client = psrpcore.ClientRunspacePool()
    server = psrpcore.ServerRunspacePool()
    client.open()
    pump(client, server)
    pump(server, client)

    # A pipeline with typed parameters, output of several types and every record stream.
    ps = psrpcore.ClientPowerShell(client)
    ps.add_script("param($Name, $Count, $Flag, $List, $Map) 1..$Count | ForEach-Object { \"$Name $_\" }")
    ps.add_parameters(Name="caf\u00e9 \u2603 \x07", Count=3, Flag=True, List=[1, "two", None], Map={"a": 1, "b": [2]})
    ps.start()
    pipeline = psrpcore.ServerPipeline(server, ps.pipeline_id)  # what the Command packet does
    pump(client, server)
    pipeline.start()
    for value in ["text", 42, 3.5, True, None, b"\x00\x01", uuid.UUID(int=7), ["nested", 1], {"k": "v"}]:
        pipeline.write_output(value)
    pipeline.write_debug("debug message")
    pipeline.write_verbose("verbose message")
    pipeline.write_warning("warning message")
    pipeline.write_information("information message", "source")
    pipeline.write_progress("activity", 1, "status", percent_complete=40)
    pipeline.write_error(NETException("non-terminating"))
    pipeline.complete()
    pump(server, client)

    # A failed pipeline (terminating error), with a large output split over small fragments.
    ps = psrpcore.ClientPowerShell(client)
    ps.add_script("'x' * 20000; throw 'boom'")
    ps.start()
    pipeline = psrpcore.ServerPipeline(server, ps.pipeline_id)
    pump(client, server)
    pipeline.start()
    pipeline.write_output("x" * 20000)
    pump(server, client, 4096)
    pipeline.stop()
    pump(server, client)

    # Control packets of the out-of-process framing.
    guid = str(uuid.UUID(int=0x1234567890ABCDEF))
    lines = b"".join(b"<%s PSGuid='%s' />\r\n" % (tag, guid.encode()) for tag in
                     (b"Command", b"CommandAck", b"Signal", b"SignalAck", b"Close", b"CloseAck", b"DataAck"))
    save("outofproc", lines)


if __name__ == "__main__":
    main()
