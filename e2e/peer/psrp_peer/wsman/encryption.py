"""WinRM message encryption over HTTP: the multipart framing of MS-WSMV 2.2.9.1.1 (NegotiateEncryptedMessage),
as Windows and pypsrp/pywinrm write it, sealed by the connection's NTLM (SPNEGO) context:

    Content-Type: multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary"

    --Encrypted Boundary\r\n
    \tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n
    \tOriginalContent: type=application/soap+xml;charset=UTF-8;Length=<plain length>\r\n
    --Encrypted Boundary\r\n
    \tContent-Type: application/octet-stream\r\n
    <4-byte little-endian signature length><signature><sealed data>--Encrypted Boundary--\r\n

(multipart/x-multi-encrypted carries several such pairs; only CredSSP needs it, but it is accepted.)
"""

from __future__ import annotations

import re
import struct
import typing

PROTOCOL = "application/HTTP-SPNEGO-session-encrypted"
BOUNDARY = "Encrypted Boundary"
ENCRYPTED_TYPES = ("multipart/encrypted", "multipart/x-multi-encrypted")
_BOUNDARY_PARAM = re.compile(r'boundary="([^"]{1,70})"', re.I)
_ORIGINAL = re.compile(rb"OriginalContent:\s*type=([^;\r\n]{1,200}(?:;charset=[^;\r\n]{1,40})?);Length=(\d{1,12})", re.I)


class EncryptionError(ValueError):
    """The body is not a WinRM-encrypted message this connection's context can open."""


def is_encrypted(content_type: typing.Optional[str]) -> bool:
    return (content_type or "").split(";", 1)[0].strip().lower() in ENCRYPTED_TYPES


def decrypt(body: bytes, content_type: str, context: typing.Any) -> typing.Tuple[bytes, str]:
    """-> (plain body, its original content type)."""
    if PROTOCOL.lower() not in content_type.lower():
        raise EncryptionError(f"unsupported encryption protocol in {content_type[:120]!r}")
    match = _BOUNDARY_PARAM.search(content_type)
    if match is None:
        raise EncryptionError("no boundary in the Content-Type")
    marker = b"--" + match.group(1).encode("latin-1")
    end = marker + b"--\r\n"
    if not body.endswith(end):
        raise EncryptionError("missing closing boundary")
    parts = body[:-len(end)].split(marker + b"\r\n")
    if parts[0] != b"" or len(parts) < 3 or len(parts) % 2 != 1:
        raise EncryptionError("malformed multipart body")
    plain: typing.List[bytes] = []
    original_type = ""
    for header_part, data_part in zip(parts[1::2], parts[2::2]):
        original = _ORIGINAL.search(header_part)
        if original is None:
            raise EncryptionError("no OriginalContent header")
        original_type = original.group(1).decode("latin-1")
        expected = int(original.group(2))
        prefix = b"\tContent-Type: application/octet-stream\r\n"
        if not data_part.lower().startswith(prefix.lower()):
            raise EncryptionError("encrypted part without its octet-stream header")
        sealed = data_part[len(prefix):]
        if len(sealed) < 4:
            raise EncryptionError("encrypted part too short")
        signature_length = struct.unpack("<I", sealed[:4])[0]
        if signature_length > len(sealed) - 4 or signature_length > 1024:
            raise EncryptionError("bad signature length")
        try:
            data = context.unwrap_winrm(sealed[4:4 + signature_length], sealed[4 + signature_length:])
        except Exception as e:  # pyspnego raises several types for a bad seal or signature
            raise EncryptionError(f"cannot unseal: {type(e).__name__}: {e}") from None
        if len(data) != expected:
            raise EncryptionError(f"unsealed {len(data)} bytes, OriginalContent says {expected}")
        plain.append(data)
    return b"".join(plain), original_type


def encrypt(body: bytes, content_type: str, context: typing.Any) -> typing.Tuple[bytes, str]:
    """-> (multipart body, its Content-Type header value)."""
    sealed = context.wrap_winrm(body)
    head = "\r\n".join([
        f"--{BOUNDARY}",
        f"\tContent-Type: {PROTOCOL}",
        f"\tOriginalContent: type={content_type};Length={len(body) + sealed.padding_length}",
        f"--{BOUNDARY}",
        "\tContent-Type: application/octet-stream",
        "",
    ]).encode("latin-1")
    data = head + struct.pack("<I", len(sealed.header)) + sealed.header + sealed.data + f"--{BOUNDARY}--\r\n".encode()
    return data, f'multipart/encrypted;protocol="{PROTOCOL}";boundary="{BOUNDARY}"'
