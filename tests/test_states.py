"""The pure rules of supervisor/states.py: transitions, backoff and the busy-or-hung verdict. No clock."""

from __future__ import annotations

import itertools
import re

import pytest

from supervisor import states
from supervisor.states import (
    Backoff,
    HealthTracker,
    IllegalTransition,
    State,
    Verdict,
    check_transition,
)

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


def test_backoff_resets_only_after_a_stable_period():
    backoff = Backoff()
    for _ in range(4):
        backoff.next_delay()
    backoff.note_running(59.9)  # served, but not long enough: a flapping server keeps its delay
    assert backoff.next_delay() == 16
    backoff.note_running(60.0)
    assert [backoff.next_delay() for _ in range(3)] == [1, 2, 4]


def feed(tracker: HealthTracker, probes: list[tuple[bool, bool, bool]]) -> list[Verdict]:
    return [tracker.record(answered, cpu_advanced=cpu, stopped=stopped) for answered, cpu, stopped in probes]


ANSWER = (True, False, False)
SILENT_WORKING = (False, True, False)  # no answer, but Jupyter burns CPU: busy (a flood, a heavy request)
SILENT_IDLE = (False, False, False)  # no answer and no CPU: deadlocked or wedged
SILENT_STOPPED = (False, True, True)  # SIGSTOPped: CPU time from before the stop must not count


def test_answers_are_healthy():
    assert feed(HealthTracker(), [ANSWER] * 5) == [Verdict.HEALTHY] * 5


def test_no_answer_without_cpu_is_hung_on_the_third_probe():
    assert feed(HealthTracker(), [SILENT_IDLE] * 3) == [Verdict.FAILING, Verdict.FAILING, Verdict.HUNG]


def test_a_stopped_process_is_hung_even_if_its_cpu_time_moved():
    assert feed(HealthTracker(), [SILENT_STOPPED] * 3)[-1] is Verdict.HUNG


def test_busy_is_tolerated_far_longer_than_silence():
    tracker = HealthTracker()
    verdicts = feed(tracker, [SILENT_WORKING] * (tracker.busy_probes_to_hang - 1))
    assert set(verdicts) == {Verdict.BUSY}
    # ...but an event loop spinning without ever answering is replaced in the end.
    assert feed(tracker, [SILENT_WORKING]) == [Verdict.HUNG]


def test_one_answer_forgives_everything_before_it():
    tracker = HealthTracker()
    feed(tracker, [SILENT_IDLE, SILENT_IDLE, ANSWER])
    assert feed(tracker, [SILENT_IDLE, SILENT_IDLE]) == [Verdict.FAILING, Verdict.FAILING]
    feed(tracker, [SILENT_WORKING] * (tracker.busy_probes_to_hang - 1) + [ANSWER])
    assert feed(tracker, [SILENT_WORKING]) == [Verdict.BUSY]


def test_a_flood_interleaving_busy_and_answered_probes_is_never_hung():
    tracker = HealthTracker()
    pattern = [SILENT_WORKING, SILENT_WORKING, ANSWER] * 100
    assert Verdict.HUNG not in feed(tracker, pattern)


def test_busy_and_silent_probes_count_separately():
    # Two silent probes, then busy ones, then a silent one: the third silent probe means hung,
    # whatever busy probes came between (busy never resets the silent count, nor adds to it).
    tracker = HealthTracker()
    assert feed(tracker, [SILENT_IDLE, SILENT_IDLE, SILENT_WORKING, SILENT_WORKING]) == [
        Verdict.FAILING, Verdict.FAILING, Verdict.BUSY, Verdict.BUSY]
    assert feed(tracker, [SILENT_IDLE]) == [Verdict.HUNG]
