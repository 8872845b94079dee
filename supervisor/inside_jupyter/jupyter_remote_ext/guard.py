"""Connections guarded before TLS: a cap per client address, a handshake timeout, an idle timeout
until a request authenticates, and one summary log line of refusals now and then.

Without it, connections that never start a TLS handshake each hold one of Jupyter's descriptors for
as long as the client likes: a few thousand from one machine exhaust them, every other client then
times out, and each failed accept() logs a traceback (gigabytes an hour).

tornado's HTTPServer has no hook before the handshake, so the guard takes over its accept loop
(``add_sockets``) and its per-connection hooks (``handle_stream``, ``start_request``) on the one
instance Jupyter made, keeping tornado's own bookkeeping (``_sockets``, ``_handlers``) as it is.
Runs on the event loop only: no lock is needed.
"""

from __future__ import annotations

import errno
import logging
import resource
import socket
import time
from collections import Counter
from dataclasses import dataclass, field

from tornado import httputil
from tornado.ioloop import IOLoop, PeriodicCallback
from tornado.iostream import IOStream

from .login import client_key

PER_ADDRESS = 64  # unauthenticated connections at once from one address (or IPv6 /64)
TOTAL_SHARE = 4  # all unauthenticated connections together: at most this share of the fd limit
TOTAL_MAX = 4096
HANDSHAKE_SECONDS = 10.0  # from accept() to a finished TLS handshake
IDLE_SECONDS = 30.0  # an unauthenticated connection with no request begun or finished this long
SWEEP_MS = 1000
SUMMARY_SECONDS = 10.0  # at most one refusals line this often, whatever the flood
ACCEPT_BATCH = 128  # accepts per wakeup, as tornado: other callbacks get their turn
OUT_OF_DESCRIPTORS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
PAUSE_SECONDS = 0.5  # no accept() for this long after running out of descriptors
SETTINGS_KEY = "jupyter_remote_guard"  # where handlers find the guard: the tornado app's settings


@dataclass
class Tracked:
    key: str
    accepted: float
    last_activity: float
    authenticated: bool = False


@dataclass
class Refusals:
    """What was refused or cut since the last summary line."""

    by_address: Counter[str] = field(default_factory=Counter)
    total_cap: int = 0
    handshake_timeouts: int = 0
    idle_timeouts: int = 0
    out_of_descriptors: int = 0

    def level(self) -> int | None:
        """How loud a summary line should be; None: no line (idle closes alone are routine, the
        browser reconnects)."""
        if self.by_address or self.total_cap or self.out_of_descriptors:
            return logging.WARNING
        if self.handshake_timeouts:
            return logging.INFO
        return None

    def line(self, seconds: float) -> str:
        parts = []
        if self.by_address:
            top = ", ".join(f"{key} {count}" for key, count in self.by_address.most_common(3))
            more = ", ..." if len(self.by_address) > 3 else ""
            parts.append(f"{sum(self.by_address.values())} over the per-address limit of "
                         f"{PER_ADDRESS} ({top}{more})")
        if self.total_cap:
            parts.append(f"{self.total_cap} over the limit of unauthenticated connections")
        if self.out_of_descriptors:
            parts.append(f"{self.out_of_descriptors} times out of file descriptors")
        if self.handshake_timeouts:
            parts.append(f"{self.handshake_timeouts} closed without a TLS handshake in "
                         f"{HANDSHAKE_SECONDS:.0f} s")
        if self.idle_timeouts:
            parts.append(f"{self.idle_timeouts} unauthenticated closed after "
                         f"{IDLE_SECONDS:.0f} s idle")
        return f"jupyter-remote: connections in the last {seconds:.0f} s: " + "; ".join(parts)


class ConnectionGuard:
    def __init__(self, http_server, log: logging.Logger, per_address: bool):
        self.server = http_server
        self.log = log
        # Without TLS, Jupyter listens on loopback behind a proxy or a tunnel: every client has the
        # proxy's address, and a cap per address would cap everyone together.
        self.per_address = per_address
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        self.total = min(TOTAL_MAX, max(soft // TOTAL_SHARE, PER_ADDRESS))
        self.streams: dict[IOStream, Tracked] = {}  # every open connection, by its stream
        self.unauthenticated: Counter[str] = Counter()
        self.unauthenticated_total = 0
        self.refusals = Refusals()
        self.summary_at = time.monotonic()
        self._pending: Tracked | None = None  # accepted, its stream not made yet

    def install(self) -> None:
        """Before Jupyter binds its sockets (the extension runs first on the loop)."""
        self.server.add_sockets = self._add_sockets
        self.server.handle_stream = self._handle_stream
        self.server.start_request = self._start_request
        self._tornado_handle_stream = type(self.server).handle_stream.__get__(self.server)
        self._tornado_start_request = type(self.server).start_request.__get__(self.server)
        PeriodicCallback(self.sweep, SWEEP_MS).start()

    # --- accepting ------------------------------------------------------------------------------

    def _add_sockets(self, sockets) -> None:
        for sock in sockets:
            self.server._sockets[sock.fileno()] = sock
            self.server._handlers[sock.fileno()] = self._watch(sock)

    def _watch(self, sock: socket.socket):
        loop = IOLoop.current()
        loop.add_handler(sock, lambda _fd, _events: self._accept(sock), IOLoop.READ)
        return lambda: loop.remove_handler(sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as error:
                if error.errno not in OUT_OF_DESCRIPTORS:
                    raise
                self._pause(sock)
                return
            self._admit(connection, address)

    def _pause(self, sock: socket.socket) -> None:
        # The listening socket stays readable: without a pause, the loop would spin on accept().
        self.refusals.out_of_descriptors += 1
        loop = IOLoop.current()
        loop.remove_handler(sock)
        loop.call_later(PAUSE_SECONDS, lambda: loop.add_handler(
            sock, lambda _fd, _events: self._accept(sock), IOLoop.READ))

    def _admit(self, connection: socket.socket, address) -> None:
        key = client_key(address[0]) if isinstance(address, tuple) else "local"
        if self.per_address and self.unauthenticated[key] >= PER_ADDRESS:
            self.refusals.by_address[key] += 1
            connection.close()
            return
        if self.unauthenticated_total >= self.total:
            self.refusals.total_cap += 1
            connection.close()
            return
        now = time.monotonic()
        self._pending = Tracked(key, now, now)
        self.unauthenticated[key] += 1
        self.unauthenticated_total += 1
        try:
            self.server._handle_connection(connection, address)
        finally:
            if self._pending is not None:  # tornado closed it before making a stream
                self._forget(self._pending)
                self._pending = None

    def _handle_stream(self, stream, address) -> None:
        tracked, self._pending = self._pending, None
        if tracked is not None:
            self.streams[stream] = tracked
            close = stream.close

            def close_and_forget(*args, **kwargs):
                close(*args, **kwargs)
                if self.streams.pop(stream, None) is tracked:
                    self._forget(tracked)

            stream.close = close_and_forget  # every way a stream ends goes through close()
        self._tornado_handle_stream(stream, address)

    def _forget(self, tracked: Tracked) -> None:
        if not tracked.authenticated:
            self.unauthenticated_total -= 1
            self.unauthenticated[tracked.key] -= 1
            if self.unauthenticated[tracked.key] <= 0:
                del self.unauthenticated[tracked.key]

    # --- activity and authentication ------------------------------------------------------------

    def _start_request(self, server_conn, request_conn) -> httputil.HTTPMessageDelegate:
        delegate = self._tornado_start_request(server_conn, request_conn)
        stream = getattr(request_conn, "stream", None)
        tracked = self.streams.get(stream) if stream is not None else None
        if tracked is None or tracked.authenticated:
            return delegate
        return _Activity(delegate, tracked)

    def authenticated(self, stream) -> None:
        """A request on this connection carried a valid login: no timeout, no longer counted."""
        tracked = self.streams.get(stream)
        if tracked is not None and not tracked.authenticated:
            self._forget(tracked)
            tracked.authenticated = True

    # --- timeouts and the summary line ----------------------------------------------------------

    def sweep(self) -> None:
        now = time.monotonic()
        for stream, tracked in list(self.streams.items()):
            if tracked.authenticated:
                continue
            handshaking = getattr(stream, "_ssl_accepting", False)  # SSLIOStream's own flag
            if handshaking and now - tracked.accepted > HANDSHAKE_SECONDS:
                self.refusals.handshake_timeouts += 1
                stream.close()
            elif now - tracked.last_activity > IDLE_SECONDS:
                self.refusals.idle_timeouts += 1
                stream.close()
        if now - self.summary_at >= SUMMARY_SECONDS:
            level = self.refusals.level()
            if level is not None:
                self.log.log(level, "%s", self.refusals.line(now - self.summary_at))
            self.refusals = Refusals()
            self.summary_at = now


class _Activity(httputil.HTTPMessageDelegate):
    """Passes a request through, noting when it began and ended on an unauthenticated connection."""

    def __init__(self, delegate: httputil.HTTPMessageDelegate, tracked: Tracked):
        self.delegate = delegate
        self.tracked = tracked

    def headers_received(self, start_line, headers):
        self.tracked.last_activity = time.monotonic()
        return self.delegate.headers_received(start_line, headers)

    def data_received(self, chunk):
        return self.delegate.data_received(chunk)

    def finish(self):
        self.tracked.last_activity = time.monotonic()
        return self.delegate.finish()

    def on_connection_close(self):
        return self.delegate.on_connection_close()
