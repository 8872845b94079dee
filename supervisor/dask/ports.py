"""The local cluster's two loopback ports, kept in the runtime folder so that a reload which does
not restart Jupyter renders the ports its cluster already listens on."""

from __future__ import annotations

import contextlib
import json
import socket
from pathlib import Path

from supervisor.dask.plan import LocalPorts
from supervisor.files import write_atomic


def local_ports(runtime_dir: Path, starting: bool) -> LocalPorts:
    """The recorded ports; new free ones when there are none, or when `starting` (no cluster of
    ours runs) finds a recorded one taken by another program."""
    record = runtime_dir / "dask-ports.json"
    try:
        ports = LocalPorts(**json.loads(record.read_text()))
    except (OSError, ValueError, TypeError):
        ports = None
    if ports is None or (starting and not all(map(_free, (ports.scheduler, ports.dashboard)))):
        ports = LocalPorts(*_pick_free(2))
        write_atomic(record, json.dumps(ports.__dict__).encode(), mode=0o644)
    return ports


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _pick_free(count: int) -> list[int]:
    with contextlib.ExitStack() as held:  # held together: two different ports
        sockets = [held.enter_context(socket.socket()) for _ in range(count)]
        for probe in sockets:
            probe.bind(("127.0.0.1", 0))
        return [probe.getsockname()[1] for probe in sockets]
