"""The protocol between the running daemon and the commands: the status file, the reload verdict,
the password signal and the restart-pending marker. Commands import this, never the daemon.

    <runtime_dir>/status.json       DaemonStatus, rewritten atomically (0644: nothing secret in it)
    <runtime_dir>/restart-pending   written by the package's postinst on upgrade
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from supervisor.files import write_atomic

STATUS_FILE = "status.json"
RESTART_PENDING_FILE = "restart-pending"
# `jupyter-remote password` asks for the new password alone with this signal: SIGHUP would also
# apply any half-finished edit of the settings and perhaps restart Jupyter.
PASSWORD_SIGNAL = signal.SIGUSR1
RELOAD_SIGNAL = signal.SIGHUP


@dataclass(frozen=True)
class ReloadResult:
    """The verdict on the latest reload; `seq` counts reloads, so a waiting command sees its own."""

    seq: int = 0
    result: str = ""  # "applied" | "rejected"
    errors: tuple[str, ...] = ()

    def next(self, result: str, errors: tuple[str, ...] = ()) -> ReloadResult:
        return ReloadResult(self.seq + 1, result, errors)


@dataclass(frozen=True)
class DaemonStatus:
    """What `status` shows; the keys of `status --json` are the fields up to `restart_pending`."""

    state: str
    pid: int
    jupyter_pid: int | None
    url: str
    started: str
    restarts: int = 0
    cert_days_left: int | None = None
    last_error: str = ""
    idle_seconds: float | None = None
    idle_action_at: str | None = None
    restart_pending: str | None = None
    pid_created: float = 0.0  # tells our daemon from a process that got its pid later
    reload: ReloadResult = field(default_factory=ReloadResult)

    def public(self) -> dict[str, Any]:
        """The keys of `status --json`."""
        data = dataclasses.asdict(self)
        return {key: data[key] for key in PUBLIC_KEYS}

    @classmethod
    def stopped(cls) -> dict[str, Any]:
        return {key: ("stopped" if key == "state" else None) for key in PUBLIC_KEYS}


PUBLIC_KEYS = ("state", "pid", "jupyter_pid", "url", "started", "restarts", "cert_days_left",
               "last_error", "idle_seconds", "idle_action_at", "restart_pending")


def write(runtime_dir: Path, status: DaemonStatus) -> None:
    document = json.dumps(dataclasses.asdict(status), indent=1).encode()
    write_atomic(runtime_dir / STATUS_FILE, document, mode=0o644)


def read(runtime_dir: Path) -> DaemonStatus | None:
    try:
        data = json.loads((runtime_dir / STATUS_FILE).read_text())
        reload = data.pop("reload", {})
        return DaemonStatus(**data, reload=ReloadResult(reload["seq"], reload["result"],
                                                        tuple(reload["errors"])))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def running_daemon(runtime_dir: Path) -> DaemonStatus | None:
    """The status of a live daemon, or None: a stale file (pid gone or reused) counts as none."""
    status = read(runtime_dir)
    if status is None or status.state == "stopped":
        return None
    try:
        created = psutil.Process(status.pid).create_time()
    except psutil.Error:
        return None
    return status if abs(created - status.pid_created) <= 0.01 else None


def own_identity() -> tuple[int, float]:
    return os.getpid(), psutil.Process().create_time()


def restart_pending(runtime_dir: Path) -> str | None:
    """The version an upgrade installed, when it left a restart to the operator."""
    try:
        version = (runtime_dir / RESTART_PENDING_FILE).read_text().strip()
    except OSError:
        return None
    return version or "a new version"


def clear_restart_pending(runtime_dir: Path) -> None:
    """A starting daemon is the restart the marker asked for."""
    (runtime_dir / RESTART_PENDING_FILE).unlink(missing_ok=True)
