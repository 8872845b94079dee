"""9. [dask]: what the dashboard behind the login costs, and what [dask] adds to a server.

- A dashboard request through jupyter-remote (HTTPS, the login's cookie, jupyter-server-proxy and
  its gate) against the same request straight to the dashboard's loopback port (what an SSH tunnel
  or an open port gives): a small JSON answer and a pane's HTML page, on kept-alive sessions as a
  browser uses them, alternating.
- Start → READY=1 with [dask] (the local cluster starts beside Jupyter) against without.
- Jupyter's RSS with [dask] (jupyter-server-proxy loaded) against without, and the local cluster's
  own RSS (scheduler and workers: the price of having it up).
"""

from __future__ import annotations

import json
import time
from typing import Any

import psutil
import requests
from harness import Daemon, Lab, logged_in, median

PATHS = {"json": "/individual-plots.json", "pane": "/individual-task-stream"}
SETTLE_S = 5.0


def _cluster(jupyter_pid: int) -> list[psutil.Process]:
    for process in psutil.Process(jupyter_pid).children():
        if any("local_cluster.py" in part for part in process.cmdline()):
            return [process, *process.children(recursive=True)]
    return []


def _rss_mib(processes: list[psutil.Process]) -> float:
    return sum(p.memory_info().rss for p in processes) / 2**20


def _timed_get(session: requests.Session, url: str) -> float:
    began = time.monotonic()
    response = session.get(url, timeout=30)
    elapsed = time.monotonic() - began
    if response.status_code != 200:
        raise RuntimeError(f"{url}: HTTP {response.status_code}")
    return elapsed


def run(lab: Lab, rounds: int) -> dict[str, Any]:
    with_dask = lab.settings("dask", dask={"enabled": True})
    without = lab.settings("nodask")
    starts: dict[str, list[float]] = {"dask": [], "nodask": []}
    for index in range(rounds + 1):  # the first of each warms the page cache: not counted
        for name, settings in (("dask", with_dask), ("nodask", without))[::1 if index % 2 else -1]:
            daemon = Daemon(lab, settings).start()
            try:
                ready = daemon.ready() - daemon.started
            finally:
                daemon.stop()
            if index:
                starts[name].append(ready)

    plain = Daemon(lab, without).start()
    daemon = Daemon(lab, with_dask).start()
    try:
        plain.ready()
        daemon.ready()
        ports = json.loads((lab.folder / "run-dask" / "dask-ports.json").read_text())
        direct = requests.Session()
        direct.trust_env = False
        base = f"http://127.0.0.1:{ports['dashboard']}"
        deadline = time.monotonic() + 120
        while True:
            try:
                if direct.get(base + PATHS["json"], timeout=5).status_code == 200:
                    break
            except requests.RequestException:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the local cluster's dashboard did not answer in 120 s")
            time.sleep(0.5)
        proxied = logged_in(lab, daemon.port).session
        through = f"https://127.0.0.1:{daemon.port}/proxy/{ports['dashboard']}"
        times: dict[str, dict[str, list[float]]] = {kind: {"proxied": [], "direct": []} for kind in PATHS}
        for index in range(rounds * 10 + 1):
            for kind, path in PATHS.items():
                pair = [("proxied", proxied, through), ("direct", direct, base)]
                for name, session, root in pair[::1 if index % 2 else -1]:
                    elapsed = _timed_get(session, root + path)
                    if index:
                        times[kind][name].append(elapsed)
        time.sleep(SETTLE_S)
        jupyter = {"dask": _rss_mib([psutil.Process(daemon.jupyter_pid())]),
                   "nodask": _rss_mib([psutil.Process(plain.jupyter_pid())])}
        cluster = _cluster(daemon.jupyter_pid())
        cluster_rss = _rss_mib(cluster)
    finally:
        daemon.stop()
        plain.stop()
    figures: dict[str, Any] = {"starts": starts, "times": times}
    for kind, pair in times.items():
        figures[kind] = {name: median(values) * 1e3 for name, values in pair.items()}
        figures[kind]["ratio"] = figures[kind]["proxied"] / figures[kind]["direct"]
    figures["start"] = {name: median(values) for name, values in starts.items()}
    figures["start"]["ratio"] = figures["start"]["dask"] / figures["start"]["nodask"]
    figures["jupyter_rss_mib"] = {**jupyter, "ratio": jupyter["dask"] / jupyter["nodask"]}
    figures["cluster"] = {"rss_mib": cluster_rss, "processes": len(cluster)}
    return figures
