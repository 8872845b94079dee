"""The Jupyter server configuration, as a pure function of the settings.

It is written as JSON, never as Python, so that no settings value can become code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from supervisor import public_address
from supervisor.dask.plan import DaskPlan, extension_config, lab_settings
from supervisor.public_address import Candidates, choose
from supervisor.settings import Settings
from supervisor.tls.store import challenge_dir

EXTENSION = "jupyter_remote_ext"
# The front-end piece of the idle warning: prebuilt, found through
# LabServerApp.extra_labextensions_path.
LABEXTENSIONS = Path(__file__).parent / "inside_jupyter" / "labextensions"
# Enabled by name so that a stray config elsewhere cannot switch them off; notebook serves /tree.
SERVER_EXTENSIONS = (
    "jupyterlab", "notebook", "jupyter_server_terminals", "jupyter_lsp", "notebook_shim")
# [dask]: dask-labextension's server side stays off: its cluster manager runs clusters in Jupyter's
# own environment on every address, and its dashboard proxy forwards the login cookie. Its front
# end works without it (supervisor.dask.plan.lab_settings). jupyter-server-proxy's extension stays
# off too: the extension adds the one route of it the dashboard needs (dask_gate.py), and its
# launcher entries would have nothing to launch.
OFF_EXTENSIONS = ("jupyter_server_proxy", "dask_labextension")


@dataclass(frozen=True)
class JupyterInputs:
    """What the configuration needs besides the settings: the account, the secret, the TLS
    files."""

    home: Path
    hashed_password: str
    live_file: Path  # the channel through which the extension applies changes without a restart
    terminal_rc: Path  # read by the shell of JupyterLab terminals (supervisor.terminal)
    display_url: str = ""  # serving_url: what Jupyter's own "running at" line shows
    certfile: Path | None = None
    keyfile: Path | None = None
    # acme mode: the HTTP-01 listening socket the daemon bound (tls/challenge_socket.py) and passes
    # to Jupyter under the same number (child.spawn_jupyter pass_fds); None = TLS-ALPN-01 only.
    acme_http_fd: int | None = None
    events_socket: Path | None = None  # where the extension reports login attempts to the daemon
    dask: DaskPlan | None = None  # [dask] enabled


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
        # The service account's login shell is nologin; terminals get a real one. Not `bash -l`:
        # a login bash ignores --rcfile, and that file reads the login files itself.
        "terminado_settings": {"shell_command": ["/bin/bash", "--rcfile", str(inputs.terminal_rc),
                                                 "-i"]},
        "identity_provider_class": f"{EXTENSION}.RemoteIdentityProvider",
        "jpserver_extensions": {
            **{name: True for name in (*SERVER_EXTENSIONS, EXTENSION)},
            **{name: False for name in OFF_EXTENSIONS},
        },
    }
    if inputs.display_url:
        server_app["custom_display_url"] = inputs.display_url
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
        # A server that phones out nowhere: no news feed, no version check against PyPI, even
        # when a user turns them on in the settings (lab_setting_overrides turns them off).
        "LabApp": {
            "news_url": None,
            "check_for_updates_class": "jupyterlab.handlers.announcements.NeverCheckForUpdate",
        },
        "RemoteIdentityProvider": {
            "live_file": str(inputs.live_file),
            "rate_limit_per_minute": settings.auth.rate_limit_per_minute,
        },
        # Always: enabling [idle] on reload then needs no restart.
        "JupyterRemoteIdle": {
            "activity_file": str(activity_file(settings)),
            "notice_file": str(notice_file(settings)),
        },
        "LabServerApp": {"extra_labextensions_path": [str(LABEXTENSIONS)]},
    }
    if settings.tls.mode == "acme":
        # The extension answers the CA's challenges from the folder the daemon publishes them in.
        config["AcmeChallenges"] = {
            "folder": str(challenge_dir(settings.state_dir)),
            "http_fd": inputs.acme_http_fd if inputs.acme_http_fd is not None else -1,
        }
    if inputs.events_socket:
        config["RemoteIdentityProvider"]["events_socket"] = str(inputs.events_socket)
    if inputs.dask:
        config["DaskGate"] = extension_config(inputs.dask)
    if settings.kernel.cull_idle_minutes:
        config["MappingKernelManager"] = {
            "cull_idle_timeout": settings.kernel.cull_idle_minutes * 60,
            "cull_interval": 60,
            "cull_connected": True,  # an open but forgotten browser tab must not pin memory forever
        }
    return config


def lab_setting_overrides(dask: DaskPlan | None = None) -> dict[str, Any]:
    """JupyterLab's setting defaults (labconfig/default_setting_overrides.json): news and update
    checks off, so JupyterLab does not ask "Would you like to get notified about official Jupyter
    news?" (it asks while fetchNews is "none"); a user may still change them in Settings."""
    return {"@jupyterlab/apputils-extension:notification": {"fetchNews": "false",
                                                            "checkForUpdates": False},
            **lab_settings(dask)}


def lab_page_config(dask: DaskPlan | None) -> dict[str, Any]:
    """labconfig/page_config.json: without [dask], JupyterLab shows no Dask panel."""
    return {"disabledExtensions": {"dask-labextension": dask is None,
                                   "@jupyterhub/jupyter-server-proxy": True}}


def activity_file(settings: Settings) -> Path:
    """Where the extension records the time of the last user act: in a folder the account owns."""
    return settings.runtime_dir / "activity" / "last"


def notice_file(settings: Settings) -> Path:
    """The idle warning the daemon writes for open JupyterLabs (beside the rendered config)."""
    return settings.runtime_dir / "jupyter" / "idle.json"


def live_values(settings: Settings, hashed_password: str) -> dict[str, Any]:
    """What the extension applies to a running server: everything a reload may change live."""
    return {
        "hashed_password": hashed_password,
        "rate_limit_per_minute": settings.auth.rate_limit_per_minute,
        "cull_idle_minutes": settings.kernel.cull_idle_minutes,
    }


def serving_url(settings: Settings, candidates: Candidates | None = None) -> str:
    """The address a user opens in a browser, with base_url and default_url. Bound to every
    address, the host is the one users type (supervisor.public_address); `candidates`: what this
    machine knows of it, looked up when not given."""
    return public_base(settings, candidates) + settings.server.default_url.lstrip("/")


def public_base(settings: Settings, candidates: Candidates | None = None) -> str:
    """The server's public URL down to base_url, e.g. "https://203.0.113.7:8888/"."""
    server = settings.server
    host = server.ip
    if host in ("0.0.0.0", "::"):
        host = choose(candidates or public_address.candidates(settings))
    if ":" in host:
        host = f"[{host}]"
    scheme = "https" if settings.tls_enabled else "http"
    port = "" if (scheme, server.port) in (("https", 443), ("http", 80)) else f":{server.port}"
    return f"{scheme}://{host}{port}{server.base_url}"
