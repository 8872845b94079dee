"""Answering an ACME CA's challenges from inside Jupyter, so no other web server is needed.

The daemon publishes the answers in a folder (supervisor/tls/acme.py); this serves them:
- TLS-ALPN-01 (RFC 8737) on Jupyter's own HTTPS port: a handshake that offers ALPN
  "acme-tls/1" for a server name with a challenge file gets the challenge certificate instead of
  the live one; every other handshake, a browser's for the same name included, the live one.
- HTTP-01 on acme_http_port: a listener serving only /.well-known/acme-challenge/<token> and
  redirecting everything else to HTTPS. The daemon (root) binds the socket, so port 80 needs no
  privilege here, and passes it down as an inherited file descriptor.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import ssl
import struct
import weakref

from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler
from traitlets import Int, Unicode
from traitlets.config import Configurable

ACME_TLS_1 = "acme-tls/1"
ALPN_EXTENSION = 16
HANDSHAKE, CLIENT_HELLO = 22, 1  # TLS record content type and handshake message type
TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,256}$")  # base64url (RFC 8555 section 8.3)


class AcmeChallenges(Configurable):
    """Where the daemon puts challenge answers, and the socket to serve HTTP-01 on."""

    folder = Unicode("", config=True, help="Folder of challenge answers; empty = acme mode is off.")
    http_fd = Int(-1, config=True, help="Inherited listening socket for HTTP-01; -1 = none.")


def identifier_of(server_name: str) -> str:
    """The ACME identifier a TLS-ALPN-01 handshake is for: an IP address arrives as its
    reverse-DNS name (RFC 8738 section 6), e.g. 7.113.0.203.in-addr.arpa."""
    name = server_name.lower().rstrip(".")
    if name.endswith(".in-addr.arpa"):
        parts = name[: -len(".in-addr.arpa")].split(".")
        try:
            return str(ipaddress.IPv4Address(".".join(reversed(parts))))
        except ValueError:
            return name
    if name.endswith(".ip6.arpa"):
        nibbles = "".join(reversed(name[: -len(".ip6.arpa")].split(".")))
        try:
            return str(ipaddress.IPv6Address(int(nibbles, 16))) if len(nibbles) == 32 else name
        except ValueError:
            return name
    return name


class AcmeAnswers:
    def __init__(self, serverapp, folder: str):
        self.serverapp = serverapp
        self.log = serverapp.log
        self.folder = folder
        self.contexts: dict[str, tuple[int, ssl.SSLContext]] = {}
        # Connections whose ClientHello offered acme-tls/1; None: the offers cannot be seen.
        self.offers: weakref.WeakKeyDictionary | None = None

    # --- TLS-ALPN-01 -------------------------------------------------------------------------

    def install(self, context: ssl.SSLContext) -> None:
        """Hook the live context: called for each new context the watcher builds."""
        context.sni_callback = self._on_server_name
        # Python shows a server no client's ALPN offer before the certificate is chosen, except
        # through CPython's TLS message hook: with it, only a client that offers acme-tls/1 (the
        # CA) gets the challenge certificate, never a browser that opens the name meanwhile.
        if hasattr(context, "_msg_callback"):
            context._msg_callback = self._on_message
            self.offers = weakref.WeakKeyDictionary()

    def _on_message(self, connection, direction, _version, content_type, message_type, data):
        if direction == "read" and content_type == HANDSHAKE and message_type == CLIENT_HELLO:
            assert self.offers is not None  # this callback is set together with them
            try:
                if ACME_TLS_1.encode() in offered_protocols(data):
                    self.offers[connection] = True
            except Exception:  # noqa: BLE001 - a malformed hello offers nothing
                pass

    def _on_server_name(self, connection, server_name, _context):
        # Runs inside the handshake: any exception would fail it, so none escapes.
        if not server_name:
            return None
        if self.offers is not None and not self.offers.pop(connection, False):
            return None
        try:
            challenge = self._challenge_context(identifier_of(server_name))
        except Exception as error:  # noqa: BLE001
            self.log.warning(
                "jupyter-remote: ACME challenge for %s unusable: %s", server_name, error
            )
            return None
        if challenge is not None:
            connection.context = challenge
            self.log.info(
                "jupyter-remote: answering the ACME tls-alpn-01 challenge for %s", server_name
            )
        return None

    def _challenge_context(self, identifier: str) -> ssl.SSLContext | None:
        if "/" in identifier or identifier.startswith("."):
            return None
        path = os.path.join(self.folder, "tls-alpn-01", f"{identifier}.pem")
        try:
            stamp = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            self.contexts.pop(identifier, None)
            return None
        cached = self.contexts.get(identifier)
        if cached and cached[0] == stamp:
            return cached[1]
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(path)
        # Only acme-tls/1: a client that does not offer it negotiates no protocol (RFC 8737 3).
        context.set_alpn_protocols([ACME_TLS_1])
        self.contexts[identifier] = (stamp, context)
        return context

    # --- HTTP-01 -----------------------------------------------------------------------------

    def start_http(self, fd: int) -> None:
        listener = socket.socket(fileno=fd)
        listener.setblocking(False)
        application = Application(
            [
                (r"/\.well-known/acme-challenge/([^/]+)", ChallengeHandler, {"answers": self}),
                (r".*", RedirectToHttps, {"port": self.serverapp.port}),
            ],
            log_function=lambda handler: None,  # the challenge handler logs what matters
        )
        server = HTTPServer(application, no_keep_alive=True)
        server.add_socket(listener)
        self.log.info(
            "jupyter-remote: answering ACME http-01 challenges on %s",
            _address(listener.getsockname()),
        )

    def http_answer(self, token: str) -> bytes | None:
        if not TOKEN.match(token):
            return None
        try:
            with open(os.path.join(self.folder, "http-01", token), "rb") as stream:
                return stream.read()
        except OSError:
            return None


class ChallengeHandler(RequestHandler):
    def initialize(self, answers: AcmeAnswers):
        self.answers = answers

    def get(self, token):
        answer = self.answers.http_answer(token)
        if answer is None:
            self.send_error(404)
            return
        self.answers.log.info(
            "jupyter-remote: answering the ACME http-01 challenge from %s", self.request.remote_ip
        )
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(answer)


class RedirectToHttps(RequestHandler):
    """Anyone typing http://name gets the HTTPS server, with the same path."""

    def initialize(self, port: int):
        self.port = port

    def prepare(self):
        host = self.request.host_name
        if ":" in host:
            host = f"[{host}]"
        port = "" if self.port == 443 else f":{self.port}"
        self.redirect(f"https://{host}{port}{self.request.uri}", permanent=True)


def offered_protocols(client_hello: bytes) -> list[bytes]:
    """The ALPN protocols a TLS ClientHello handshake message (with its 4-byte header) offers."""
    at = 4 + 2 + 32  # header, client version, random
    at += 1 + client_hello[at]  # session id
    at += 2 + struct.unpack_from("!H", client_hello, at)[0]  # cipher suites
    at += 1 + client_hello[at]  # compression methods
    end = at + 2 + struct.unpack_from("!H", client_hello, at)[0]
    at += 2
    while at + 4 <= end:
        kind, length = struct.unpack_from("!HH", client_hello, at)
        at += 4
        if kind == ALPN_EXTENSION:
            names = []
            position = at + 2
            stop = position + struct.unpack_from("!H", client_hello, at)[0]
            while position < stop:
                size = client_hello[position]
                names.append(bytes(client_hello[position + 1 : position + 1 + size]))
                position += 1 + size
            return names
        at += length
    return []


def _address(sockname) -> str:
    host, port = sockname[0], sockname[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
