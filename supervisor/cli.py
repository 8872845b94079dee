"""The `jupyter-remote` command: thin commands that parse, call the core and leave through one map
from error types to exit codes. Nothing below this module exits."""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
import time
from datetime import datetime, UTC
from pathlib import Path
from typing import Annotated, Any
from collections.abc import Callable

import typer

from supervisor import __version__, hints, idle
from supervisor.errors import (
    JupyterRemoteError,
    NotRunning,
    ReloadRejected,
    SettingsError,
    describe,
)
from supervisor.settings import DEFAULT_SETTINGS_PATH, Settings, settings_path_from_env
from supervisor.status import PASSWORD_SIGNAL, RELOAD_SIGNAL, DaemonStatus, running_daemon

RELOAD_WAIT_MARGIN = 30.0

app = typer.Typer(
    add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
    help="A supervised, password-protected HTTPS JupyterLab as one systemd service.",
)
cert_app = typer.Typer(no_args_is_help=True,
                       help="The TLS certificate: show, renew, or print the local CA.")
app.add_typer(cert_app, name="cert")

SettingsOption = Annotated[
    Path | None,
    typer.Option("--settings", help="settings file [default: $JUPYTER_REMOTE_SETTINGS, "
                 "else /etc/jupyter-remote/settings.toml]", show_default=False),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"jupyter-remote {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass


def command(
    group: typer.Typer = app, name: str | None = None
) -> Callable[[Callable[..., Any]], Any]:
    """Register a command whose errors leave as one-line messages and the mapped exit code."""

    def register(function: Callable[..., Any]) -> Any:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return function(*args, **kwargs)
            except (typer.Exit, typer.Abort):
                raise
            except (Exception, KeyboardInterrupt) as error:
                lines, code = describe(error)
                for line in lines:
                    typer.echo(line, err=True)
                raise typer.Exit(code) from None

        return group.command(name)(wrapper)

    return register


def _path(settings: Path | None) -> Path:
    return settings or settings_path_from_env()


def _load(settings: Path | None) -> Settings:
    from supervisor.loading import load  # pydantic: loaded by the commands that validate

    return load(_path(settings))


# --- run, check, render ---------------------------------------------------------------------------


@command()
def run(settings: SettingsOption = None) -> None:
    """Run the daemon in the foreground (the systemd unit's ExecStart)."""
    # Reached with options supervisor.entry leaves to the parser (`run --settings=X --help`, say);
    # a plain `jupyter-remote run` goes to the daemon without loading this parser.
    from supervisor import daemon

    raise typer.Exit(daemon.main([str(_path(settings))]))


@command()
def check(settings: SettingsOption = None) -> None:
    """Validate settings, password and TLS material; print a summary."""
    from supervisor import passwords
    from supervisor.advice import settings_warnings
    from supervisor.layout import layout_of
    from supervisor.render import serving_url

    loaded = _load(settings)
    layout = layout_of(loaded)
    hashed = passwords.read_hash(loaded)
    typer.echo(f"settings:    {loaded.source}: valid")
    typer.echo(f"URL:         {serving_url(loaded)}")
    typer.echo(f"TLS:         {loaded.tls.mode}")
    for line in _tls_summary(loaded, layout.account):
        typer.echo(f"             {line}")
    typer.echo(f"user:        {layout.account.name} (Jupyter and its kernels run as this account)")
    typer.echo(f"root_dir:    {layout.root_dir}")
    typer.echo(f"idle stop:   {idle.describe(loaded.idle)}")
    if loaded.auth.password_hash:
        typer.echo(f"password:    set inline ([auth] password_hash in {loaded.source})")
        if os.stat(loaded.source).st_mode & 0o004:
            typer.echo(f"warning: {loaded.source} holds the password hash and is readable by "
                       "everyone: "
                       f"chmod 600 {loaded.source}", err=True)
    elif hashed:
        typer.echo(f"password:    set ({loaded.password_path})")
    else:
        run_command = hints.command(loaded.source, "run")
        typer.echo(f"password:    not set yet: `{run_command}` makes one at its first start "
                   f"and writes it to {loaded.initial_password_path}")
    for warning in settings_warnings(loaded):
        typer.echo(warning, err=True)


def _tls_summary(loaded: Any, account: Any) -> list[str]:
    if not loaded.tls_enabled:
        return ["plain HTTP on a loopback address (behind a reverse proxy or an SSH tunnel)"]
    from supervisor.tls import lifecycle, report

    now = lifecycle.utcnow()
    if loaded.tls.mode == "files":
        _, _, leaf = lifecycle.read_certificate_files(loaded, now)
        return [f"{loaded.tls.cert_file}: valid until {leaf.not_valid_after_utc:%Y-%m-%d} "
                f"({(leaf.not_valid_after_utc - now).days} days left)"]
    lines = report.describe(loaded, account, now)
    shown = ("not after", "renewal", "notice", "no certificate", "issuer", "last order failed")
    return [line for line in lines if line.startswith(shown)]


@command()
def render(settings: SettingsOption = None) -> None:
    """Print the Jupyter server config that `run` would use, as JSON."""
    from supervisor import passwords
    from supervisor.layout import layout_of
    from supervisor.prepare import jupyter_inputs
    from supervisor.render import render as render_config

    loaded = _load(settings)
    hashed = passwords.read_hash(loaded)
    if not hashed:
        typer.echo("note: no password is set yet; `run` makes one at its first start", err=True)
    inputs = jupyter_inputs(layout_of(loaded), hashed or "")
    typer.echo(json.dumps(render_config(loaded, inputs), indent=2))


# --- password -------------------------------------------------------------------------------------


@command()
def password(
    settings: SettingsOption = None,
    stdin: Annotated[bool, typer.Option(
        "--stdin", help="Read one line from standard input.")] = False,
    print_hash: Annotated[bool, typer.Option(
        "--print", help="Print the hash instead of saving it.")] = False,
) -> None:
    """Set the password (asked twice, without echo); a running server applies it at once."""
    from supervisor import passwords

    loaded = _load(settings)
    if loaded.auth.password_hash and not print_hash:
        raise JupyterRemoteError(
            f"{loaded.source}: [auth] password_hash is set there and wins over password_file: "
            f"replace it with a hash from `{hints.command(loaded.source, 'password', '--print')}`"
        )
    if stdin:
        typed = sys.stdin.readline().rstrip("\r\n")
    else:
        typed = getpass.getpass("New password: ")
        if typed and getpass.getpass("Repeat it: ") != typed:
            raise JupyterRemoteError("password: the two entries differ; nothing was changed")
    hashed = passwords.hash_password(typed)
    if print_hash:
        typer.echo(hashed)
        return
    passwords.write_hash(loaded.password_path, hashed)
    loaded.initial_password_path.unlink(missing_ok=True)
    typer.echo(f"password saved in {loaded.password_path}")
    daemon = running_daemon(loaded.runtime_dir)
    if daemon:
        os.kill(daemon.pid, PASSWORD_SIGNAL)
        typer.echo("the running server applies it within a second; earlier sessions are logged out")


# --- cert -----------------------------------------------------------------------------------------


@command(cert_app, "show")
def cert_show(settings: SettingsOption = None) -> None:
    """Subject, names, expiry, days left and SHA-256 fingerprints of the certificate and CA."""
    from supervisor.layout import layout_of
    from supervisor.tls import lifecycle, report

    loaded = _load(settings)
    for line in report.describe(loaded, layout_of(loaded).account, lifecycle.utcnow()):
        typer.echo(line)


@command(cert_app, "renew")
def cert_renew(settings: SettingsOption = None) -> None:
    """Issue a new certificate now; a running server serves it to new connections."""
    from supervisor.layout import layout_of
    from supervisor.tls import lifecycle

    loaded = _load(settings)
    if not loaded.tls_enabled:
        raise JupyterRemoteError('cert renew: TLS is off ([tls] mode = "off")')
    outcome = lifecycle.ensure_current(loaded, layout_of(loaded).account,
                                       renew_because="asked for (cert renew)")
    if outcome.error:  # acme mode: the CA did not issue; the live certificate is unchanged
        raise JupyterRemoteError(f"cert renew: {outcome.error}")
    what = "issued" if outcome.issued else "unchanged (certbot's files are already live)"
    typer.echo(f"certificate {what}: version {outcome.version}, "
               f"valid until {outcome.not_after[:10]}")
    typer.echo("a running server serves it to new connections within a second")
    for notice in outcome.notices:
        typer.echo(f"notice: {notice}")


@command(cert_app, "ca")
def cert_ca(settings: SettingsOption = None) -> None:
    """Print the local CA certificate (PEM), to import into a browser or the system's trust
    store."""
    from supervisor.layout import layout_of

    loaded = _load(settings)
    if loaded.tls.mode == "acme":
        raise JupyterRemoteError('cert ca: nothing to trust in [tls] mode = "acme": the '
                                 "certificate comes from a CA browsers already trust (cert show)")
    if loaded.tls.mode != "self-signed":
        raise JupyterRemoteError(
            f'cert ca: there is no local CA in [tls] mode = "{loaded.tls.mode}"')
    path = layout_of(loaded).store.ca_certificate
    try:
        typer.echo(path.read_text(), nl=False)
    except FileNotFoundError:
        raise JupyterRemoteError(f"cert ca: no local CA yet ({path}): "
                                 f"`{hints.command(loaded.source, 'run')}` makes it") from None


# --- reload, status -------------------------------------------------------------------------------


def _running(settings: Path | None) -> tuple[Path, DaemonStatus]:
    """The runtime folder of the daemon serving these settings, and its status."""
    from supervisor.settings import runtime_dir_hint

    runtime_dir = runtime_dir_hint(_path(settings))
    daemon = running_daemon(runtime_dir)
    if daemon is None:
        raise NotRunning(f"jupyter-remote is not running (no daemon for {runtime_dir})")
    return runtime_dir, daemon


@command()
def reload(settings: SettingsOption = None) -> None:
    """Make the running daemon re-read its settings; wait until it has (the unit's ExecReload)."""

    runtime_dir, daemon = _running(settings)
    before = daemon.reload.seq
    os.kill(daemon.pid, RELOAD_SIGNAL)
    deadline = time.monotonic() + _reload_wait(settings)
    while time.monotonic() < deadline:
        time.sleep(0.1)
        now = running_daemon(runtime_dir)
        if now is None:
            raise JupyterRemoteError("reload: the daemon stopped while reloading")
        if now.reload.seq > before:
            if now.reload.result == "rejected":
                raise ReloadRejected(*now.reload.errors,
                                     "reload rejected: still serving with the old settings")
            typer.echo(f"reloaded: {now.url}")
            for line in now.reload.errors:
                typer.echo(f"warning: {line}", err=True)
            return
    # Only the installed service's log is in the journal; scripts/run's is on its terminal.
    where = " (journalctl -u jupyter-remote)" if _path(settings) == DEFAULT_SETTINGS_PATH else ""
    raise JupyterRemoteError(f"reload: the daemon did not answer in time; see its log{where}")


def _reload_wait(settings: Path | None) -> float:
    # A [server] change restarts Jupyter: stop, then start, may take both timeouts.
    try:
        supervise = _load(settings).supervise
        return supervise.start_timeout + supervise.stop_timeout + RELOAD_WAIT_MARGIN
    except SettingsError:
        return RELOAD_WAIT_MARGIN  # the daemon rejects the file at once


@command()
def status(
    settings: SettingsOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the status as JSON.")] = False,
) -> None:
    """Whether the daemon runs, its URL, uptime, restarts, certificate days left, Jupyter pid."""
    try:
        _, daemon = _running(settings)
    except NotRunning:
        if as_json:
            typer.echo(json.dumps(DaemonStatus.stopped()))
        raise
    if as_json:
        typer.echo(json.dumps(daemon.public(), indent=1))
        return
    uptime = datetime.now(UTC) - datetime.fromisoformat(daemon.started)
    typer.echo(f"jupyter-remote is {daemon.state} "
               f"(pid {daemon.pid}, Jupyter pid {daemon.jupyter_pid})")
    typer.echo(f"URL:          {daemon.url}")
    typer.echo(f"up:           {str(uptime).split('.')[0]} since {daemon.started}")
    typer.echo(f"restarts:     {daemon.restarts}")
    if daemon.cert_days_left is not None:
        typer.echo(f"certificate:  {daemon.cert_days_left} days left")
    if (idle_line := idle.status_line(daemon.idle_seconds, daemon.idle_action_at)) is not None:
        typer.echo(idle_line)
    if daemon.last_error:
        typer.echo(f"last error:   {daemon.last_error}")
    if daemon.restart_pending:
        typer.echo(f"restart pending: upgraded to {daemon.restart_pending}; "
                   "restart when convenient (systemctl restart jupyter-remote; "
                   "running kernels stop)")


# --- entry point ----------------------------------------------------------------------------------


def main() -> None:
    try:
        app()
    except Exception as error:
        lines, code = describe(error)
        for line in lines:
            print(line, file=sys.stderr)
        sys.exit(code)
