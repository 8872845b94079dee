"""The settings as the rest of jupyter-remote uses them: plain, validated data and the paths it implies.

Validation lives in supervisor.schema (pydantic). The resident daemon validates in a short-lived
child (load_isolated), so it never holds pydantic; commands validate in their own process (load).
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

DEFAULT_SETTINGS_PATH = Path("/etc/jupyter-remote/settings.toml")
DEFAULT_STATE_DIR = Path("/var/lib/jupyter-remote")
DEFAULT_RUNTIME_DIR = Path("/run/jupyter-remote")
_SALTED_HASH = re.compile(r"^(sha1|sha256|sha512):[0-9a-f]+:[0-9a-f]+$")
SECTIONS = ("server", "auth", "tls", "kernel", "supervise", "paths")


class Settings:
    """Validated settings: `settings.server.port` and so on, plus the paths they imply.

    Sections compare equal when every key does, which is how a reload tells what changed.
    """

    server: SimpleNamespace
    auth: SimpleNamespace
    tls: SimpleNamespace
    kernel: SimpleNamespace
    supervise: SimpleNamespace
    paths: SimpleNamespace

    def __init__(self, sections: dict[str, dict[str, Any]], source: Path) -> None:
        for name, values in sections.items():
            setattr(self, name, SimpleNamespace(**values))
        self.source = source  # relative paths in the file are relative to its folder

    @property
    def password_path(self) -> Path:
        return self.source.parent / self.auth.password_file

    @property
    def initial_password_path(self) -> Path:
        return self.source.parent / "initial-password"

    @property
    def state_dir(self) -> Path:
        return _directory(self.paths.state_dir, "STATE_DIRECTORY", DEFAULT_STATE_DIR)

    @property
    def runtime_dir(self) -> Path:
        return _directory(self.paths.runtime_dir, "RUNTIME_DIRECTORY", DEFAULT_RUNTIME_DIR)

    @property
    def tls_enabled(self) -> bool:
        return self.tls.mode != "off"


def load(path: Path, *, euid: int | None = None) -> Settings:
    """Read and validate one settings file; raises SettingsError with every problem, one a line."""
    from supervisor import schema

    return schema.load(path, euid=euid)


def load_isolated(path: Path) -> Settings:
    """`load` in a short-lived child, so that pydantic never stays resident in the caller."""
    from supervisor import isolated

    return Settings(isolated.call(_sections, path), path)


def _sections(path: Path) -> dict[str, dict[str, Any]]:
    settings = load(path)
    return {name: vars(getattr(settings, name)) for name in SECTIONS}


def settings_path_from_env() -> Path:
    return Path(os.environ.get("JUPYTER_REMOTE_SETTINGS") or DEFAULT_SETTINGS_PATH)


def runtime_dir_hint(path: Path) -> Path:
    """The runtime folder of a daemon serving `path`, even when the file is now invalid.

    `reload` and `status` must still find a running daemon after an edit broke the file.
    """
    try:
        configured = tomllib.loads(path.read_text(encoding="utf-8")).get("paths", {}).get("runtime_dir", "")
    except (OSError, ValueError, AttributeError):
        configured = ""
    return _directory(configured if isinstance(configured, str) else "", "RUNTIME_DIRECTORY", DEFAULT_RUNTIME_DIR)


def _directory(configured: str, systemd_variable: str, default: Path) -> Path:
    if configured:
        return Path(configured)
    # systemd sets e.g. STATE_DIRECTORY=/var/lib/jupyter-remote (colon-separated when several).
    from_systemd = os.environ.get(systemd_variable, "").split(":")[0]
    return Path(from_systemd) if from_systemd else default


def is_loopback(ip: str) -> bool:
    return ipaddress.ip_address(ip).is_loopback


def looks_like_password_hash(value: str) -> bool:
    """The forms jupyter_server.auth.passwd_check accepts: argon2, or a salted hashlib digest."""
    return value.startswith("argon2:$argon2") or bool(_SALTED_HASH.match(value))
