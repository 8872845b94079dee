"""The in-Jupyter login protection without Jupyter: the per-client limit on an explicit clock, who
counts as one client, and the order in which password checks take turns (real argon2 checks)."""

from __future__ import annotations

import asyncio
import os
import threading

import pytest

from supervisor.inside_jupyter.jupyter_remote_ext.login import (
    MAX_TRACKED_ADDRESSES, WINDOW_SECONDS, PasswordChecks, RateLimiter, client_key,
)
from supervisor.passwords import hash_password

# --- RateLimiter: failures in a sliding minute, on a clock the test turns ------------------------


def fail(limiter: RateLimiter, client: str, now: float) -> None:
    limiter.begin(client)
    limiter.end(client, failed=True, now=now)


def test_the_limit_counts_failures_in_a_sliding_minute_per_client():
    limiter = RateLimiter(per_minute=3)
    for now in (0.0, 10.0, 20.0):
        assert limiter.retry_after("a", now) == 0
        fail(limiter, "a", now)
    # The fourth try is refused until the first failure is a minute old, and says so.
    assert limiter.retry_after("a", 30.0) == pytest.approx(30.0)
    assert limiter.retry_after("b", 30.0) == 0  # another client is not touched
    assert limiter.retry_after("a", WINDOW_SECONDS) == 0  # the first failure left the window
    fail(limiter, "a", WINDOW_SECONDS)
    assert limiter.retry_after("a", WINDOW_SECONDS) == pytest.approx(10.0)


def test_retry_after_is_at_least_one_second():
    # Retry-After is sent rounded up; "0" would invite an immediate retry that is refused again.
    limiter = RateLimiter(per_minute=1)
    fail(limiter, "a", 0.0)
    assert limiter.retry_after("a", WINDOW_SECONDS - 0.01) == 1.0


def test_a_successful_login_does_not_count():
    limiter = RateLimiter(per_minute=1)
    for now in range(5):
        limiter.begin("a")
        limiter.end("a", failed=False, now=float(now))
        assert limiter.retry_after("a", float(now)) == 0


def test_checks_in_flight_count_until_they_end():
    # Many POSTs from one address at once: all would pass the test before the first one fails.
    limiter = RateLimiter(per_minute=2)
    limiter.begin("a")
    limiter.begin("a")
    assert limiter.retry_after("a", 0.0) == WINDOW_SECONDS  # outcome unknown: a whole window
    limiter.end("a", failed=False, now=1.0)
    assert limiter.retry_after("a", 1.0) == 0
    limiter.end("a", failed=True, now=2.0)
    assert limiter.retry_after("a", 2.0) == 0  # one failure of two allowed
    assert limiter.in_flight == {}


def test_a_clean_record_is_a_first_try_alone():
    limiter = RateLimiter(per_minute=10)
    limiter.begin("a")
    assert limiter.clean_record("a", 0.0)
    limiter.begin("a")  # a second check from the same client while the first runs
    assert not limiter.clean_record("a", 0.0)
    limiter.end("a", failed=True, now=0.0)
    limiter.end("a", failed=True, now=0.0)
    limiter.begin("a")
    assert not limiter.clean_record("a", 1.0)  # it failed within the minute
    limiter.end("a", failed=False, now=1.0)
    limiter.begin("a")
    assert limiter.clean_record("a", WINDOW_SECONDS + 1)  # the failures are a minute old
    limiter.end("a", failed=False, now=WINDOW_SECONDS + 1)


def test_with_the_limit_off_nothing_is_refused_or_remembered():
    limiter = RateLimiter(per_minute=0)
    for now in range(100):
        fail(limiter, "a", float(now))
    assert limiter.retry_after("a", 100.0) == 0
    assert limiter.failures == {}


def test_a_limit_lowered_live_applies_to_failures_already_counted():
    limiter = RateLimiter(per_minute=10)
    for now in (0.0, 1.0, 2.0):
        fail(limiter, "a", now)
    assert limiter.retry_after("a", 3.0) == 0
    limiter.per_minute = 3  # what a reload of auth.rate_limit_per_minute does
    assert limiter.retry_after("a", 3.0) == pytest.approx(57.0)


def test_memory_stays_bounded_under_a_flood_from_many_addresses():
    limiter = RateLimiter(per_minute=5)
    for number in range(MAX_TRACKED_ADDRESSES + 100):
        fail(limiter, f"10.{number >> 16 & 255}.{number >> 8 & 255}.{number & 255}", 0.0)
    assert len(limiter.failures) == MAX_TRACKED_ADDRESSES
    assert "10.0.0.0" not in limiter.failures  # the least recently failed are forgotten first
    assert f"10.0.{(MAX_TRACKED_ADDRESSES + 99) >> 8 & 255}.{(MAX_TRACKED_ADDRESSES + 99) & 255}" \
        in limiter.failures


# --- client_key: who counts as one client --------------------------------------------------------


@pytest.mark.parametrize(("address", "key"), [
    ("203.0.113.7", "203.0.113.7"),
    ("::ffff:203.0.113.7", "203.0.113.7"),  # a dual-stack socket reports IPv4 clients this way
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
    ("fe80::1%eth0", "fe80::/64"),  # a zone does not make another client
    ("::1", "::/64"),
    ("not an address", "not an address"),
])
def test_client_key(address, key):
    assert client_key(address) == key


def test_one_ipv6_host_with_a_whole_64_gets_one_limit():
    limiter = RateLimiter(per_minute=3)
    for host in range(3):
        fail(limiter, client_key(f"2001:db8:0:7::{host + 1:x}"), 0.0)
    assert limiter.retry_after(client_key("2001:db8:0:7:dead:beef:0:1"), 1.0) > 0
    assert limiter.retry_after(client_key("2001:db8:0:8::1"), 1.0) == 0
    fail(limiter, client_key("::ffff:192.0.2.1"), 0.0)
    assert limiter.failures["192.0.2.1"]  # the same client as 192.0.2.1 over IPv4


# --- PasswordChecks: real argon2 checks on one worker, in turns --------------------------------


@pytest.fixture(scope="module")
def hashes() -> dict[str, str]:
    return {word: hash_password(word) for word in ("right", "changed")}


async def run_checks(checks: PasswordChecks, requests: list[tuple[str, str, bool]]) -> list[str]:
    """Submit every (client, typed, first_try) at once, in this order; the order they finished in,
    as "client:typed=answer"."""
    finished: list[str] = []
    futures = []
    for client, typed, first_try in requests:
        future = checks.check(client, typed, first_try)
        future.add_done_callback(lambda done, c=client, t=typed: finished.append(
            f"{c}:{t}={done.exception() or done.result()}"))
        futures.append(future)
    await asyncio.wait_for(asyncio.gather(*futures, return_exceptions=True), 60)
    return finished


@pytest.fixture
def checks(hashes) -> PasswordChecks:
    current = PasswordChecks(lambda: hashes["right"])
    yield current
    current.executor.shutdown(wait=True)


def test_a_check_answers_whether_the_password_is_right(checks):
    finished = asyncio.run(run_checks(checks, [("a", "right", True), ("a", "wrong", True)]))
    assert finished == ["a:right=True", "a:wrong=False"]


def test_a_flood_from_one_client_does_not_hold_back_another(checks):
    flood = [("flood", f"guess{n}", False) for n in range(6)]
    finished = asyncio.run(run_checks(checks, [*flood, ("other", "wrong", False)]))
    # The first guess was running when the other client came; the flood's next one was first in
    # line. In arrival order the other client would have waited for all six.
    assert finished.index("other:wrong=False") <= 2, finished
    assert sorted(finished) == sorted([f"flood:guess{n}=False" for n in range(6)]
                                      + ["other:wrong=False"])


def test_a_first_try_goes_before_every_client_that_is_failing(checks):
    failing = [(f"10.0.0.{n}", "guess", False) for n in range(5)]  # a flood from many addresses
    finished = asyncio.run(run_checks(checks, [*failing, ("typist", "right", True)]))
    assert finished[1] == "typist:right=True", finished  # right after the check already running


def test_a_password_changed_while_a_check_waits_applies_to_it(hashes):
    current = {"hash": hashes["right"]}
    checks = PasswordChecks(lambda: current["hash"])

    async def scenario() -> list[bool]:
        first = checks.check("a", "right", True)
        waiting = checks.check("b", "changed", True)
        current["hash"] = hashes["changed"]  # the first check already runs; the second waits
        return [await asyncio.wait_for(first, 30), await asyncio.wait_for(waiting, 30)]

    try:
        assert asyncio.run(scenario()) == [True, True]
    finally:
        checks.executor.shutdown(wait=True)


def test_a_check_that_raises_fails_that_login_and_the_queue_goes_on(hashes):
    answers = iter([None, hashes["right"]])  # a broken hash (None) for the first check only
    checks = PasswordChecks(lambda: next(answers))
    try:
        finished = asyncio.run(run_checks(checks, [("a", "right", True), ("b", "right", True)]))
    finally:
        checks.executor.shutdown(wait=True)
    assert finished[0].startswith("a:") and not finished[0].endswith("=True")
    assert finished[1] == "b:right=True"


def test_checks_run_at_a_lower_priority_than_the_kernels(checks):
    # The check's worker thread (and argon2's threads, which inherit it) yield to kernels.
    nice = checks.executor.submit(lambda: os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
    assert nice.result(timeout=30) == min(os.getpriority(os.PRIO_PROCESS, 0) + 10, 19)
