"""2. New TLS connections: TCP connect + TLS handshake + GET /api on a fresh connection each time,
against the daemon's Jupyter (one in-memory SSLContext) and stock Jupyter given certfile/keyfile
(tornado builds a new SSLContext, reading both files, for every connection).

Both servers run at once and serve the same certificate; blocks of connections alternate between
them. The server's own CPU time per connection is read from /proc as well: it is the cost the
client's overhead cannot blur.
"""

from __future__ import annotations

from typing import Any

from harness import (
    BareJupyter,
    Daemon,
    Lab,
    fresh_request,
    median,
    percentile,
    proc_sample,
    wait_serving,
)

BLOCK = 50


def run(lab: Lab, connections: int) -> dict[str, Any]:
    context = lab.context()
    daemon = Daemon(lab, lab.settings("tls")).start()
    bare = BareJupyter(lab, "bare-tls")
    try:
        daemon.ready()
        bare.start()
        wait_serving(bare.port, context)
        servers = {"daemon": (daemon.port, daemon.jupyter_pid()), "bare": (bare.port, bare.pid)}
        times: dict[str, list[float]] = {name: [] for name in servers}
        failures = {name: 0 for name in servers}
        cpu = {name: 0.0 for name in servers}
        for port, _ in servers.values():  # warm-up: not counted
            for _ in range(BLOCK):
                fresh_request(port, context)
        for _ in range(max(1, connections // BLOCK)):
            for name, (port, pid) in servers.items():
                before = proc_sample(pid).cpu_seconds
                for _ in range(BLOCK):
                    reply = fresh_request(port, context)
                    if reply.ok:
                        times[name].append(reply.seconds)
                    else:
                        failures[name] += 1
                cpu[name] += proc_sample(pid).cpu_seconds - before
    finally:
        bare.stop()
        daemon.stop()
    figures: dict[str, Any] = {}
    for name, values in times.items():
        count = len(values) + failures[name]
        figures[name] = {
            "connections": count, "failed": failures[name],
            "median_ms": median(values) * 1e3, "p99_ms": percentile(values, 0.99) * 1e3,
            "server_cpu_ms": cpu[name] / count * 1e3,
        }
    for key in ("median_ms", "p99_ms", "server_cpu_ms"):
        figures[f"speedup_{key}"] = figures["bare"][key] / figures["daemon"][key]
    return figures
