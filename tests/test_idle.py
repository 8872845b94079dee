"""Idle stop: the decisions on an injected clock, what the extension counts as a user's act, and the
daemon's wiring driven turn by turn (a stand-in Jupyter, as in test_daemon_decisions)."""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

from test_daemon_decisions import driven, stand_in  # noqa: F401  (fixtures)

from supervisor import child, idle
from supervisor.render import activity_file, notice_file
from supervisor.settings import Idle
from supervisor.states import State

sys.path.insert(0, str(child.EXTENSION_PATH))
from jupyter_remote_ext.activity import is_user_request

HALF_MINUTE = Idle(stop_after_minutes=0.5, action="stop", warn_minutes=0.25)


def test_an_idle_machine_is_warned_then_acted_on_and_never_early():
    steps = {now: idle.decide(100.0, HALF_MINUTE, 100.0 + now, warned=now > 15).step
             for now in (0, 14.9, 15, 16, 29.9, 30, 31)}
    assert steps == {0: idle.Step.NOTHING, 14.9: idle.Step.NOTHING, 15: idle.Step.WARN,
                     16: idle.Step.NOTHING, 29.9: idle.Step.NOTHING, 30: idle.Step.ACT,
                     31: idle.Step.ACT}
    assert idle.decide(100.0, HALF_MINUTE, 100.0, warned=False).due == 130.0


def test_the_next_look_never_passes_the_warning_or_the_deadline():
    # A half-minute limit is looked at every 1.5 s; an hour's every 30 s, but not past a step.
    assert idle.look_interval(HALF_MINUTE) == 1.5
    hour = Idle(stop_after_minutes=60, warn_minutes=10)
    assert idle.decide(0.0, hour, 0.0, warned=False).next_look == 30
    assert idle.decide(0.0, hour, 50 * 60 - 4, warned=False).next_look == 4  # the warning
    assert idle.decide(0.0, hour, 60 * 60 - 2, warned=True).next_look == 2  # the action


def test_a_warning_longer_than_the_limit_is_given_at_once():
    short = Idle(stop_after_minutes=1, warn_minutes=10)
    assert idle.due_at(50.0, short) == (50.0, 110.0)
    assert idle.decide(50.0, short, 50.0, warned=False).step is idle.Step.WARN


def test_activity_resets_the_clock_and_a_forged_future_counts_as_now():
    clock = idle.ActivityClock(0.0)
    assert clock.note(10.0, "CPU")
    assert not clock.note(5.0, "older")
    assert (clock.last, clock.what) == (10.0, "CPU")
    # A modification time set in the future by the account is activity now, never later.
    assert idle.from_wall(wall=2_000.0, now=50.0, now_wall=1_000.0) == 50.0
    assert idle.from_wall(wall=990.0, now=50.0, now_wall=1_000.0) == 40.0


def test_an_open_untouched_jupyterlab_and_the_health_probe_are_not_a_users_acts():
    def user(method: str, path: str, status: int = 200, logged_in: bool = True) -> bool:
        return is_user_request(method, path, "/base/", status, logged_in)

    # What an open tab polls by itself, and the daemon's own probe (unauthenticated).
    for path in ("/base/api/sessions", "/base/api/kernels", "/base/api/terminals",
                 "/base/api/contents/work?content=1", "/base/api/kernelspecs", "/base/api/me",
                 "/base/lab/api/settings", "/base/lsp/status", "/base/jupyter-remote/idle",
                 "/base/static/lab/main.js", "/base/lab/extensions/x/remoteEntry.js"):
        assert not user("GET", path), path
    assert not user("GET", "/base/api", logged_in=False)
    assert not user("PUT", "/base/lab/api/workspaces/default")
    # A user's acts: a login, a page, a change; never a stranger's or a refused one.
    assert user("POST", "/base/login", status=302, logged_in=False)
    assert not user("POST", "/base/login", status=401, logged_in=False)
    for path in ("/base/lab", "/base/lab/tree/a.ipynb", "/base/tree", "/base/files/a.csv",
                 "/base/notebooks/a.ipynb"):
        assert user("GET", path), path
    assert user("PUT", "/base/api/contents/a.ipynb")
    assert user("POST", "/base/api/kernels", status=201)
    assert not user("GET", "/base/lab", logged_in=False)
    assert not user("POST", "/base/api/kernels", logged_in=False)


# --- the daemon's wiring, on a jumping clock ------------------------------------------------------


def test_an_idle_daemon_warns_then_stops_with_exit_0_and_says_why(driven, caplog):  # noqa: F811
    driver = driven("serve", idle={"stop_after_minutes": 2, "action": "stop", "warn_minutes": 1})
    daemon = driver.daemon
    driver.until(lambda: daemon.state is State.RUNNING, "serving")
    notice = notice_file(daemon.settings)
    driver.until(lambda: daemon.idle.warned, "the warning")
    warning = json.loads(notice.read_text())
    assert "Any activity keeps it up" in warning["message"]
    assert daemon.state is State.RUNNING
    driver.until(lambda: daemon.state is State.STOPPED, "the idle stop", real_seconds=60)
    assert daemon.exit_code == 0
    assert "nothing active for 2 minutes" in caplog.text
    assert 'action = "stop"' in caplog.text


def test_activity_the_extension_records_calls_the_warning_off(driven, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    driver = driven("serve", idle={"stop_after_minutes": 2, "action": "stop", "warn_minutes": 1})
    daemon = driver.daemon
    driver.until(lambda: daemon.idle.warned, "the warning")
    recorded = activity_file(daemon.settings)
    recorded.touch()  # as the extension does when a user acts
    driver.until(lambda: not daemon.idle.warned, "the warning called off")
    assert json.loads(notice_file(daemon.settings).read_text()) == {}
    assert "idle stop called off: JupyterLab was active" in caplog.text
    assert daemon.state is State.RUNNING


def test_idle_stop_waits_for_a_kernel_package_install(driven, caplog):  # noqa: F811
    caplog.set_level(logging.INFO)
    driver = driven("serve", idle={"stop_after_minutes": 1, "action": "stop", "warn_minutes": 0})
    daemon = driver.daemon
    driver.until(lambda: daemon.state is State.RUNNING, "serving")
    daemon.packages.process = type("Installing", (), {"pid": os.getpid()})()  # an install running
    try:
        driver.until(lambda: "postponed: a kernel-package install" in caplog.text, "postponed")
        assert daemon.state is State.RUNNING
    finally:
        daemon.packages.process = None
    driver.until(lambda: daemon.state is State.STOPPED, "the idle stop once it is over")


def test_a_reload_that_turns_idle_stop_on_applies_without_a_restart(driven):  # noqa: F811
    driver = driven("serve")
    daemon = driver.daemon
    driver.until(lambda: daemon.state is State.RUNNING, "serving")
    pid = daemon.jupyter.pid
    assert daemon.idle.idle_seconds(daemon.clock()) is None
    source = daemon.settings.source
    source.write_text(source.read_text() + '\n[idle]\nstop_after_minutes = 30\naction = "stop"\n')
    daemon._on_signal(signal.SIGHUP)
    assert daemon.reload.result == "applied" and daemon.jupyter.pid == pid
    driver.until(lambda: daemon.idle.due is not None, "the idle clock running")
    written = json.loads((daemon.settings.runtime_dir / "status.json").read_text())
    assert written["idle_seconds"] is not None and written["idle_action_at"]
