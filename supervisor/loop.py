"""The mechanics of the daemon's one loop: a signal queue and timers, on an injectable clock.

Signal handlers only append to the queue and wake the loop through a pipe (as gunicorn's arbiter
does); everything a signal means happens later, in the loop. Timers hold callables, not names.
"""

from __future__ import annotations

import os
import select
import signal
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

Clock = Callable[[], float]
IDLE_WAIT = 60.0  # the longest the loop sleeps with nothing due

# Every signal the daemon handles; forked children put them back to the defaults.
HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD)


class SignalQueue:
    """Signals received, in order, and a pipe that wakes `wait` whenever one arrives."""

    def __init__(self) -> None:
        self.pending: deque[int] = deque()
        self._read, self._write = os.pipe()
        for fd in (self._read, self._write):
            os.set_blocking(fd, False)
            os.set_inheritable(fd, False)

    def install(self, numbers: Iterable[int] = HANDLED_SIGNALS) -> None:
        signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        for number in numbers:
            signal.signal(number, self._enqueue)

    def _enqueue(self, number: int, _frame: object) -> None:
        self.pending.append(number)

    def wake(self) -> None:
        """Callable from any thread: the loop's next `wait` returns at once."""
        try:
            os.write(self._write, b"\0")
        except BlockingIOError:
            pass  # the pipe is full: the loop is already due to wake

    def wait(self, timeout: float, also: Iterable[int] = ()) -> list[int]:
        """Sleep until a signal, a wake, a readable descriptor of `also`, or `timeout` seconds;
        returns the descriptors of `also` that are readable."""
        if self.pending:
            timeout = 0
        try:
            readable, _, _ = select.select([self._read, *also], [], [], max(0.0, timeout))
        except InterruptedError:
            readable = []
        try:
            while os.read(self._read, 4096):
                pass
        except BlockingIOError:
            pass
        return [fd for fd in readable if fd != self._read]

    def take(self) -> int | None:
        return self.pending.popleft() if self.pending else None


def forget_signal_handlers() -> None:
    """In a forked child: the parent's handlers would only queue signals for a loop not running."""
    signal.set_wakeup_fd(-1)
    for number in HANDLED_SIGNALS:
        signal.signal(number, signal.SIG_DFL)


@dataclass
class _Timer:
    due: float
    action: Callable[[], None]


@dataclass
class Timers:
    """Callables due at moments of `clock`; one per key, so setting a timer again moves it."""

    clock: Clock = time.monotonic
    _timers: dict[object, _Timer] = field(default_factory=dict)

    def after(self, key: object, seconds: float, action: Callable[[], None]) -> None:
        self._timers[key] = _Timer(self.clock() + seconds, action)

    def cancel(self, *keys: object) -> None:
        for key in keys:
            self._timers.pop(key, None)

    def clear(self) -> None:
        self._timers.clear()

    def pending(self, key: object) -> bool:
        return key in self._timers

    def due(self, key: object) -> float | None:
        timer = self._timers.get(key)
        return timer.due if timer else None

    def next_timeout(self, longest: float = IDLE_WAIT) -> float:
        """Seconds until the next timer is due (0 when one is overdue)."""
        soonest = min((t.due for t in self._timers.values()), default=self.clock() + longest)
        return max(0.0, min(soonest - self.clock(), longest))

    def run_due(self) -> None:
        """Run every timer due now, earliest first; one that sets itself again waits its turn."""
        now = self.clock()
        due = sorted(((t.due, key) for key, t in self._timers.items() if t.due <= now),
                     key=lambda item: item[0])
        for when, key in due:
            timer = self._timers.get(key)
            if timer is not None and timer.due == when:  # not cancelled or moved by an earlier one
                del self._timers[key]
                timer.action()
