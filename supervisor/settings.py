"""The settings as the rest of jupyter-remote uses them: frozen, typed records, and the paths they
imply.

Validation lives in supervisor.schema (pydantic), which fills these records; supervisor.loading
runs it, in a short-lived child for the resident daemon, so the daemon never holds pydantic. This
module imports neither: it is plain data.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_SETTINGS_PATH = Path("/etc/jupyter-remote/settings.toml")
DEFAULT_STATE_DIR = Path("/var/lib/jupyter-remote")
DEFAULT_RUNTIME_DIR = Path("/run/jupyter-remote")
_SALTED_HASH = re.compile(r"^(sha1|sha256|sha512):[0-9a-f]+:[0-9a-f]+$")


@dataclass(frozen=True)
class Server:
    ip: str = "0.0.0.0"
    port: int = 8888
    default_url: str = "/lab"
    base_url: str = "/"
    root_dir: str = ""
    user: str = "jupyter-remote"
    jupyter: str = ""
    extra_args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Auth:
    password_file: str = "password"
    password_hash: str = ""
    rate_limit_per_minute: int = 10


@dataclass(frozen=True)
class Tls:
    mode: str = "self-signed"
    hostnames: tuple[str, ...] = ()
    validity_days: int = 365
    renew_before_days: int = 30
    cloud_metadata: bool = True
    cert_file: str = ""
    key_file: str = ""
    acme_directory: str = "https://acme-v02.api.letsencrypt.org/directory"
    acme_email: str = ""
    acme_http_port: int = 80
    acme_ca_bundle: str = ""


@dataclass(frozen=True)
class Kernel:
    python: str = ""
    packages: tuple[str, ...] = ()
    cull_idle_minutes: int = 0


@dataclass(frozen=True)
class Dask:
    enabled: bool = False
    cluster: str = "local"  # "local" | "tls://host:port" | "tcp://host:port"

    @property
    def local(self) -> bool:
        return self.cluster == "local"


@dataclass(frozen=True)
class Idle:
    stop_after_minutes: float = 0  # 0 = never
    action: str = "poweroff"  # "poweroff" | "stop"
    warn_minutes: float = 10


@dataclass(frozen=True)
class Supervise:
    start_timeout: float = 120
    health_interval: float = 10
    stop_timeout: float = 10


@dataclass(frozen=True)
class Paths:
    state_dir: str = ""
    runtime_dir: str = ""


@dataclass(frozen=True)
class Settings:
    """Validated settings, plus the paths they imply.

    Sections compare equal when every key does, which is how a reload tells what changed.
    """

    source: Path  # relative paths in the file are relative to its folder
    server: Server = Server()
    auth: Auth = Auth()
    tls: Tls = Tls()
    kernel: Kernel = Kernel()
    dask: Dask = Dask()
    idle: Idle = Idle()
    supervise: Supervise = Supervise()
    paths: Paths = Paths()

    @classmethod
    def from_sections(cls, sections: dict[str, dict[str, Any]], source: Path) -> Settings:
        """From plain data (a validated model's dump, or what a child sent back as JSON)."""
        built = {}
        for field in dataclasses.fields(cls):
            if field.name == "source":
                continue
            section_type = SECTION_TYPES[field.name]
            values = {key: tuple(value) if isinstance(value, list) else value
                      for key, value in sections.get(field.name, {}).items()}
            built[field.name] = section_type(**values)
        return cls(source=source, **built)

    def sections(self) -> dict[str, dict[str, Any]]:
        """Plain data, the inverse of from_sections: what crosses a process boundary."""
        return {name: dataclasses.asdict(getattr(self, name)) for name in SECTION_TYPES}

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


SECTION_TYPES: dict[str, type] = {
    "server": Server, "auth": Auth, "tls": Tls, "kernel": Kernel, "dask": Dask, "idle": Idle,
    "supervise": Supervise,
    "paths": Paths,
}


def needs_restart(old: Settings, new: Settings) -> bool:
    """Whether applying `new` over `old` restarts Jupyter: everything else applies live. [dask]
    is in Jupyter's environment, which its kernels and its local cluster inherit at their start."""
    return (new.server != old.server or new.paths != old.paths or new.dask != old.dask
            or challenge_socket_changes(old, new))


def challenge_socket_changes(old: Settings, new: Settings) -> bool:
    """Whether acme mode's HTTP-01 socket, which Jupyter inherits at its start, is another one."""
    def wanted(settings: Settings) -> tuple[str, int] | None:
        tls = settings.tls
        if tls.mode != "acme" or not tls.acme_http_port:
            return None
        return settings.server.ip, tls.acme_http_port

    return wanted(old) != wanted(new)


def settings_path_from_env() -> Path:
    return Path(os.environ.get("JUPYTER_REMOTE_SETTINGS") or DEFAULT_SETTINGS_PATH)


def runtime_dir_hint(path: Path) -> Path:
    """The runtime folder of a daemon serving `path`, even when the file is now invalid.

    `reload` and `status` must still find a running daemon after an edit broke the file.
    """
    try:
        paths = tomllib.loads(path.read_text(encoding="utf-8")).get("paths", {})
        configured = paths.get("runtime_dir", "")
    except (OSError, ValueError, AttributeError):
        configured = ""
    return _directory(configured if isinstance(configured, str) else "", "RUNTIME_DIRECTORY",
                      DEFAULT_RUNTIME_DIR)


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
