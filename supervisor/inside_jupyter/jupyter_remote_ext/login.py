"""Logins limited per client address, checked off the event loop, and reported to the daemon.

The daemon writes the login lines fail2ban acts on; this extension only reports each attempt to it,
as one datagram on a unix socket whose sender's pid the daemon checks (supervisor/login_events.py).
Jupyter's own output reaches the log behind a prefix the filter excludes, so nothing Jupyter or a
notebook prints can be taken for a login line.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import inspect
import ipaddress
import json
import math
import os
import socket
import threading
import time
import urllib.parse
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from jupyter_server.auth.identity import PasswordIdentityProvider
from jupyter_server.auth.login import LoginFormHandler
from jupyter_server.auth.security import passwd_check
from traitlets import Int, Unicode

try:  # jupyter_server >= 2.13 refuses unauthenticated handlers that are not marked
    from jupyter_server.auth.decorator import allow_unauthenticated
except ImportError:  # pragma: no cover - older Jupyter Server

    def allow_unauthenticated(method):  # type: ignore[misc]
        return method


WINDOW_SECONDS = 60.0
MAX_TRACKED_ADDRESSES = 10_000  # bounds memory under a flood from many addresses


class RateLimiter:
    """Failed logins per client in a sliding minute; checks in flight count as failures until done.

    Counting checks in flight closes the race where many concurrent POSTs from one address all pass
    the test before the first of them fails. Runs on the event loop only: no lock is needed.
    """

    def __init__(self, per_minute: int):
        self.per_minute = per_minute
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()  # least recently failed first
        self.in_flight: dict[str, int] = {}

    def retry_after(self, client: str, now: float) -> float:
        """Seconds until `client` may try again; 0 when it may try now."""
        if not self.per_minute:
            return 0.0
        recent = self._recent(client, now)
        if len(recent) + self.in_flight.get(client, 0) < self.per_minute:
            return 0.0
        # When checks in flight alone fill the limit, their outcome is unknown: a whole window.
        oldest = recent[0] if recent else now
        return max(oldest + WINDOW_SECONDS - now, 1.0)

    def begin(self, client: str) -> None:
        self.in_flight[client] = self.in_flight.get(client, 0) + 1

    def clean_record(self, client: str, now: float) -> bool:
        """No failure in the window and no other check in flight (after begin())."""
        return not self._recent(client, now) and self.in_flight.get(client, 0) <= 1

    def end(self, client: str, failed: bool, now: float) -> None:
        left = self.in_flight.get(client, 1) - 1
        if left:
            self.in_flight[client] = left
        else:
            self.in_flight.pop(client, None)
        if not failed or not self.per_minute:
            return
        times = self._recent(client, now)
        times.append(now)
        self.failures[client] = times
        self.failures.move_to_end(client)
        # An attacker with more addresses than this gets no limit anyway; memory stays bounded.
        while len(self.failures) > MAX_TRACKED_ADDRESSES:
            self.failures.popitem(last=False)

    def _recent(self, client: str, now: float) -> deque[float]:
        times = self.failures.get(client, deque())
        while times and times[0] <= now - WINDOW_SECONDS:
            times.popleft()
        if not times:
            self.failures.pop(client, None)
        return times


def client_key(address: str) -> str:
    """What the limit counts by: the IPv4 address, or the /64 of an IPv6 one.

    One IPv6 host commonly holds a whole /64, so counting single IPv6 addresses would give it
    2**64 fresh limits. An IPv4 address mapped into IPv6 counts as itself.
    """
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if ip.version == 6:
        if ip.ipv4_mapped:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


class PasswordChecks:
    """Argon2 checks on one worker thread, taking turns between clients instead of arrival order.

    One worker: a check costs ~70 ms of CPU, and a flood must not take the cores that the event loop
    and the kernels need (argon2 releases the GIL, so the loop keeps serving meanwhile).
    Turns: a flood queues behind itself, and a check from anyone else waits for at most one check
    per other waiting client, never for the whole flood (which matters most with the limit off).
    First tries go first: a client with a clean record (someone typing the password once) waits
    only for other first tries, not for the turns of clients that are failing, however many
    addresses a flood comes from.
    Runs on the event loop only, except for the checks themselves.
    """

    def __init__(self, current_hash: Callable[[], str]):
        self.current_hash = current_hash
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="password-check", initializer=_lower_priority
        )
        # First tries, then the rest; in each, one queue per client, in the order of their turns.
        self.tiers: tuple[OrderedDict[str, deque[tuple[asyncio.Future, str]]], ...] = (
            OrderedDict(), OrderedDict())
        self.running = False

    def check(self, client: str, typed: str, first_try: bool) -> asyncio.Future:
        """A future of whether `typed` is the password."""
        answer = asyncio.get_running_loop().create_future()
        self.tiers[0 if first_try else 1].setdefault(client, deque()).append((answer, typed))
        self._start_next()
        return answer

    def _start_next(self) -> None:
        queues = next((tier for tier in self.tiers if tier), None)
        if self.running or queues is None:
            return
        client, queue = next(iter(queues.items()))
        answer, typed = queue.popleft()
        if queue:
            queues.move_to_end(client)  # its next check waits until every other client's turn
        else:
            del queues[client]
        self.running = True
        # The hash is read when the check starts, so a password changed meanwhile applies.
        work = asyncio.get_running_loop().run_in_executor(
            self.executor, passwd_check, self.current_hash(), typed
        )
        work.add_done_callback(lambda done: self._finished(answer, done))

    def _finished(self, answer: asyncio.Future, done: asyncio.Future) -> None:
        self.running = False
        if not answer.cancelled():
            error = done.exception()
            if error is not None:
                answer.set_exception(error)
            else:
                answer.set_result(done.result())
        self._start_next()


def _lower_priority() -> None:
    """Nice this thread (and the threads argon2 starts from it, which inherit it) to 10.

    argon2 computes its lanes on several threads: at normal priority a check takes every core for
    its ~55 ms, and the kernels wait. Linux keeps nice values per thread.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (AttributeError, OSError):  # not Linux: the checks keep normal priority
        pass


def same_server_path(url: str, base_url: str) -> bool:
    """Whether `url` is a path under base_url on this server, which a browser cannot read as
    another host: no "//" or "/\\" start, no backslash, no control character (browsers drop tabs
    and newlines, so "/\t/host" would become "//host"), no scheme."""
    if not url.startswith(base_url) or not url.startswith("/") or url.startswith("//"):
        return False
    if "\\" in url or any(ord(character) < 0x20 or character == "\x7f" for character in url):
        return False
    parsed = urllib.parse.urlsplit(url)
    return not parsed.scheme and not parsed.netloc


class RemoteLoginHandler(LoginFormHandler):
    """The login form: limited per client, argon2 off the event loop, each attempt reported."""

    def _redirect_safe(self, url, default=None):
        # jupyter_server's own check rewrites every ":" of the next URL into "://", so that a Dask
        # dashboard link through the proxy, /proxy/10.0.1.5:8787/status, would land on
        # /proxy/10.0.1.5://8787/status after the login. A path on this server goes as it is.
        if same_server_path(url, self.base_url):
            self.redirect(url)
            return
        super()._redirect_safe(url, default)

    @allow_unauthenticated
    async def post(self):
        provider = self.identity_provider
        assert isinstance(provider, RemoteIdentityProvider)  # the only provider we configure
        address = self.request.remote_ip or ""
        client = client_key(address)
        limiter = provider.limiter
        wait = limiter.retry_after(client, time.monotonic())
        if wait:
            # Refused before the password is even read: a flood costs no argon2 time.
            provider.report_login("refused", address)
            self.set_status(429)
            self.set_header("Retry-After", str(math.ceil(wait)))
            error = f"Too many failed logins. Try again in {math.ceil(wait)} s."
            self._render(message={"error": error})
            return
        # No await between the test above and begin(): concurrent POSTs cannot all slip through.
        limiter.begin(client)
        first_try = limiter.clean_record(client, time.monotonic())
        accepted = False
        try:
            accepted = await provider.password_checks.check(
                client, self.get_argument("password", default=""), first_try
            )
        finally:
            limiter.end(client, failed=not accepted, now=time.monotonic())
        if not accepted:
            provider.report_login("failed", address)
            self.set_status(401)
            self._render(message={"error": "Invalid credentials"})
            return
        provider.report_login("succeeded", address)
        user = self.current_user = provider.generate_anonymous_user(self)
        provider.set_login_cookie(self, user)
        self._redirect_safe(self.get_argument("next", default=self.base_url))


def _note_authenticated(handler, user) -> None:
    """Tell the connection guard that this connection carries a valid login (no more timeouts)."""
    # guard.SETTINGS_KEY, spelt out: guard.py imports this module.
    guard = handler.settings.get("jupyter_remote_guard")
    if user is not None and guard is not None:
        guard.authenticated(getattr(handler.request.connection, "stream", None))


class RemoteIdentityProvider(PasswordIdentityProvider):
    """Jupyter's password login, plus live changes and login protection."""

    live_file = Unicode("", config=True, help="JSON file of values the daemon changes live.")
    rate_limit_per_minute = Int(10, config=True,
                                help="Failed logins per address a minute; 0 = off.")
    events_socket = Unicode("", config=True, help="Unix datagram socket where login attempts are "
                            "reported to jupyter-remote, which logs them.")

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.limiter = RateLimiter(self.rate_limit_per_minute)
        self.password_checks = PasswordChecks(lambda: self.hashed_password)
        # Close-on-exec: kernels and terminals never hold it (they could not forge our pid anyway).
        self.events = socket.socket(
            socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)

    def report_login(self, outcome: str, address: str) -> None:
        """One datagram to the daemon, which logs the line fail2ban reads; never blocks."""
        level = "info" if outcome == "succeeded" else "warning"
        # Worded unlike the daemon's line, and relayed behind a prefix: for people, not fail2ban.
        getattr(self.log, level)(
            "jupyter-remote: login attempt from %s: %s (reported to the daemon)", address, outcome)
        if not self.events_socket:
            return
        message = json.dumps({"event": "login", "outcome": outcome, "address": address}).encode()
        try:
            self.events.sendto(message, self.events_socket)
        except OSError as error:  # the daemon's queue is full or it is restarting: drop the event
            self.log.warning("jupyter-remote: login event not reported: %s", error.strerror)

    @property
    def login_handler_class(self):  # type: ignore[override]  # a trait upstream; ours is fixed
        return RemoteLoginHandler

    def get_user(self, handler):
        user = super().get_user(handler)
        if inspect.isawaitable(user):
            return self._note_login(handler, user)
        _note_authenticated(handler, user)
        return user

    async def _note_login(self, handler, pending):
        user = await pending
        _note_authenticated(handler, user)
        return user

    def apply_live(self, serverapp, values):
        self.limiter.per_minute = int(values.get("rate_limit_per_minute", self.limiter.per_minute))
        hashed = values.get("hashed_password")
        if hashed and hashed != self.hashed_password:
            self.hashed_password = hashed
            # Jupyter mixes the hash into the cookie secret: a new one ends the old sessions.
            serverapp.web_app.settings["cookie_secret"] = self._cookie_secret(serverapp)
            self.log.info("jupyter-remote: new password applied; earlier sessions are logged out")

    def _cookie_secret(self, serverapp) -> bytes:
        # The same derivation as ServerApp's default cookie_secret, with the new hash.
        with open(serverapp.cookie_secret_file, "rb") as stream:
            key = stream.read()
        digest = hmac.new(key, digestmod=hashlib.sha256)
        digest.update(serverapp.password.encode())
        return self.cookie_secret_hook(digest).digest()
