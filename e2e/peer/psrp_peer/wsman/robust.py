"""Robust Connection Support (MS-WSMV 3.1.4.1.39): responses kept per OperationID so that a client whose TCP
connection broke can fetch them again, instead of losing, say, the output a Receive took from the shell.

What the peer implements of it, for Custom Remote Shell resource URIs (the PowerShell plugin):

- A request with <wsmv:OperationID s:mustUnderstand="false"> starts an operation (its <wsmv:SequenceID> must
  be 1, else wsa:InvalidMessageInformationHeader; an OperationID already in the table is refused the same
  way). Rows whose primary connection is this request's connection are removed first (step 3 of 3.1.4.1.39:
  the client has moved on, so what it got there counts as received). The response carries the same
  wsmv:OperationID and the server's wsmv:SequenceID, starting at 1 (2.2.4.45, 2.2.4.46), and is kept.
- A request with mustUnderstand="true" is a retransmission: when the OperationID is in the table, the kept
  response is sent again without running the operation again (if the operation is still running, e.g. a
  Receive waiting for output, the retransmission waits for it). When it is not in the table, the request runs
  as a new operation.
- Acknowledge (3.1.4.18; action http://schemas.microsoft.com/wbem/wsman/1/wsman/Acknowledge, body
  wsmv:Acknowledge/wsmv:LastSequenceIdReceived, 2.2.4.44) deletes the kept responses up to that sequence
  number. A client that persists output before acknowledging it uses this.
- A connection that breaks leaves its rows in the table (3.1.6.5); they are kept for the retention time after
  their last use (the Response Retention / AutoDisconnect timers, 3.1.5.6), and at most max_rows per user.

Windows streams several response messages of one operation over HTTP chunked encoding (3.1.6.6). Every shell
operation of the PowerShell plugin has exactly one response message, so the peer sends it as a plain body.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
import typing


@dataclasses.dataclass
class Row:
    user: str
    operation_id: str
    connection: int
    done: asyncio.Event = dataclasses.field(default_factory=asyncio.Event)
    response: typing.Optional[typing.Tuple[int, bytes]] = None  # HTTP status, SOAP envelope
    sequence_id: int = 1
    used: float = dataclasses.field(default_factory=time.monotonic)


def normalize(operation_id: str) -> str:
    value = operation_id.strip().lower()
    return value[5:] if value.startswith("uuid:") else value


class OperationTable:
    def __init__(self, retention_seconds: float = 180.0, max_rows_per_user: int = 100) -> None:
        self.retention = retention_seconds
        self.max_rows = max_rows_per_user
        self._rows: "collections.OrderedDict[typing.Tuple[str, str], Row]" = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._rows)

    def get(self, user: str, operation_id: str) -> typing.Optional[Row]:
        self.expire()
        return self._rows.get((user, normalize(operation_id)))

    def start(self, user: str, operation_id: str, connection: int) -> Row:
        self.expire()
        for key, row in list(self._rows.items()):
            if row.connection == connection and row.done.is_set():
                del self._rows[key]
        row = Row(user, normalize(operation_id), connection)
        self._rows[(user, row.operation_id)] = row
        mine = [key for key, r in self._rows.items() if r.user == user]
        for key in mine[:max(0, len(mine) - self.max_rows)]:
            del self._rows[key]
        return row

    def finish(self, row: Row, status: int, envelope: bytes) -> None:
        row.response = (status, envelope)
        row.used = time.monotonic()
        row.done.set()

    def abandon(self, row: Row) -> None:
        """The operation produced no response (the peer could not run it); forget it."""
        self._rows.pop((row.user, row.operation_id), None)
        row.done.set()

    def acknowledge(self, user: str, operation_id: str, last_sequence_id: int) -> bool:
        row = self.get(user, operation_id)
        if row is None:
            return False
        if row.done.is_set() and last_sequence_id >= row.sequence_id:
            del self._rows[(user, row.operation_id)]
        return True

    def expire(self) -> None:
        cutoff = time.monotonic() - self.retention
        for key, row in list(self._rows.items()):
            if row.done.is_set() and row.used < cutoff:
                del self._rows[key]
