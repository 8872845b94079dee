"""Whether Jupyter serves: the probe (`GET <base_url>api` on a local address it listens on, on a
worker thread) and the verdict on its answers, as pure functions of their inputs.

Over TLS the probe reports the SHA-256 of the certificate served, for the daemon to pin to the live
one: a certbot certificate has no 127.0.0.1 name, and a self-signed one needs no CA bundle this way.
"""

from __future__ import annotations

import enum
import http.client
import ssl
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from supervisor.tls import sha256_fingerprint

# A new certificate reaches Jupyter within about a second (the extension looks every second); until
# then it rightly serves the one before. Past this, serving an old one is a fault.
CERTIFICATE_SWAP_GRACE = 30.0
CPU_BUSY_SECONDS = 0.05  # Jupyter's CPU time between two probes that tells busy from hung


@dataclass(frozen=True)
class Target:
    host: str
    port: int
    path: str
    tls: bool


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no HTTP answer at all
    detail: str
    fingerprint: str | None = None  # of the certificate served, over TLS


def local_address(ip: str) -> str:
    """Where to reach a server bound to `ip` from this machine: the loopback of its family."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(ip, ip)


def _pinning_context() -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # verified below, by the certificate's exact fingerprint
    return context


_CONTEXT = _pinning_context()


def probe(target: Target, timeout: float) -> Answer:
    if target.tls:
        connection: http.client.HTTPConnection = http.client.HTTPSConnection(
            target.host, target.port, timeout=timeout, context=_CONTEXT)
    else:
        connection = http.client.HTTPConnection(target.host, target.port, timeout=timeout)
    try:
        connection.connect()
        served = None
        if isinstance(connection.sock, ssl.SSLSocket):
            served = sha256_fingerprint(connection.sock.getpeercert(binary_form=True) or b"")
        connection.request("GET", target.path)
        response = connection.getresponse()
        response.read(65536)
        return Answer(response.status, f"HTTP {response.status}", served)
    except (OSError, http.client.HTTPException) as error:
        return Answer(None, str(error) or type(error).__name__)
    finally:
        connection.close()


class ProbeRunner:
    """One probe at a time on a worker thread, so the daemon's loop never waits on the network."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="health-probe")
        self._wake = wake
        self._future: Future[Answer] | None = None

    @property
    def busy(self) -> bool:
        return self._future is not None

    def start(self, target: Target, timeout: float) -> None:
        self._future = self._pool.submit(probe, target, timeout)
        self._future.add_done_callback(lambda _: self._wake())

    def take(self) -> Answer | None:
        """The finished probe's answer, once; None while it runs or when none was started."""
        if self._future is None or not self._future.done():
            return None
        future, self._future = self._future, None
        return future.result()

    def forget(self) -> None:
        """Drop a probe of a Jupyter that is gone; its answer would describe the wrong process."""
        self._future = None


def probe_timeout(health_interval: float) -> float:
    return min(max(health_interval, 2.0), 10.0)


def serves(answer: Answer, live_sha256: str | None, *, running: bool, since_swap: float) -> bool:
    """/api answers, over TLS with exactly the live certificate; once running, also with the one
    before for CERTIFICATE_SWAP_GRACE seconds after the live one changed (`since_swap`)."""
    if answer.status != 200:
        return False
    if answer.fingerprint is None or not live_sha256 or answer.fingerprint == live_sha256:
        return True
    return running and since_swap < CERTIFICATE_SWAP_GRACE


def describe(answer: Answer) -> str:
    if answer.status == 200 and answer.fingerprint:
        return f"serves certificate {answer.fingerprint[:16]}, not the live one"
    return answer.detail


class Verdict(enum.Enum):
    HEALTHY = "healthy"
    BUSY = "busy"  # no answer, but working: a login flood or a heavy request, not a hang
    FAILING = "failing"
    HUNG = "hung"


@dataclass
class HealthTracker:
    """Tells a busy server from a hung one, so that a flood of requests never costs the kernels."""

    failures_to_hang: int = 3
    busy_probes_to_hang: int = 30  # an event loop spinning this long is as good as hung
    failures: int = 0
    busy: int = 0

    def record(self, answered: bool, *, cpu_advanced: bool, stopped: bool) -> Verdict:
        if answered:
            self.failures = self.busy = 0
            return Verdict.HEALTHY
        if cpu_advanced and not stopped:
            self.busy += 1
            return Verdict.HUNG if self.busy >= self.busy_probes_to_hang else Verdict.BUSY
        self.failures += 1
        return Verdict.HUNG if self.failures >= self.failures_to_hang else Verdict.FAILING


def cpu_advanced(before: float | None, after: float | None) -> bool:
    return before is not None and after is not None and after - before >= CPU_BUSY_SECONDS
