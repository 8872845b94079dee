"""The Jupyter server configuration, as a pure function of the settings.

It is written as JSON, never as Python, so that no settings value can become code.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor.settings import Settings

EXTENSION = "jupyter_remote_ext"
# Enabled by name so that a stray config elsewhere cannot switch them off; notebook serves /tree.
SERVER_EXTENSIONS = ("jupyterlab", "notebook", "jupyter_server_terminals", "jupyter_lsp", "notebook_shim")


@dataclass(frozen=True)
class JupyterInputs:
    """What the configuration needs besides the settings: the account, the secret and the TLS files."""

    home: Path
    hashed_password: str
    live_file: Path  # the channel through which the extension applies changes without a restart
    certfile: Path | None = None
    keyfile: Path | None = None
    events_socket: Path | None = None  # where the extension reports login attempts to the daemon


def root_dir(settings: Settings, home: Path) -> Path:
    return Path(settings.server.root_dir) if settings.server.root_dir else home / "notebooks"


def bind_address(ip: str) -> str:
    # tornado binds "::" IPv6-only; "" binds every address of both families.
    return "" if ip == "::" else ip


def render(settings: Settings, inputs: JupyterInputs) -> dict[str, Any]:
    server = settings.server
    server_app: dict[str, Any] = {
        "ip": bind_address(server.ip),
        "port": server.port,
        "port_retries": 0,  # a busy port is an error, never a silent move to another port
        "open_browser": False,
        "default_url": server.default_url,
        "base_url": server.base_url,
        "root_dir": str(root_dir(settings, inputs.home)),
        "allow_remote_access": True,
        "allow_root": False,
        "disable_check_xsrf": False,
        "quit_button": False,  # "Shut Down" would stop a server the daemon keeps up
        # The service account's login shell is nologin; terminals get a real one.
        "terminado_settings": {"shell_command": ["/bin/bash", "-l"]},
        "identity_provider_class": f"{EXTENSION}.RemoteIdentityProvider",
        "jpserver_extensions": {name: True for name in (*SERVER_EXTENSIONS, EXTENSION)},
    }
    if inputs.certfile and inputs.keyfile:
        server_app["certfile"] = str(inputs.certfile)
        server_app["keyfile"] = str(inputs.keyfile)
    config: dict[str, Any] = {
        "ServerApp": server_app,
        "IdentityProvider": {"token": ""},
        "PasswordIdentityProvider": {
            "hashed_password": inputs.hashed_password,
            "password_required": True,
            "allow_password_change": False,
        },
        "RemoteIdentityProvider": {
            "live_file": str(inputs.live_file),
            "rate_limit_per_minute": settings.auth.rate_limit_per_minute,
        },
    }
    if inputs.events_socket:
        config["RemoteIdentityProvider"]["events_socket"] = str(inputs.events_socket)
    if settings.kernel.cull_idle_minutes:
        config["MappingKernelManager"] = {
            "cull_idle_timeout": settings.kernel.cull_idle_minutes * 60,
            "cull_interval": 60,
            "cull_connected": True,  # an open but forgotten browser tab must not pin memory forever
        }
    return config


def live_values(settings: Settings, hashed_password: str) -> dict[str, Any]:
    """What the extension applies to a running server: everything a reload may change live."""
    return {
        "hashed_password": hashed_password,
        "rate_limit_per_minute": settings.auth.rate_limit_per_minute,
        "cull_idle_minutes": settings.kernel.cull_idle_minutes,
    }


def serving_url(settings: Settings) -> str:
    """The address to open in a browser, with base_url and default_url."""
    server = settings.server
    host = server.ip
    if host in ("0.0.0.0", "::"):
        host = socket.gethostname()
    elif ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_enabled else "http"
    return f"{scheme}://{host}:{server.port}{server.base_url}{server.default_url.lstrip('/')}"
