"""The lifecycle of the supervised Jupyter, and the restart backoff (no clock of their own).

    STOPPED --start--> STARTING --answers /api--> RUNNING
    STARTING --exits / start_timeout--> BACKOFF --delay over--> STARTING
    RUNNING --exits / hung--> BACKOFF
    STOPPED, BACKOFF --port busy--> BACKOFF
    STARTING, RUNNING, BACKOFF --stop, reload--> STOPPING --> STOPPED or STARTING or BACKOFF
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
    """How long to wait before starting Jupyter again: at once after a run that served for
    `stable_after` seconds (a crash after a long run is no loop), else 1 s doubling to 60 s."""

    initial: float = 1.0
    maximum: float = 60.0
    stable_after: float = 60.0
    delay: float = 1.0

    def next_delay(self, served_for: float = 0.0) -> float:
        """The wait before the next start; `served_for`: how long the ended run served."""
        if served_for >= self.stable_after:
            self.delay = self.initial
            return 0.0
        current = self.delay
        self.delay = min(self.delay * 2, self.maximum)
        return current
