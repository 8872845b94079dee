"""Thousands of idle TCP connections, no password needed: the server keeps serving everyone else.
Connections that never log in are closed once idle; logged-in ones stay open however idle.

Under systemd's default file limit (soft 1024), 4,200 connections that never start a TLS handshake
used to take every descriptor of Jupyter: each `GET /api` then timed out and Jupyter logged an
EMFILE traceback for every failed accept(), about 100 MB in 40 s.
"""

from __future__ import annotations

import errno
import resource
import socket
import ssl
import time
from contextlib import contextmanager
from collections.abc import Iterator

import requests
from support import wait_until

ATTACKERS = ("127.0.0.2", "127.0.0.3")
CONNECTIONS = 4200
HOLD_SECONDS = 30
BOUND = 5.0  # seconds: generous for `GET /api` plus a kernel round trip on a shared 2-core machine
LOG_GROWTH = 1_000_000  # bytes
BATCH, PACE_SECONDS = 50, 0.05


@contextmanager
def file_limit(soft: int) -> Iterator[None]:
    """This process's soft RLIMIT_NOFILE (its children started meanwhile inherit it), restored."""
    before = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, before[1]), before[1]))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, before)


def open_idle(port: int, sources: tuple[str, ...], count: int) -> list[socket.socket]:
    """`count` TCP connections to the port, spread over `sources`, that never send a byte."""
    sockets: list[socket.socket] = []
    try:
        for number in range(count):
            sock = socket.socket()
            sockets.append(sock)
            sock.setblocking(False)
            sock.bind((sources[number % len(sources)], 0))
            code = sock.connect_ex(("127.0.0.1", port))
            assert code in (0, errno.EINPROGRESS), errno.errorcode.get(code, code)
            if number % BATCH == BATCH - 1:
                # Paced, as an attacker would: a burst beyond the listen backlog is dropped by the
                # kernel, and those connections never reach Jupyter at all.
                time.sleep(PACE_SECONDS)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


def closed_by_server(connection: ssl.SSLSocket) -> bool:
    connection.settimeout(0.2)
    try:
        return connection.recv(1) == b""
    except TimeoutError:
        return False
    except (ssl.SSLError, ConnectionError):
        return True


def test_4200_idle_connections_from_two_addresses_leave_a_third_served(serve):
    # Jupyter inherits systemd's default soft limit, as it would under the unit before LimitNOFILE=.
    with file_limit(1024):
        server = serve()
    user = server.logged_in_client()
    kernel_id = user.start_kernel()
    # Held open and idle all along: a logged-in connection has no idle timeout.
    kept = user.kernel(kernel_id)
    assert kept.execute("print(1 + 1)").strip() == "2"
    # A connection that finished its handshake and never asks anything: closed once idle.
    silent = ssl.create_default_context(cafile=server.ca).wrap_socket(
        socket.create_connection(("127.0.0.1", server.port), timeout=10,
                                 source_address=("127.0.0.4", 0)),
        server_hostname="127.0.0.1")
    log_before = server.daemon.log_path.stat().st_size

    samples: list[float] = []
    needed = CONNECTIONS + 512  # the attack, plus this test's own files and clients
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] >= needed, "the hard file limit is too low"
    with file_limit(needed):
        held = open_idle(server.port, ATTACKERS, CONNECTIONS)
        try:
            ends = time.monotonic() + HOLD_SECONDS
            while time.monotonic() < ends:
                # New connections each time, as a new visitor and a reopened notebook make them:
                # a connection kept alive from before would not notice that no new one gets in.
                began = time.monotonic()
                with requests.Session() as visitor:
                    visitor.trust_env = False
                    answer = visitor.get(f"{server.base}/api", verify=server.ca, timeout=10)
                assert answer.status_code == 200, answer.status_code
                channel = user.kernel(kernel_id)
                try:
                    assert channel.execute("print(1 + 1)", timeout=10).strip() == "2"
                finally:
                    channel.close()
                samples.append(time.monotonic() - began)
                time.sleep(0.2)
            assert kept.execute("print(2 + 2)", timeout=10).strip() == "4"
            wait_until(lambda: closed_by_server(silent), 20, "the silent connection to be closed")
        finally:
            for sock in held:
                sock.close()
            kept.close()
            silent.close()

    print(f"\n{CONNECTIONS} idle connections held {HOLD_SECONDS} s: {len(samples)} rounds of "
          f"GET /api + kernel 1+1 from 127.0.0.1, slowest {max(samples):.2f} s")
    assert samples and max(samples) < BOUND, samples
    assert "Too many open files" not in server.daemon.log()
    # The refusals are summed up, never one line each.
    wait_until(lambda: "jupyter-remote: connections in the last" in server.daemon.log(), 20,
               "the refusals summary")
    log = server.daemon.log()
    summaries = [line for line in log.splitlines()
                 if "jupyter-remote: connections in the last" in line]
    grew = server.daemon.log_path.stat().st_size - log_before
    print(f"log grew {grew} bytes; summaries: {summaries[:2]}")
    assert "over the per-address limit" in log and "127.0.0.2" in log and "127.0.0.3" in log
    wait_until(lambda: "closed without a TLS handshake" in server.daemon.log(), 20,
               "the handshake timeout")
    assert len(summaries) <= HOLD_SECONDS // 10 + 2
    assert server.daemon.log_path.stat().st_size - log_before < LOG_GROWTH
    status = server.daemon.status()
    assert status["state"] == "running" and status["restarts"] == 0
