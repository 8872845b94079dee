"""The pure rules of supervisor/states.py: transitions and the restart backoff. No clock."""

from __future__ import annotations

import itertools
import re

import pytest

from supervisor import states
from supervisor.states import Backoff, IllegalTransition, State, check_transition

S = State


def diagram_edges(text: str) -> set[tuple[State, State]]:
    """The edges the module docstring draws: "A, B --label--> C --> D or E" gives A->C, B->C, C->D, C->E."""
    edges = set()
    for line in text.splitlines():
        if "-->" not in line:
            continue
        steps = [[State[name] for name in re.split(r",\s*|\s+or\s+", step.strip())]
                 for step in re.split(r"--(?:[^>]*?--)?>", line)]
        for sources, targets in itertools.pairwise(steps):
            edges |= set(itertools.product(sources, targets))
    return edges


DIAGRAM = diagram_edges(states.__doc__)


def test_the_diagram_is_read_as_drawn():
    assert (S.STOPPED, S.STARTING) in DIAGRAM and (S.FATAL, S.STOPPED) in DIAGRAM
    assert {(S.STARTING, S.STOPPING), (S.RUNNING, S.STOPPING), (S.BACKOFF, S.STOPPING)} <= DIAGRAM
    assert len(DIAGRAM) == 17


def allowed() -> set[tuple[State, State]]:
    return {(old, new) for old, targets in states.TRANSITIONS.items() for new in targets}


def test_the_table_is_the_diagram():
    assert allowed() == DIAGRAM
    assert set(states.TRANSITIONS) == set(State)


@pytest.mark.parametrize("old,new", sorted(set(itertools.product(State, State)) - DIAGRAM,
                                           key=lambda pair: (pair[0].value, pair[1].value)))
def test_illegal_transitions_raise(old, new):
    with pytest.raises(IllegalTransition, match=f"{old.name} -> {new.name}"):
        check_transition(old, new)


def test_legal_transitions_pass():
    for old, new in allowed():
        check_transition(old, new)


def test_a_running_server_never_goes_straight_back_to_starting():
    # A restart always passes through BACKOFF (or STOPPING for a reload): no tight restart loop.
    with pytest.raises(IllegalTransition):
        check_transition(S.RUNNING, S.STARTING)


def test_backoff_doubles_from_one_second_to_sixty():
    backoff = Backoff()
    assert [backoff.next_delay() for _ in range(9)] == [1, 2, 4, 8, 16, 32, 60, 60, 60]


def test_a_run_that_served_a_minute_restarts_at_once_and_resets_the_doubling():
    backoff = Backoff()
    for _ in range(4):
        backoff.next_delay()
    # Served, but not long enough: a flapping server keeps doubling.
    assert backoff.next_delay(served_for=59.9) == 16
    assert backoff.next_delay(served_for=60.0) == 0
    assert [backoff.next_delay() for _ in range(3)] == [1, 2, 4]
