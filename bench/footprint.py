"""4. Supervisor footprint while idle, and 6. Stop, with 0, 5 and 20 running kernels: our daemon
against supervisord supervising the same `jupyter lab`.

Footprint is the supervising process alone (not Jupyter, not the kernels): RSS and PSS at the end
of an idle window, CPU seconds and wake-ups (context switches of all its threads, from
/proc/PID/task/*/status) during it. Stop is SIGTERM to the supervisor -> its exit, then every
process of the serving account still alive is a leftover.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

from harness import (
    BareJupyter,
    Daemon,
    Lab,
    Supervisord,
    logged_in,
    proc_sample,
    processes_of,
    start_kernels,
    wait_serving,
)
from support import kill_all

SETTLE = 5.0  # seconds after the kernels are idle before the window opens


def _measure(lab: Lab, supervisor_pid: int, port: int, kernels: int, window: float) -> dict[str, Any]:
    client = logged_in(lab, port)
    start_kernels(client, kernels)
    time.sleep(SETTLE)
    before = proc_sample(supervisor_pid)
    time.sleep(window)
    after = proc_sample(supervisor_pid)
    seconds = after.at - before.at
    return {
        "rss_mib": after.rss_kib / 1024, "pss_mib": after.pss_kib / 1024,
        "cpu_ms_per_min": (after.cpu_seconds - before.cpu_seconds) / seconds * 60e3,
        "wakeups_per_s": (after.switches - before.switches) / seconds,
        "account_processes": len(processes_of(lab.account.uid)),
    }


def _stop(lab: Lab, process: subprocess.Popen[bytes]) -> dict[str, Any]:
    began = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(60)
    except subprocess.TimeoutExpired:
        code = None
    seconds = time.monotonic() - began
    time.sleep(0.5)  # a kernel that outlives its parent is still there half a second later
    leftovers = processes_of(lab.account.uid)
    kill_all(leftovers)
    return {"stop_s": seconds, "exit_code": code, "leftovers": len(leftovers)}


def daemon_round(lab: Lab, kernels: int, window: float) -> dict[str, Any]:
    daemon = Daemon(lab, lab.settings("footprint")).start()
    try:
        daemon.ready()
        result = _measure(lab, daemon.pid, daemon.port, kernels, window)
        assert daemon.process and daemon.process.process
        result.update(_stop(lab, daemon.process.process))
    finally:
        daemon.stop()
    return result


def supervisord_round(lab: Lab, bare: BareJupyter, kernels: int, window: float) -> dict[str, Any]:
    supervisord = Supervisord(lab, bare).start()
    try:
        wait_serving(supervisord.port, lab.context())
        result = _measure(lab, supervisord.pid, supervisord.port, kernels, window)
        assert supervisord.process
        result.update(_stop(lab, supervisord.process))
    finally:
        supervisord.stop()
    return result


def run(lab: Lab, counts: tuple[int, ...], window: float) -> dict[str, Any]:
    bare = BareJupyter(lab, "bare-supervisord")
    results: dict[str, Any] = {"window_s": window, "daemon": {}, "supervisord": {}}
    for kernels in counts:
        results["daemon"][kernels] = daemon_round(lab, kernels, window)
        print(f"  footprint daemon, {kernels} kernels: {results['daemon'][kernels]}", flush=True)
        results["supervisord"][kernels] = supervisord_round(lab, bare, kernels, window)
        print(f"  footprint supervisord, {kernels} kernels: {results['supervisord'][kernels]}", flush=True)
    return results
