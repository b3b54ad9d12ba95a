"""The WSMan shell's outbox (psrp_peer/wsman/outbox.py): re-fragmentation to the envelope budget (MS-PSRP 2.2.4)
and Drop mode, which discards the oldest output but never a state message."""

from __future__ import annotations

import struct
import uuid

from psrpcore.types import PSRPMessageType

from psrp_peer.fragments import FRAGMENT_HEADER, Defragmenter
from psrp_peer.wsman.outbox import Outbox


def message(object_id: int, message_type: int, size: int) -> bytes:
    data = struct.pack("<II", 2, message_type) + b"\x00" * 32 + bytes([object_id % 256]) * size
    return FRAGMENT_HEADER.pack(object_id, 0, 0x3, len(data)) + data


def test_large_message_is_refragmented_and_reassembles():
    outbox = Outbox()
    pipeline = uuid.uuid4()
    outbox.add(pipeline, message(7, int(PSRPMessageType.PipelineOutput), 300_000))
    outbox.add(pipeline, message(8, int(PSRPMessageType.PipelineState), 100))
    defragmenter = Defragmenter()
    messages = []
    rounds = 0
    while outbox.has(pipeline):
        fragments = outbox.take(pipeline, 100_000)
        assert sum(len(f) for f in fragments) <= 100_000
        for fragment in fragments:
            messages += defragmenter.feed(fragment)
        rounds += 1
    assert [m.object_id for m in messages] == [7, 8]
    assert len(messages[0].data) == 300_040 and rounds >= 3
    assert outbox.bytes == 0


def test_drop_discards_oldest_output_but_keeps_states():
    outbox = Outbox()
    pipeline = uuid.uuid4()
    for object_id in range(1, 11):
        outbox.add(pipeline, message(object_id, int(PSRPMessageType.PipelineOutput), 1000))
    outbox.add(pipeline, message(11, int(PSRPMessageType.PipelineState), 1000))
    outbox.add(None, message(12, int(PSRPMessageType.RunspacePoolState), 1000))
    outbox.drop_oldest(4000)
    assert outbox.bytes <= 4000 + 1040
    kept = [FRAGMENT_HEADER.unpack_from(f, 0)[0] for f in outbox.take(pipeline, 1 << 20)]
    newest = len(kept) - 1
    assert kept[-1] == 11 and kept[:-1] == list(range(11 - newest, 11))  # the newest outputs, then the state
    assert 1 not in kept and outbox.has(None)
