"""The status file the daemon keeps in the runtime folder, read by `status` and `reload`."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psutil

from supervisor.files import write_atomic

STATUS_FILE = "status.json"


def write(runtime_dir: Path, data: dict[str, Any]) -> None:
    write_atomic(runtime_dir / STATUS_FILE, json.dumps(data, indent=1).encode(), mode=0o644)


def read(runtime_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((runtime_dir / STATUS_FILE).read_text())
    except (OSError, ValueError):
        return None


def running_daemon(runtime_dir: Path) -> dict[str, Any] | None:
    """The status of a live daemon, or None: a stale file (pid gone or reused) counts as none."""
    data = read(runtime_dir)
    if not data or data.get("state") == "stopped":
        return None
    try:
        process = psutil.Process(int(data["pid"]))
        # The creation time tells our daemon from an unrelated process that got its pid later.
        if abs(process.create_time() - float(data["pid_created"])) > 0.01:
            return None
    except (psutil.Error, KeyError, ValueError, TypeError):
        return None
    return data


def own_identity() -> dict[str, Any]:
    return {"pid": os.getpid(), "pid_created": psutil.Process().create_time()}
