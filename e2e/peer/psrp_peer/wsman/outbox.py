"""Output a WSMan shell holds for its client: whole PSRP messages per target (the runspace pool, or one command),
handed out by Receive in fragments that fit the client's envelope, with the buffering rules of a disconnected
shell (OutputBufferingMode, MS-WSMV 2.2.5.10; MS-PSRP 3.1.5.3.16):

- Block: when the buffer is full, the pipelines writing to it wait (engine.Frontend.wait_writable) until a
  Receive takes output away. This is also the flow control of a connected shell.
- Drop: when the buffer is full, the oldest output records of the shell's pipelines are discarded, so the
  pipelines run on. State messages (PIPELINE_STATE and the pool's) are never dropped: a client that connects
  later still learns how each pipeline ended.

The engine gives each message as a single fragment (its fragment size is larger than any message); the outbox
re-fragments (MS-PSRP 2.2.4) when a message does not fit one Receive response, keeping its ObjectId.
"""

from __future__ import annotations

import collections
import dataclasses
import struct
import typing
import uuid

from psrpcore.types import PSRPMessageType

from psrp_peer.fragments import FRAGMENT_HEADER

DROPPABLE = frozenset(int(t) for t in (
    PSRPMessageType.PipelineOutput, PSRPMessageType.ErrorRecord, PSRPMessageType.DebugRecord,
    PSRPMessageType.VerboseRecord, PSRPMessageType.WarningRecord, PSRPMessageType.ProgressRecord,
    PSRPMessageType.InformationRecord,
))

Target = typing.Optional[uuid.UUID]  # None: the runspace pool


class OutboxError(ValueError):
    """The engine produced something that is not whole single-fragment messages (a peer bug)."""


@dataclasses.dataclass
class Pending:
    object_id: int
    data: bytes  # the whole PSRP message (40-byte header + body)
    sent: int = 0  # bytes of data already handed out
    next_fragment: int = 0

    @property
    def message_type(self) -> int:
        return struct.unpack_from("<I", self.data, 4)[0]

    @property
    def remaining(self) -> int:
        return len(self.data) - self.sent


def split_payload(payload: bytes) -> typing.List[Pending]:
    """Single start+end fragments from the engine -> messages."""
    messages = []
    offset = 0
    while offset < len(payload):
        if len(payload) - offset < FRAGMENT_HEADER.size:
            raise OutboxError("truncated fragment header")
        object_id, fragment_id, flags, length = FRAGMENT_HEADER.unpack_from(payload, offset)
        offset += FRAGMENT_HEADER.size
        if fragment_id != 0 or flags & 0x3 != 0x3 or length > len(payload) - offset:
            raise OutboxError(f"object {object_id}: not a whole single-fragment message")
        messages.append(Pending(object_id, payload[offset:offset + length]))
        offset += length
    return messages


class Outbox:
    def __init__(self) -> None:
        self._queues: typing.Dict[Target, typing.Deque[Pending]] = collections.defaultdict(collections.deque)
        self.bytes = 0
        self.dropped = 0  # messages discarded under Drop

    def add(self, target: Target, payload: bytes) -> None:
        for message in split_payload(payload):
            self._queues[target].append(message)
            self.bytes += len(message.data)

    def has(self, target: Target) -> bool:
        return bool(self._queues.get(target))

    def pipeline_bytes(self) -> int:
        return self.bytes - sum(m.remaining for m in self._queues.get(None, ()))

    def discard(self, target: Target) -> None:
        """Forget a target's output (a closed command, or pool messages meant for a client that left)."""
        queue = self._queues.pop(target, None)
        if queue:
            self.bytes -= sum(m.remaining for m in queue)

    def restart_partial(self) -> None:
        """A new client numbers nothing we sent before: a message half handed out to the old client cannot be
        completed for the new one, so its rest is dropped (whole messages stay)."""
        for queue in self._queues.values():
            if queue and queue[0].sent:
                self.bytes -= queue[0].remaining
                queue.popleft()

    def drop_oldest(self, limit: int) -> None:
        """Drop mode: discard the oldest droppable pipeline messages until the buffer fits the limit."""
        for target, queue in list(self._queues.items()):
            if target is None:
                continue
            kept: typing.Deque[Pending] = collections.deque()
            while queue:
                message = queue.popleft()
                if self.bytes > limit and not message.sent and message.message_type in DROPPABLE:
                    self.bytes -= len(message.data)
                    self.dropped += 1
                    continue
                kept.append(message)
            self._queues[target] = kept
            if self.bytes <= limit:
                break

    def take_message(self, target: Target, message_type: int) -> typing.Optional[bytes]:
        """The first whole message of this type for the target, as one fragment, out of the queue."""
        queue = self._queues.get(target, collections.deque())
        for message in queue:
            if message.message_type == message_type and not message.sent:
                queue.remove(message)
                self.bytes -= len(message.data)
                return FRAGMENT_HEADER.pack(message.object_id, 0, 0x3, len(message.data)) + message.data
        return None

    def take(self, target: Target, budget: int) -> typing.List[bytes]:
        """Fragments for one Receive response, at most budget bytes of fragments (at least one fragment)."""
        queue = self._queues.get(target)
        fragments: typing.List[bytes] = []
        used = 0
        while queue:
            message = queue[0]
            room = budget - used - FRAGMENT_HEADER.size
            if room <= 0 and fragments:
                break
            room = max(room, 1024)
            chunk = message.data[message.sent:message.sent + room]
            start = message.sent == 0
            end = message.sent + len(chunk) == len(message.data)
            flags = (0x1 if start else 0) | (0x2 if end else 0)
            fragments.append(FRAGMENT_HEADER.pack(message.object_id, message.next_fragment, flags, len(chunk)) + chunk)
            used += FRAGMENT_HEADER.size + len(chunk)
            message.sent += len(chunk)
            message.next_fragment += 1
            self.bytes -= len(chunk)
            if end:
                queue.popleft()
            else:
                break  # the envelope is full
        return fragments
