"""PSRP message reassembly (MS-PSRP 2.2.4 Packet Fragment, 2.2.1 message header), done by the peer itself
rather than inside psrpcore, for two reasons:

- PowerShell ignores PSRP message types it does not know; psrpcore 0.3.1 raises on them (its enum lookup
  fails). A filter needs whole messages: the type sits in the message header, which a fragment boundary may
  split. So messages are rebuilt here, unknown types dropped, and each known one handed to psrpcore as a
  single start+end fragment.
- A client's bytes must never cost more than one session: every structural check happens here, with limits,
  and fails with FragmentError (the front end drops that session).
"""

from __future__ import annotations

import dataclasses
import struct
import typing

from psrpcore.types import PSRPMessageType

FRAGMENT_HEADER = struct.Struct(">QQBI")  # ObjectId, FragmentId, flags (S=1, E=2), BlobLength
MESSAGE_HEADER_BYTES = 40  # Destination, MessageType, RPID, PID
KNOWN_MESSAGE_TYPES = frozenset(int(t) for t in PSRPMessageType)
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
MAX_OPEN_MESSAGES = 64


class FragmentError(ValueError):
    """The client's fragments break MS-PSRP 2.2.4."""


@dataclasses.dataclass(frozen=True)
class Message:
    object_id: int
    data: bytes  # a whole PSRP message: 40-byte header + UTF-8 CLIXML (or empty) body

    @property
    def message_type(self) -> int:
        return int.from_bytes(self.data[4:8], "little")

    @property
    def known(self) -> bool:
        return self.message_type in KNOWN_MESSAGE_TYPES

    @property
    def type_name(self) -> str:
        t = self.message_type
        return PSRPMessageType(t).name if self.known else f"0x{t:08X}"

    def as_single_fragment(self) -> bytes:
        """The message re-framed as one fragment (FragmentId 0, start and end), the way psrpcore wants it."""
        return FRAGMENT_HEADER.pack(self.object_id, 0, 0x3, len(self.data)) + self.data


class Defragmenter:
    """Per client attachment: a new client (e.g. one connecting to a disconnected pool) restarts ObjectIds."""

    def __init__(self, max_message_bytes: int = MAX_MESSAGE_BYTES) -> None:
        self._max = max_message_bytes
        self._open: typing.Dict[int, typing.List[bytes]] = {}
        self._sizes: typing.Dict[int, int] = {}

    def feed(self, blob: bytes) -> typing.List[Message]:
        """Fragments from one transport packet -> the messages they complete. A fragment must not span
        transport packets (MS-PSRP 2.2.4: "An individual fragment MUST be sent in a single ... packet")."""
        messages: typing.List[Message] = []
        view = memoryview(blob)
        offset = 0
        while offset < len(view):
            if len(view) - offset < FRAGMENT_HEADER.size:
                raise FragmentError(f"truncated fragment header ({len(view) - offset} bytes)")
            object_id, fragment_id, flags, length = FRAGMENT_HEADER.unpack_from(view, offset)
            offset += FRAGMENT_HEADER.size
            if length > len(view) - offset:
                raise FragmentError(f"fragment {object_id}/{fragment_id} claims {length} bytes, "
                                    f"{len(view) - offset} present")
            body = bytes(view[offset:offset + length])
            offset += length
            message = self._add(object_id, fragment_id, bool(flags & 0x1), bool(flags & 0x2), body)
            if message is not None:
                messages.append(message)
        return messages

    def _add(self, object_id: int, fragment_id: int, start: bool, end: bool, body: bytes) -> typing.Optional[Message]:
        if start != (fragment_id == 0):
            raise FragmentError(f"object {object_id}: start flag {start} on fragment {fragment_id}")
        if start:
            if object_id in self._open:
                raise FragmentError(f"object {object_id} started twice")
            if len(self._open) >= MAX_OPEN_MESSAGES:
                raise FragmentError("too many interleaved partial messages")
            self._open[object_id] = []
            self._sizes[object_id] = 0
        elif object_id not in self._open:
            raise FragmentError(f"fragment {fragment_id} of object {object_id} without its start")
        parts = self._open[object_id]
        if fragment_id != len(parts):
            raise FragmentError(f"object {object_id}: fragment {fragment_id} where {len(parts)} was due")
        self._sizes[object_id] += len(body)
        if self._sizes[object_id] > self._max:
            raise FragmentError(f"object {object_id} exceeds {self._max} bytes")
        parts.append(body)
        if not end:
            return None
        data = b"".join(parts)
        del self._open[object_id], self._sizes[object_id]
        if len(data) < MESSAGE_HEADER_BYTES:
            raise FragmentError(f"object {object_id}: {len(data)} bytes is shorter than a message header")
        return Message(object_id, data)
