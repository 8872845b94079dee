"""The pure verdicts of supervisor/health.py: busy or hung, and what counts as serving. No clock."""

from __future__ import annotations

from supervisor.health import (
    CERTIFICATE_SWAP_GRACE,
    Answer,
    HealthTracker,
    Verdict,
    cpu_advanced,
    serves,
)

LIVE, OLD = "a" * 64, "b" * 64


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


def test_serving_means_the_live_certificate():
    assert serves(Answer(200, "HTTP 200", LIVE), LIVE, running=False, since_swap=999)
    assert not serves(Answer(200, "HTTP 200", OLD), LIVE, running=False, since_swap=0)
    assert not serves(Answer(503, "HTTP 503", LIVE), LIVE, running=True, since_swap=999)
    assert not serves(Answer(None, "refused"), LIVE, running=True, since_swap=999)
    assert serves(Answer(200, "HTTP 200"), None, running=False, since_swap=999)  # TLS off


def test_the_previous_certificate_is_tolerated_only_while_running_and_swapping():
    old = Answer(200, "HTTP 200", OLD)
    assert serves(old, LIVE, running=True, since_swap=CERTIFICATE_SWAP_GRACE - 1)
    assert not serves(old, LIVE, running=True, since_swap=CERTIFICATE_SWAP_GRACE)
    # A start is judged strictly: READY=1 only with the live certificate.
    assert not serves(old, LIVE, running=False, since_swap=0)


def test_cpu_advanced_needs_both_readings_and_a_real_step():
    assert cpu_advanced(1.0, 1.05)
    assert not cpu_advanced(1.0, 1.04)
    assert not cpu_advanced(None, 5.0) and not cpu_advanced(1.0, None)
