"""[dask] cluster = "local": one LocalCluster for every notebook, run by the notebooks' Python.

    python local_cluster.py SCHEDULER_PORT DASHBOARD_PORT

Started by jupyter-remote's extension inside Jupyter, which holds our stdin: we stop when it
closes (Jupyter ended) or on SIGTERM. Scheduler, workers and dashboard listen on 127.0.0.1 only;
distributed's TLS settings (DASK_* variables from jupyter-remote) make every connection mutual TLS
with the cluster's own CA. The size is LocalCluster's own default (by the machine's cores), or the
`jupyter-remote.local-cluster` keys n_workers, threads_per_worker and memory_limit of the account's
Dask configuration (~/.config/dask/*.yaml).

This file runs as a script in any Python with distributed: it imports nothing of jupyter-remote.
"""

import signal
import sys

SIZE_KEYS = ("n_workers", "threads_per_worker", "memory_limit")


def main():
    scheduler_port, dashboard_port = int(sys.argv[1]), int(sys.argv[2])
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
    cluster = LocalCluster(host="127.0.0.1", scheduler_port=scheduler_port,
                           dashboard_address=f"127.0.0.1:{dashboard_port}",
                           worker_dashboard_address=None, **options)
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
