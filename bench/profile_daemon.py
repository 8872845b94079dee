"""Where the daemon's start time and resident memory go, for the goals the figures miss.

- the daemon's own steps before it spawns Jupyter, timed in a fresh interpreter (every function of
  the preparing modules it calls, up to `child.spawn_jupyter`, which is stopped there);
- the entry point's share: `jupyter-remote run` reaches the daemon through supervisor.entry;
- `-X importtime` of the daemon, by top-level package (self time);
- RSS of a fresh interpreter after each third-party package the daemon holds, then the daemon entire.
"""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
from harness import Daemon, Lab

DAEMON = "supervisor.daemon"  # `jupyter-remote run` calls supervisor.daemon.main via supervisor.entry
RSS_PROBE = "import re; print(re.search(r'VmRSS:\\s+(\\d+)', open('/proc/self/status').read()).group(1))"
UNTIL_SPAWN = """
import json, pathlib, sys, time
began = time.perf_counter()
import supervisor.daemon as daemon
steps = {"import supervisor.daemon": time.perf_counter() - began}
import psutil
child = sys.modules["supervisor.child"]


def timed(owner, name, label):
    function = getattr(owner, name)

    def wrapper(*args, **kwargs):
        t = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            steps[label] = steps.get(label, 0.0) + time.perf_counter() - t

    setattr(owner, name, wrapper)


for module_name in ("supervisor.prepare", "supervisor.loading", "supervisor.layout",
                    "supervisor.passwords", "supervisor.kernel_env", "supervisor.tls.watch"):
    module = sys.modules[module_name]
    for name, value in list(vars(module).items()):
        if callable(value) and not isinstance(value, type) and not name.startswith("_") \\
                and getattr(value, "__module__", "") == module_name:
            timed(module, name, f"{module_name.removeprefix('supervisor.')}.{name} (inclusive)")
for name in ("_adopt",):
    timed(daemon.Daemon, name, f"Daemon.{name} (inclusive)")


class Spawned(BaseException):  # not an Exception: the daemon's fail-closed handler lets it pass
    pass


def spawn(*args, **kwargs):
    raise Spawned


child.spawn_jupyter = spawn
loading = sys.modules["supervisor.loading"]
t = time.perf_counter()
try:
    daemon.Daemon(loading.load_isolated(pathlib.Path(sys.argv[1]))).run()
except Spawned:
    pass
steps["from daemon.run() to spawning Jupyter (all)"] = time.perf_counter() - t
for process in psutil.Process().children():  # a kernel-environment job, say: let it finish
    process.wait(120)
print(json.dumps(steps))
"""


def _median_seconds(argv: list[str], runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def start_steps(settings: Path) -> dict[str, float]:
    """Seconds of each step before Jupyter is spawned (medians of 3 fresh interpreters)."""
    runs = []
    for _ in range(3):
        result = subprocess.run([sys.executable, "-c", UNTIL_SPAWN, str(settings)], capture_output=True, text=True,
                                check=False)
        if result.returncode:
            raise RuntimeError(f"timing the daemon's start failed: {result.stderr[-2000:]}")
        runs.append(json.loads(result.stdout.splitlines()[-1]))
    steps = {
        "python -c pass (an interpreter's start)": _median_seconds([sys.executable, "-c", "pass"]),
        "import supervisor.entry (the console script's entry, before the daemon)":
            _median_seconds([sys.executable, "-c", "import supervisor.entry"]),
    }
    steps.update({key: statistics.median(r.get(key, 0.0) for r in runs) for key in runs[0]})
    return steps


def import_times() -> dict[str, Any]:
    """What the daemon imports, as import time (ms, self) summed by top-level package."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {DAEMON}"],
                            capture_output=True, text=True, check=True)
    totals: Counter[str] = Counter()
    for line in result.stderr.splitlines():
        found = re.match(r"import time:\s+(\d+) \|\s+\d+ \| +(\S+)", line)
        if found:
            totals[found.group(2).split(".")[0]] += int(found.group(1)) / 1000
    return {"total_ms": sum(totals.values()), "by_package": totals.most_common(8)}


def _rss(code: str) -> float:
    result = subprocess.run([sys.executable, "-c", f"{code}\n{RSS_PROBE}"], capture_output=True, text=True,
                            check=True)
    return int(result.stdout.split()[-1]) / 1024


def rss_steps() -> list[tuple[str, float]]:
    """RSS (MiB) of a fresh interpreter: alone, then with each package the daemon holds, added in turn."""
    # What a bare interpreter has already loaded (site's hooks) is not the daemon's.
    code = ("import sys; before = set(sys.modules); import " + DAEMON + "; print(' '.join(sorted("
            "{m.split('.')[0] for m in set(sys.modules) - before} - set(sys.stdlib_module_names) - {'supervisor'})))")
    listing = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    third_party = listing.stdout.split()
    rows = [("python alone", _rss("pass"))]
    imported: list[str] = []
    for name in ("ssl", "http.client", "concurrent.futures", *third_party):
        imported.append(name)
        rows.append((f"+ {name}", _rss(f"import {', '.join(imported)}")))
    rows.append((f"+ {DAEMON} (the daemon entire)", _rss(f"import {', '.join(imported)}, {DAEMON}")))
    return rows


def helpers_during_start(lab: Lab, watch: float = 3.0) -> list[dict[str, Any]]:
    """Our own helper processes (python -m supervisor.*) the daemon runs while Jupyter starts, which
    share the machine's cores with it: how long each lived and the CPU it used (sampled every 20 ms)."""
    daemon = Daemon(lab, lab.settings("helpers")).start()
    seen: dict[int, dict[str, Any]] = {}
    try:
        until = time.monotonic() + watch
        ready_at = None
        while time.monotonic() < until or ready_at is None:
            for process in psutil.Process(daemon.pid).children(recursive=True):
                try:
                    command = " ".join(process.cmdline())
                    if "supervisor." not in command:
                        continue
                    cpu = process.cpu_times()
                    row = seen.setdefault(process.pid, {"command": command.split(" -m ")[-1][:60],
                                                        "first": time.monotonic() - daemon.started})
                    row.update(last=time.monotonic() - daemon.started,
                               cpu_s=cpu.user + cpu.system + cpu.children_user + cpu.children_system)
                except psutil.Error:
                    continue
            if ready_at is None and daemon.process and daemon.process.notify and \
                    daemon.process.notify.count("READY=1"):
                ready_at = time.monotonic() - daemon.started
                until = time.monotonic() + 1.0
            time.sleep(0.02)
    finally:
        daemon.stop()
    return [{"command": r["command"], "from_s": r["first"], "to_s": r["last"], "cpu_s": r["cpu_s"],
             "ready_s": ready_at} for r in seen.values()]


def run(lab: Lab, tools: Path) -> dict[str, Any]:
    return {"start_s": start_steps(lab.settings("profile")), "imports": import_times(), "rss_mib": rss_steps(),
            "helpers": helpers_during_start(lab)}
