"""Asking Jupyter whether it serves: `GET <base_url>api` on a local address it listens on.

Over TLS the probe reports the SHA-256 of the certificate served, for the daemon to pin to the live
one: a certbot certificate has no 127.0.0.1 name, and a self-signed one needs no CA bundle this way.
"""

from __future__ import annotations

import hashlib
import http.client
import ssl
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable


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
        if target.tls:
            served = hashlib.sha256(connection.sock.getpeercert(binary_form=True)).hexdigest()
        connection.request("GET", target.path)
        response = connection.getresponse()
        response.read(65536)
        return Answer(response.status, f"HTTP {response.status}", served)
    except (OSError, http.client.HTTPException) as error:
        return Answer(None, str(error) or type(error).__name__)
    finally:
        connection.close()


class ProbeRunner:
    """Runs one probe at a time on a worker thread, so the daemon's loop never waits on the network."""

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
