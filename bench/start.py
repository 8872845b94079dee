"""1. Start to serving: daemon start -> READY=1, against bare `jupyter lab` start -> first 200 on /api.

Both are polled for /api every 5 ms from the moment they start, so the daemon's own gap between
Jupyter's first answer and READY=1 is measured too. Rounds alternate daemon, bare, daemon, bare.
"""

from __future__ import annotations

import re
import time
from datetime import datetime
from typing import Any

from harness import BareJupyter, Daemon, FirstAnswerWatch, Lab, median

SPAWNED = re.compile(r"^(\S+ \S+) INFO Jupyter started as", re.MULTILINE)


def run(lab: Lab, rounds: int) -> dict[str, Any]:
    settings = lab.settings("start")
    bare = BareJupyter(lab, "bare-start")
    context = lab.context()
    rows: list[dict[str, float]] = []
    for index in range(rounds + 1):  # the first round warms the page cache and bytecode: not counted
        row: dict[str, float] = {}
        daemon = Daemon(lab, settings)
        wall = time.time()
        daemon.start()
        watch = FirstAnswerWatch(daemon.port, context, pid_of=daemon.jupyter_pid)
        try:
            ready = daemon.ready()
            first = watch.wait()
            row.update(daemon_ready=ready - daemon.started, daemon_first=first - daemon.started,
                       gap=ready - first, spawn_delay=_spawn_delay(daemon.log(), wall),
                       daemon_jupyter_cpu=watch.cpu_seconds)
        finally:
            daemon.stop()
        bare.start()
        watch = FirstAnswerWatch(bare.port, context, pid_of=lambda: bare.pid)
        try:
            row["bare_first"] = watch.wait() - bare.started
            row["bare_jupyter_cpu"] = watch.cpu_seconds
        finally:
            bare.stop()
        if index:
            rows.append(row)
        print(f"  start round {index}{' (warm-up)' if not index else ''}: "
              + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    figures = {key: median([r[key] for r in rows]) for key in rows[0]}
    figures["ratio"] = figures["daemon_ready"] / figures["bare_first"]
    figures["gap_max"] = max(r["gap"] for r in rows)
    return {"rounds": rows, "median": figures}


def _spawn_delay(log: str, wall_start: float) -> float:
    """Seconds from starting the daemon until it spawned Jupyter, from its own log line's stamp."""
    found = SPAWNED.search(log)
    if not found:
        return float("nan")
    stamp = datetime.strptime(found.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    return stamp - wall_start
