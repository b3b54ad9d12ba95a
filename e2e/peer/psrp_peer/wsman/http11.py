"""A small HTTP/1.1 server side for the WS-Management listener: requests with a Content-Length body, keep-alive,
hard limits. WinRM clients (Windows, pypsrp, pywinrm) send nothing fancier: every request is a POST to /wsman with
a Content-Length, and NTLM ties its security context to the TCP connection, so connections are reused.

Anything outside that (chunked request bodies, oversized headers or bodies, garbage) is answered with an HTTP
error and the connection is closed; nothing here raises past the connection that sent it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import typing

MAX_HEADER_BYTES = 64 * 1024
MAX_HEADERS = 100
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 405: "Method Not Allowed",
           411: "Length Required", 413: "Payload Too Large", 415: "Unsupported Media Type",
           431: "Request Header Fields Too Large", 500: "Internal Server Error", 501: "Not Implemented",
           505: "HTTP Version Not Supported"}
TOKEN_CHARS = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class HttpError(Exception):
    """The request cannot be served; answer with this status and close the connection."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class Request:
    method: str
    target: str
    version: str
    headers: typing.List[typing.Tuple[str, str]]  # names lower-cased, in arrival order
    body: bytes = b""

    def header(self, name: str) -> typing.Optional[str]:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("connection") or "").lower()
        if self.version == "HTTP/1.0":
            return "keep-alive" in connection
        return "close" not in connection


async def read_request(reader: asyncio.StreamReader, max_body_bytes: int) -> typing.Optional[Request]:
    """The next request on the connection, or None when the client closed it between requests. The reader must
    have been created with limit=MAX_HEADER_BYTES so an endless header block cannot grow memory."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as e:
        if not e.partial.strip():
            return None
        raise HttpError(400, "connection closed inside the request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, f"request head longer than {MAX_HEADER_BYTES} bytes") from None
    request = parse_head(head)
    if request.header("transfer-encoding") is not None:
        raise HttpError(501, "Transfer-Encoding in requests is not supported; send Content-Length")
    length = content_length(request)
    if length > max_body_bytes:
        raise HttpError(413, f"body of {length} bytes exceeds {max_body_bytes}")
    try:
        request.body = await reader.readexactly(length) if length else b""
    except asyncio.IncompleteReadError:
        raise HttpError(400, "connection closed inside the request body") from None
    return request


def parse_head(head: bytes) -> Request:
    try:
        text = head.decode("latin-1")
    except UnicodeDecodeError:  # latin-1 decodes every byte; kept for clarity of intent
        raise HttpError(400, "undecodable request head") from None
    lines = text[:-4].split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0] or not parts[1]:
        raise HttpError(400, f"malformed request line {lines[0][:80]!r}")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"unsupported version {version[:20]!r}")
    if not set(method) <= TOKEN_CHARS:
        raise HttpError(400, "malformed method")
    headers: typing.List[typing.Tuple[str, str]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or not set(name) <= TOKEN_CHARS:
            raise HttpError(400, f"malformed header line {line[:80]!r}")
        headers.append((name.lower(), value.strip(" \t")))
        if len(headers) > MAX_HEADERS:
            raise HttpError(431, f"more than {MAX_HEADERS} header fields")
    return Request(method, target, version, headers)


def content_length(request: Request) -> int:
    values = [v for k, v in request.headers if k == "content-length"]
    if not values:
        return 0
    if len(set(values)) != 1 or not values[0].isdigit() or len(values[0]) > 12:
        raise HttpError(400, "bad Content-Length")
    return int(values[0])


def response(status: int, headers: typing.Sequence[typing.Tuple[str, str]] = (), body: bytes = b"",
             keep_alive: bool = True) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", "Server: Microsoft-HTTPAPI/2.0"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
