"""5. Recovery: `kill -9` of Jupyter -> READY=1 again, and SIGSTOP of Jupyter -> detected (the hung
Jupyter is killed) -> READY=1 again, each against a cold start (daemon start -> READY=1) of the same
daemon just before it. Every round uses a fresh daemon whose Jupyter has served for a minute (the
contract restarts such a Jupyter at once; a crash loop waits 1 s doubling), so each recovery is the
one a user meets after a healthy run. health_interval is 1 s here (the default is 10 s).
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import psutil
from harness import Daemon, Lab, median, wait_until

from supervisor.states import Backoff

SETTLE = Backoff().stable_after + 1.0  # served long enough to be restarted at once


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _round(lab: Lab, settings: Any, how: str) -> dict[str, float]:
    daemon = Daemon(lab, settings).start()
    try:
        row = {"cold": daemon.ready() - daemon.started}
        time.sleep(SETTLE)
        pid = daemon.jupyter_pid()
        began = time.monotonic()
        if how == "kill":
            os.kill(pid, signal.SIGKILL)
        else:
            os.kill(pid, signal.SIGSTOP)
            detected = wait_until(lambda: _gone(pid) and time.monotonic(), 60, "the hung Jupyter replaced", 0.01)
            row["detect"] = detected - began
            began = detected
        row["recover"] = daemon.ready(after=1) - began
    finally:
        daemon.stop()
    return row


def run(lab: Lab, rounds: int) -> dict[str, Any]:
    settings = lab.settings("recovery", supervise={"health_interval": 1, "stop_timeout": 5})
    rows: dict[str, list[dict[str, float]]] = {"kill": [], "stop": []}
    for index in range(rounds):
        for how in ("kill", "stop"):
            rows[how].append(_round(lab, settings, how))
            print(f"  recovery {how} round {index}: {rows[how][-1]}", flush=True)
    figures: dict[str, Any] = {"rows": rows}
    for how, found in rows.items():
        cold = median([r["cold"] for r in found])
        recover = median([r["recover"] for r in found])
        figures[how] = {"cold_s": cold, "recover_s": recover, "ratio": recover / cold}
        if how == "stop":
            figures[how]["detect_s"] = median([r["detect"] for r in found])
    return figures
