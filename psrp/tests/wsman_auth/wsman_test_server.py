"""A WS-Management HTTP endpoint for psrp's transport tests, built on third-party code.

NTLM is pyspnego's acceptor (`spnego.server(protocol="ntlm")`, credentials from the file named by
NTLM_USER_FILE, lines `DOMAIN:USER:PASSWORD`), and the multipart/encrypted framing is pypsrp's
`WinRMEncryption`: both directions of sealing are checked by code that is not the client's.
Over HTTPS with --cbt the acceptor demands the TLS channel binding (tls-server-end-point, hashed by
pypsrp's own helper). Basic and Certificate (TLS client auth + the mutual secprofile header) are
checked here; TLS is Python's ssl module.

It echoes what it decrypts, so the test can compare. The plaintext may ask for behaviour:
  SLEEP=<ms>   answer after that long (a long-poll)
  FAULT        answer 500 with a SOAP fault (encrypted when the session is)
  BIG=<n>      answer 200 with n bytes

Prints `PORT <n>` on stdout once it listens on 127.0.0.1; serves until killed.
"""

import argparse
import base64
import hashlib
import itertools
import re
import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import spnego
from pypsrp.encryption import WinRMEncryption

MUTUAL = "http://schemas.dmtf.org/wbem/wsman/1/wsman/secprofile/https/mutual"
SOAP = "application/soap+xml;charset=UTF-8"
FAULT = (
    b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault>'
    b"<s:Code><s:Value>s:Receiver</s:Value></s:Code><s:Reason><s:Text>test fault</s:Text></s:Reason>"
    b"</s:Fault></s:Body></s:Envelope>"
)

ARGS = None
# The channel binding the NTLM acceptor demands (HTTPS with --cbt), as pyspnego's GssChannelBindings.
CBT = None
CONN_IDS = itertools.count(1)
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        with LOCK:
            self.conn_id = next(CONN_IDS)
        self.ctx = None
        self.requests = 0
        self.sealed = 0

    def log_message(self, fmt, *args):
        if ARGS.verbose:
            sys.stderr.write("[conn %d] %s\n" % (self.conn_id, fmt % args))

    def reply(self, status, body=b"", content_type=None, headers=None):
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def challenge(self):
        headers = {"WWW-Authenticate": ", ".join(ARGS.offer)} if ARGS.offer else {}
        self.reply(401, b"", None, headers)

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length) if length else b""
        self.requests += 1
        if self.path != "/wsman":
            return self.reply(404, b"no such endpoint", "text/plain")
        auth = self.headers.get("Authorization", "")
        if ARGS.auth == "basic":
            expected = "Basic " + base64.b64encode(("%s:%s" % (ARGS.user, ARGS.password)).encode()).decode()
            if auth != expected:
                return self.challenge()
            return self.answer(body, None)
        if ARGS.auth == "cert":
            if auth != MUTUAL or not self.connection.getpeercert():
                return self.reply(401)
            return self.answer(body, None)
        return self.ntlm(auth, body)

    def ntlm(self, auth, body):
        scheme, _, token = auth.partition(" ")
        if scheme.lower() in ("negotiate", "ntlm") and token:
            if self.ctx is None or self.ctx.complete:
                self.ctx = spnego.server(protocol="ntlm", channel_bindings=CBT)
            try:
                out = self.ctx.step(base64.b64decode(token))
            except Exception as error:  # wrong password, bad token: pyspnego says why
                if ARGS.verbose:
                    sys.stderr.write("[conn %d] NTLM failed: %s\n" % (self.conn_id, error))
                self.ctx = None
                return self.challenge()
            if not self.ctx.complete:
                return self.reply(401, b"", None, {"WWW-Authenticate": "Negotiate " + base64.b64encode(out).decode()})
            if body:
                return self.reply(400, b"a body on the authenticating request", "text/plain")
            return self.reply(200)
        if self.ctx is None or not self.ctx.complete:
            return self.challenge()
        content_type = self.headers.get("Content-Type", "")
        match = re.search(r'boundary="([^"]*)"', content_type)
        if ARGS.tls_cert and not content_type.startswith("multipart/encrypted"):
            # Over HTTPS, TLS protects the session: no message encryption.
            return self.answer(body, None)
        if not content_type.startswith("multipart/encrypted") or not match:
            # Windows with AllowUnencrypted=false refuses clear text on an NTLM session.
            return self.reply(400, b"unencrypted request refused", "text/plain")
        if 'protocol="application/HTTP-SPNEGO-session-encrypted"' not in content_type:
            return self.reply(400, b"wrong encryption protocol", "text/plain")
        self.sealed += 1
        if ARGS.expire_after and self.sealed > ARGS.expire_after:
            # The connection's authentication is no longer accepted, as when a server drops it.
            self.ctx = None
            self.sealed = 0
            return self.challenge()
        encryption = WinRMEncryption(self.ctx, WinRMEncryption.SPNEGO)
        plaintext = encryption.unwrap_message(body, match.group(1))
        return self.answer(plaintext, encryption)

    def answer(self, plaintext, encryption):
        status, body = self.process(plaintext)
        if encryption is None:
            return self.reply(status, body, SOAP)
        kind, wrapped = encryption.wrap_message(body)
        content_type = '%s;protocol="%s";boundary="Encrypted Boundary"' % (kind, WinRMEncryption.SPNEGO)
        return self.reply(status, wrapped, content_type)

    def process(self, plaintext):
        sleep = re.search(rb"SLEEP=(\d+)", plaintext)
        if sleep:
            time.sleep(int(sleep.group(1)) / 1000)
        if b"FAULT" in plaintext:
            return 500, FAULT
        big = re.search(rb"BIG=(\d+)", plaintext)
        if big:
            return 200, b"x" * int(big.group(1))
        digest = hashlib.sha256(plaintext).hexdigest()
        head = '<echo conn="%d" request="%d" sha256="%s">' % (self.conn_id, self.requests, digest)
        return 200, head.encode() + plaintext + b"</echo>"


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client closing a kept-alive connection (a reset) is not news; anything else goes to
        # stderr with --verbose.
        if ARGS.verbose:
            super().handle_error(request, client_address)


def main():
    global ARGS
    parser = argparse.ArgumentParser()
    parser.add_argument("--auth", choices=["ntlm", "basic", "cert"], required=True)
    parser.add_argument("--user", default="")
    parser.add_argument("--password", default="")
    parser.add_argument("--offer", action="append", default=None, help="a WWW-Authenticate challenge to send")
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca", help="require a client certificate issued by this CA")
    parser.add_argument(
        "--cbt",
        choices=["right", "wrong"],
        help="NTLM over HTTPS: demand the tls-server-end-point binding of --tls-cert (or of another certificate)",
    )
    parser.add_argument(
        "--expire-after", type=int, default=0, help="answer 401 to the sealed request after this many on a connection"
    )
    parser.add_argument("--verbose", action="store_true")
    ARGS = parser.parse_args()
    if ARGS.offer is None:
        ARGS.offer = {"ntlm": ["Negotiate"], "basic": ['Basic realm="WSMAN"'], "cert": []}[ARGS.auth]

    if ARGS.cbt:
        global CBT
        from pypsrp.negotiate import HTTPNegotiateAuth
        from spnego.channel_bindings import GssChannelBindings

        with open(ARGS.tls_cert) as fd:
            der = ssl.PEM_cert_to_DER_cert(fd.read())
        digest = HTTPNegotiateAuth._get_certificate_hash(der)
        if ARGS.cbt == "wrong":
            digest = bytes(b ^ 0xFF for b in digest)
        CBT = GssChannelBindings(application_data=b"tls-server-end-point:" + digest)

    server = Server(("127.0.0.1", 0), Handler)
    if ARGS.tls_cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(ARGS.tls_cert, ARGS.tls_key)
        if ARGS.client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(ARGS.client_ca)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
