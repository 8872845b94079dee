"""The daemon's decisions, driven turn by turn on an injected clock: no waiting for real minutes.

The supervised program is a real process, a stand-in for `jupyter lab` (it reads the rendered config
to find its port and answers `GET /api`), so starts, exits, probes, signals and stops are real; only
the clock jumps when nothing is due. Each test names the promise of the contract it holds.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from support import NotifyListener, process_tree

from supervisor import child
from supervisor.daemon import Daemon
from supervisor.loading import load
from supervisor.states import State

STAND_IN = f"""#!{sys.executable}
import http.server, json, os, signal, sys, time
config = json.load(open(os.path.join(os.environ["JUPYTER_CONFIG_DIR"], "jupyter_server_config.json")))
app = config["ServerApp"]
behaviour = sys.argv[2] if len(sys.argv) > 2 else "serve"
if behaviour == "crash":
    sys.exit(3)
if behaviour == "ignore-term":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)

class Api(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path.endswith("/api") else 404)
        self.end_headers()
    def log_message(self, *args):
        pass

http.server.HTTPServer((app["ip"] or "127.0.0.1", app["port"]), Api).serve_forever()
"""


class JumpingClock:
    """time.monotonic() plus whatever the test skipped ahead."""

    def __init__(self) -> None:
        self.skipped = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.skipped


class Driver:
    def __init__(self, daemon: Daemon, clock: JumpingClock) -> None:
        self.daemon, self.clock = daemon, clock

    def until(self, condition: Callable[[], Any], what: str, real_seconds: float = 30) -> None:
        """Turn the loop until `condition`; when only timers are left, jump to the next one."""
        deadline = time.monotonic() + real_seconds
        daemon = self.daemon
        while True:
            daemon._reap()
            while (number := daemon.signals.take()) is not None:
                daemon._on_signal(number)
            daemon._read_probe()
            daemon.timers.run_due()
            if condition():
                return
            assert time.monotonic() < deadline, f"never: {what} (state {daemon.state.name})"
            time.sleep(0.01)
            if not daemon.probes.busy:
                self.clock.skipped += daemon.timers.next_timeout()

    def record_delays(self) -> list[float]:
        """The delays the daemon's backoff gives, as it gives them."""
        delays: list[float] = []
        backoff = self.daemon.backoff
        choose = backoff.next_delay

        def recorded(served_for: float = 0.0) -> float:
            delays.append(choose(served_for))
            return delays[-1]

        backoff.next_delay = recorded  # type: ignore[method-assign]
        return delays


@pytest.fixture
def stand_in(folder: Path) -> Path:
    path = folder / "jupyter"
    path.write_text(STAND_IN)
    path.chmod(0o755)
    return path


@pytest.fixture
def driven(make_settings, stand_in: Path) -> Iterator[Callable[..., Driver]]:
    made: list[Daemon] = []

    def make(behaviour: str = "serve", **sections: dict[str, Any]) -> Driver:
        server = {"jupyter": str(stand_in), "extra_args": [behaviour], **sections.pop("server", {})}
        settings = load(make_settings(server=server, tls={"mode": "off"}, **sections))
        clock = JumpingClock()
        daemon = Daemon(settings, clock)
        made.append(daemon)
        daemon.signals.install()
        daemon._start()
        return Driver(daemon, clock)

    yield make
    for daemon in made:
        daemon._stop_everything()
    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1, signal.SIGCHLD):
        signal.signal(number, signal.SIG_DFL)
    signal.set_wakeup_fd(-1)


def test_a_crash_loop_backs_off_one_second_doubling(driven):
    driver = driven("crash")
    delays = driver.record_delays()
    driver.until(lambda: len(delays) == 5, "five failed starts")
    assert delays == [1, 2, 4, 8, 16]
    assert driver.daemon.restarts == 4
    assert "exited with status 3" in driver.daemon.last_error


def test_a_crash_after_serving_a_minute_restarts_at_once_and_the_doubling_starts_over(driven):
    driver = driven("serve")
    daemon = driver.daemon
    driver.until(lambda: daemon.state is State.RUNNING, "serving")
    delays = driver.record_delays()
    first = daemon.jupyter.pid
    driver.clock.skipped += 61  # served for a minute
    os.kill(first, signal.SIGKILL)
    driver.until(lambda: daemon.state is State.RUNNING and daemon.jupyter.pid != first, "back")
    assert delays == [0]
    # Killed again soon after: that is a crash loop, and it waits.
    os.kill(daemon.jupyter.pid, signal.SIGKILL)
    driver.until(lambda: len(delays) == 2, "second crash")
    assert delays == [0, 1]


def test_a_stopped_process_is_replaced_within_three_health_intervals(driven):
    driver = driven("serve", supervise={"health_interval": 1, "start_timeout": 60,
                                        "stop_timeout": 5})
    daemon = driver.daemon
    driver.until(lambda: daemon.state is State.RUNNING, "serving")
    frozen = daemon.jupyter.pid
    os.kill(frozen, signal.SIGSTOP)
    stopped_at = driver.clock()
    driver.until(lambda: daemon.state is State.BACKOFF, "replaced", real_seconds=60)
    assert driver.clock() - stopped_at <= 3 * 1 + 0.5  # three probes, one interval apart
    assert "stopped answering" in daemon.last_error and "SIGSTOP" in daemon.last_error
    assert not psutil.pid_exists(frozen) or psutil.Process(frozen).status() == "zombie"


def test_a_reload_during_start_up_waits_for_the_start(driven, make_settings):
    driver = driven("serve")
    daemon = driver.daemon
    assert daemon.state is State.STARTING
    os.kill(os.getpid(), signal.SIGHUP)
    driver.until(lambda: daemon.reload.seq == 1, "the reload's verdict")
    assert daemon.state is State.RUNNING and daemon.reload.result == "applied"


def test_a_reload_restarts_jupyter_only_for_server_changes(driven):
    driver = driven("serve")
    daemon = driver.daemon
    driver.until(lambda: daemon.state is State.RUNNING, "serving")
    pid = daemon.jupyter.pid
    settings = daemon.settings.source
    settings.write_text(settings.read_text() + "\n[kernel]\ncull_idle_minutes = 5\n")
    daemon._on_signal(signal.SIGHUP)
    assert daemon.reload.result == "applied" and daemon.jupyter.pid == pid
    assert '"cull_idle_minutes": 5' in daemon.prepared.layout.live_file.read_text()

    settings.write_text(settings.read_text().replace("[server]", "[server]\nbase_url = \"/x/\""))
    daemon._on_signal(signal.SIGHUP)
    driver.until(lambda: daemon.reload.seq == 2, "the restart's verdict")
    assert daemon.reload.result == "applied" and daemon.jupyter.pid != pid
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"


def test_a_rejected_reload_keeps_the_old_settings_and_says_why(driven):
    driver = driven("serve")
    daemon = driver.daemon
    driver.until(lambda: daemon.state is State.RUNNING, "serving")
    pid, before = daemon.jupyter.pid, daemon.settings
    daemon.settings.source.write_text("[server]\nprot = 1\n")
    daemon._on_signal(signal.SIGHUP)
    assert daemon.reload.result == "rejected" and "unknown key" in daemon.last_error
    assert daemon.settings is before and daemon.jupyter.pid == pid


def test_stop_escalates_to_sigkill_at_stop_timeout_and_keeps_the_watchdog_fed(
        driven, folder, monkeypatch):
    listener = NotifyListener(folder)
    monkeypatch.setenv("NOTIFY_SOCKET", str(listener.path))
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")  # a ping each second
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    try:
        driver = driven("ignore-term", supervise={"stop_timeout": 3, "health_interval": 1,
                                                  "start_timeout": 60})
        daemon = driver.daemon
        driver.until(lambda: daemon.state is State.RUNNING, "serving")
        stubborn = daemon.jupyter.pid
        pings = listener.count("WATCHDOG=1")
        began = time.monotonic()
        daemon._on_signal(signal.SIGTERM)
        took = time.monotonic() - began
        assert daemon.state is State.STOPPED
        assert not psutil.pid_exists(stubborn) or psutil.Process(stubborn).status() == "zombie"
        assert 2.5 < took < 20  # it waited for stop_timeout, then killed
        time.sleep(0.3)  # the listener's thread collects the last datagrams
        assert listener.count("WATCHDOG=1") >= pings + 2
        assert "STOPPING=1" in listener.lines()
    finally:
        listener.close()


def test_an_internal_error_stops_everything_and_exits_1(driven, monkeypatch):
    driver = driven("serve")
    daemon = driver.daemon
    driver.until(lambda: daemon.state is State.RUNNING, "serving")
    pid = daemon.jupyter.pid

    def broken() -> None:
        raise RuntimeError("a bug")

    daemon.timers.after("bug", 0, broken)
    assert daemon.run() == 1
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == "zombie"
    assert process_tree(os.getpid()) == []  # nothing the daemon started is left


def test_a_spawn_failure_backs_off_instead_of_ending_the_daemon(driven, monkeypatch):
    driver = driven("serve")
    daemon = driver.daemon
    driver.until(lambda: daemon.state is State.RUNNING, "serving")

    def cannot_fork(*args: Any, **kwargs: Any) -> Any:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(child, "start", cannot_fork)
    os.kill(daemon.jupyter.pid, signal.SIGKILL)
    driver.until(lambda: daemon.restarts >= 1 and daemon.state is State.BACKOFF
                 and "could not be started" in daemon.last_error, "a failed spawn backed off")
    assert daemon.exit_code == 0
