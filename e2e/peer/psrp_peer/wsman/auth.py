"""Who is calling: HTTP authentication of the WS-Management listener, one state per TCP connection.

- Basic (RFC 7617): checked on every request against the configured users. As on Windows, Basic is only
  offered where the body is protected anyway: over HTTPS, or over HTTP when AllowUnencrypted is set.
- Negotiate/NTLM (MS-WSMV 2.2.9.1.1; RFC 4559 headers): pyspnego's acceptor (`spnego.server`), which checks the
  client's NTLM response against the configured passwords (pyspnego reads them from the file NTLM_USER_FILE
  names). The security context belongs to the TCP connection, as on Windows; it seals and unseals the message
  bodies (encryption.py).

A wrong user or password gets 401 with the WWW-Authenticate challenges, as Windows answers it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import logging
import os
import typing

import spnego
from spnego.exceptions import SpnegoError

log = logging.getLogger(__name__)


class Users:
    """The test hosts' users and passwords (`user:password` lines in a file, `#` comments)."""

    def __init__(self, passwords: typing.Mapping[str, str]) -> None:
        self._by_lower = {user.lower(): (user, password) for user, password in passwords.items()}

    @classmethod
    def from_file(cls, path: str) -> "Users":
        passwords: typing.Dict[str, str] = {}
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                line = line.rstrip("\r\n")
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                user, sep, password = line.partition(":")
                if not sep or not user or ":" in user or "\\" in user:
                    raise ValueError(f"{path}:{number}: expected user:password")
                passwords[user] = password
        return cls(passwords)

    def canonical(self, user: str) -> typing.Optional[str]:
        """The configured spelling of a user name (Windows user names are case-insensitive); a DOMAIN\\ or
        @domain part is dropped: the test hosts have local accounts only."""
        user = user.rsplit("\\", 1)[-1].split("@", 1)[0]
        entry = self._by_lower.get(user.lower())
        return entry[0] if entry else None

    def check(self, user: str, password: str) -> typing.Optional[str]:
        entry = self._by_lower.get(user.rsplit("\\", 1)[-1].lower())
        if entry is None or not hmac.compare_digest(entry[1].encode(), password.encode()):
            return None
        return entry[0]

    def write_ntlm_store(self, path: str) -> None:
        """The Heimdal-format store pyspnego's NTLM acceptor reads (`DOMAIN:USER:PASSWORD`, empty domain)."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for user, password in self._by_lower.values():
                f.write(f":{user}:{password}\n")


@dataclasses.dataclass
class Outcome:
    """user None: refuse with 401 and these headers. Otherwise the request runs as user; sealed says the
    connection has a context that seals bodies."""

    user: typing.Optional[str]
    headers: typing.List[typing.Tuple[str, str]]
    sealed: bool = False
    context: typing.Any = None


class ConnectionAuth:
    def __init__(self, users: Users, basic_allowed: bool) -> None:
        self.users = users
        self.basic_allowed = basic_allowed
        self.context: typing.Any = None
        self.user: typing.Optional[str] = None

    def challenges(self) -> typing.List[typing.Tuple[str, str]]:
        headers = [("WWW-Authenticate", "Negotiate")]
        if self.basic_allowed:
            headers.append(("WWW-Authenticate", 'Basic realm="WSMAN"'))
        return headers

    def check(self, authorization: typing.Optional[str]) -> Outcome:
        if authorization is None:
            if self.context is not None and self.context.complete and self.user:
                return Outcome(self.user, [], sealed=True, context=self.context)
            return Outcome(None, self.challenges())
        scheme, _, token = authorization.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "basic":
            return self._basic(token.strip())
        if scheme in ("negotiate", "ntlm"):
            return self._negotiate(token.strip())
        return Outcome(None, self.challenges())

    def _basic(self, token: str) -> Outcome:
        if not self.basic_allowed:
            return Outcome(None, self.challenges())
        try:
            user, sep, password = base64.b64decode(token, validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return Outcome(None, self.challenges())
        name = self.users.check(user, password) if sep else None
        if name is None:
            log.info("basic authentication failed for %r", user[:64])
            return Outcome(None, self.challenges())
        self.context, self.user = None, None
        return Outcome(name, [])

    def _negotiate(self, token: str) -> Outcome:
        try:
            in_token = base64.b64decode(token, validate=True)
        except binascii.Error:
            return Outcome(None, self.challenges())
        if self.context is None or self.context.complete:
            # A fresh handshake (also a re-authentication on a used connection). pyspnego's Negotiate acceptor
            # takes raw NTLM (what pypsrp and pywinrm send under the "Negotiate" scheme) as well as SPNEGO.
            self.context = spnego.server(protocol="negotiate", service="HTTP")
            self.user = None
        try:
            out_token = self.context.step(in_token)
        except (SpnegoError, ValueError, KeyError, TypeError, IndexError) as e:  # a bad or refused token
            log.info("negotiate authentication failed: %s", str(e)[:200])
            self.context = None
            return Outcome(None, self.challenges())
        encoded = base64.b64encode(out_token).decode() if out_token else ""
        if not self.context.complete:
            return Outcome(None, [("WWW-Authenticate", f"Negotiate {encoded}".strip())])
        name = self.users.canonical(self.context.client_principal or "")
        if name is None:
            self.context = None
            return Outcome(None, self.challenges())
        self.user = name
        headers = [("WWW-Authenticate", f"Negotiate {encoded}")] if encoded else []
        return Outcome(name, headers, sealed=True, context=self.context)
