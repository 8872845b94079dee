"""The lifecycle of the supervised Jupyter, and the pure rules that move it (no clock of their own).

    STOPPED --start--> STARTING --answers /api--> RUNNING
    STARTING --exits / start_timeout--> BACKOFF --delay over--> STARTING
    RUNNING --exits / hung--> BACKOFF
    STOPPED, BACKOFF --port busy--> BACKOFF
    STARTING, RUNNING, BACKOFF --stop or [server] reload--> STOPPING --> STOPPED or STARTING or BACKOFF
    STOPPED, BACKOFF, STOPPING --cannot run Jupyter at all--> FATAL --> STOPPED
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class State(enum.Enum):
    STOPPED = "stopped"
    STARTING = "starting"
    RUNNING = "running"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    FATAL = "fatal"


TRANSITIONS: dict[State, frozenset[State]] = {
    State.STOPPED: frozenset({State.STARTING, State.BACKOFF, State.FATAL}),
    State.STARTING: frozenset({State.RUNNING, State.BACKOFF, State.STOPPING}),
    State.RUNNING: frozenset({State.BACKOFF, State.STOPPING}),
    State.BACKOFF: frozenset({State.STARTING, State.BACKOFF, State.STOPPING, State.FATAL}),
    State.STOPPING: frozenset({State.STOPPED, State.STARTING, State.BACKOFF, State.FATAL}),
    State.FATAL: frozenset({State.STOPPED}),
}


class IllegalTransition(RuntimeError):
    pass


def check_transition(current: State, new: State) -> None:
    if new not in TRANSITIONS[current]:
        raise IllegalTransition(f"{current.name} -> {new.name}")


@dataclass
class Backoff:
    """1 s doubling to 60 s; back to 1 s once Jupyter has served for `stable_after` seconds."""

    initial: float = 1.0
    maximum: float = 60.0
    stable_after: float = 60.0
    delay: float = 1.0

    def next_delay(self) -> float:
        current = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return current

    def note_running(self, running_for: float) -> None:
        if running_for >= self.stable_after:
            self.delay = self.initial


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
