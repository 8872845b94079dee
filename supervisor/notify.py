"""systemd's notify protocol: a silent no-op without NOTIFY_SOCKET, and never an exception.

sdnotify opens the socket (abstract "@" addresses included); we send the bytes ourselves, as UTF-8
and one message a datagram, because sdnotify encodes Latin-1 and hides every error: one character
outside Latin-1 in a STATUS= sent together with READY=1 would silently lose READY=1.
"""

from __future__ import annotations

import logging
import os
import time

import sdnotify

log = logging.getLogger(__name__)


class Notifier:
    def __init__(self) -> None:
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self._notifier: sdnotify.SystemdNotifier | None = None
        if self.enabled:
            try:
                self._notifier = sdnotify.SystemdNotifier(debug=True)  # debug: raise, don't hide
            except Exception as error:
                log.debug("NOTIFY_SOCKET unusable: %s", error)
        watchdog = os.environ.get("WATCHDOG_USEC", "")
        watchdog_pid = os.environ.get("WATCHDOG_PID", "")
        applies = not watchdog_pid or watchdog_pid == str(os.getpid())
        # Ping at half the interval systemd allows, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = int(watchdog) / 2e6 if watchdog.isdigit() and applies else None

    def send(self, message: str) -> None:
        if self._notifier is None:
            return
        try:
            self._notifier.socket.sendall(message.encode("utf-8"))
        except OSError as error:
            log.debug("sd_notify %r failed: %s", message.split("=", 1)[0], error)

    def ready(self, status: str) -> None:
        self.send("READY=1")
        self.status(status)

    def status(self, text: str) -> None:
        self.send(f"STATUS={text}")

    def reloading(self) -> None:
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.send(f"RELOADING=1\nMONOTONIC_USEC={now}")

    def stopping(self) -> None:
        self.send("STOPPING=1")

    def watchdog(self) -> None:
        self.send("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> None:
        self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")
