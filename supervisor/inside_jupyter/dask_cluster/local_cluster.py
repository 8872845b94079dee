"""[dask] cluster = "local": one LocalCluster for every notebook, run by the notebooks' Python.

    python local_cluster.py SCHEDULER_PORT DASHBOARD_PORT [ACTIVITY_FILE]

Started by jupyter-remote's extension inside Jupyter, which holds our stdin: we stop when it
closes (Jupyter ended) or on SIGTERM. While tasks run, we touch ACTIVITY_FILE (idle stop's record of
what users do): the daemon does not count this cluster's CPU, as an idle cluster's heartbeats use
about a tenth of a core. Scheduler, workers and dashboard listen on 127.0.0.1 only;
distributed's TLS settings (DASK_* variables from jupyter-remote) make every connection mutual TLS
with the cluster's own CA. The size is LocalCluster's own default (by the machine's cores), or the
`jupyter-remote.local-cluster` keys n_workers, threads_per_worker and memory_limit of the account's
Dask configuration (~/.config/dask/*.yaml).

This file runs as a script in any Python with distributed: it imports nothing of jupyter-remote.
"""

import os
import signal
import sys

SIZE_KEYS = ("n_workers", "threads_per_worker", "memory_limit")
BUSY_CHECK_MS = 1000
# distributed's dashboard routes, less its own proxy (distributed.http.proxy, present once
# jupyter-server-proxy is importable): its websocket reaches any host and port, for anyone who
# reaches the dashboard's loopback port.
DASHBOARD_ROUTES = ["distributed.http.scheduler.prometheus", "distributed.http.scheduler.info",
                    "distributed.http.scheduler.json", "distributed.http.health",
                    "distributed.http.statics"]


def has_work(scheduler):
    return bool(scheduler.queued or scheduler.unrunnable
                or any(worker.processing for worker in scheduler.workers.values()))


def report_work(cluster, activity_file):
    """On the cluster's own event loop, where its scheduler's state may be read."""
    from tornado.ioloop import PeriodicCallback

    def check():
        if has_work(cluster.scheduler):
            try:
                os.utime(activity_file)
            except OSError:
                pass  # not made yet: the extension makes it at its first write

    PeriodicCallback(check, BUSY_CHECK_MS).start()


def main():
    scheduler_port, dashboard_port = int(sys.argv[1]), int(sys.argv[2])
    activity_file = sys.argv[3] if len(sys.argv) > 3 else ""
    try:
        import dask
        from distributed import LocalCluster
    except ImportError as error:
        print(f"jupyter-remote: [dask] cluster = \"local\" needs distributed in {sys.executable} "
              f"({error}); install it: {sys.executable} -m pip install distributed",
              file=sys.stderr, flush=True)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    size = dask.config.get("jupyter-remote.local-cluster", {}) or {}
    options = {key: size[key] for key in SIZE_KEYS if key in size}
    dask.config.set({"distributed.scheduler.http.routes": DASHBOARD_ROUTES})
    cluster = LocalCluster(host="127.0.0.1", scheduler_port=scheduler_port,
                           dashboard_address=f"127.0.0.1:{dashboard_port}",
                           worker_dashboard_address=None, **options)
    scheduler = cluster.scheduler
    assert scheduler is not None, "a LocalCluster runs its scheduler in this process"
    serving = scheduler.http_server.port
    if serving != dashboard_port:
        # distributed moves a dashboard whose port is taken, with a mere warning; the proxy
        # reaches this port alone, and whoever holds it is not this cluster.
        print(f"jupyter-remote: the local Dask cluster's dashboard port 127.0.0.1:{dashboard_port} "
              f"is taken by another program; stopping (distributed moved it to {serving})",
              file=sys.stderr, flush=True)
        cluster.close(timeout=10)
        return 3
    if activity_file:
        loop = cluster.loop
        assert loop is not None, "a LocalCluster made outside asyncio runs its own loop"
        loop.add_callback(report_work, cluster, activity_file)
    try:
        print(f"jupyter-remote: local Dask cluster up: scheduler {cluster.scheduler_address}, "
              f"{len(cluster.workers)} workers, distributed {dask.__version__}",
              file=sys.stderr, flush=True)
        sys.stdin.buffer.read()  # until Jupyter goes
    finally:
        cluster.close(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
