"""sd_notify as systemd receives it: datagrams on a real AF_UNIX socket, one message each."""

from __future__ import annotations

import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from supervisor.notify import Notifier


class Receiver:
    def __init__(self, address: str) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        # "@name" is an abstract address, as systemd hands out; sockets take it with a NUL first.
        self.socket.bind("\0" + address[1:] if address.startswith("@") else address)
        self.socket.settimeout(5)

    def messages(self) -> list[str]:
        """Every datagram waiting, each decoded as systemd decodes it (UTF-8, strictly)."""
        received = []
        self.socket.settimeout(0.2)
        try:
            while True:
                received.append(self.socket.recv(65536).decode("utf-8"))
        except TimeoutError:
            return received


@pytest.fixture(params=["path", "abstract"])
def receiver(request, tmp_path: Path, monkeypatch) -> Iterator[Receiver]:
    address = str(tmp_path / "notify.sock") if request.param == "path" else \
        f"@jr-test-{uuid.uuid4().hex}"
    made = Receiver(address)
    monkeypatch.setenv("NOTIFY_SOCKET", address)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield made
    made.socket.close()


def test_ready_arrives_alone_and_a_non_latin_1_status_arrives_intact(receiver):
    status = "Serving https://例え.jp:8888/lab — ✓ «ok» €"
    Notifier().ready(status)
    assert receiver.messages() == ["READY=1", f"STATUS={status}"]


def test_the_other_messages(receiver):
    notifier = Notifier()
    notifier.reloading()
    notifier.extend_timeout(20)
    notifier.watchdog()
    notifier.stopping()
    reloading, *rest = receiver.messages()
    lines = reloading.split("\n")
    assert lines[0] == "RELOADING=1" and lines[1].startswith("MONOTONIC_USEC=")
    assert int(lines[1].split("=")[1]) <= time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert rest == ["EXTEND_TIMEOUT_USEC=20000000", "WATCHDOG=1", "STOPPING=1"]


def test_a_socket_that_went_away_never_raises(tmp_path, monkeypatch):
    receiver = Receiver(str(tmp_path / "gone.sock"))
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    notifier = Notifier()
    receiver.socket.close()
    (tmp_path / "gone.sock").unlink()
    notifier.ready("Serving")  # systemd restarted, say: the daemon serves on regardless
    notifier.stopping()


def test_without_notify_socket_nothing_is_sent_and_nothing_fails(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("Serving")


@pytest.mark.parametrize(("usec", "pid", "interval"), [
    ("4000000", None, 2.0),  # pinged at half the interval, as sd_watchdog_enabled(3) advises
    ("4000000", "own", 2.0),
    ("4000000", "other", None),  # meant for another process of the unit
    ("", None, None),
    ("soon", None, None),
])
def test_the_watchdog_interval(monkeypatch, usec, pid, interval):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is None:
        monkeypatch.delenv("WATCHDOG_PID", raising=False)
    else:
        monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() if pid == "own" else os.getpid() + 1))
    assert Notifier().watchdog_interval == interval
