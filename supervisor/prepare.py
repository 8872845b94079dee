"""Laying out what Jupyter needs before it starts, and what it picks up while it runs.

    <runtime_dir>/status.json                    the daemon's status (world-readable, no secret)
    <runtime_dir>/jupyter/                       JUPYTER_CONFIG_DIR: root's, readable by the account
        jupyter_server_config.json               the rendered config (holds the hash: 0640)
        live.json                                what the extension applies without a restart
        data/kernels/python3/kernel.json         the default "Python 3" kernel

Everything the daemon writes as root is in folders root owns: a folder the account owns could hold
a symlink that turns root's chmod or chown against a file of root's. What belongs in the account's
own folders (its home, root_dir, the notebooks' Python) is made by the account itself.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from supervisor import child, isolated, kernel_env, passwords
from supervisor.errors import SettingsError
from supervisor.accounts import Account, serving_account
from supervisor.files import write_atomic
from supervisor.render import JupyterInputs, live_values, render, root_dir
from supervisor.settings import Settings
from supervisor.tls.store import CertificateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    """Where everything lives for one set of settings."""

    settings: Settings
    account: Account

    @property
    def config_dir(self) -> Path:
        return self.settings.runtime_dir / "jupyter"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "jupyter_server_config.json"

    @property
    def live_file(self) -> Path:
        return self.config_dir / "live.json"

    @property
    def root_dir(self) -> Path:
        return root_dir(self.settings, self.account.home)

    @property
    def kernel_spec(self) -> Path:
        return self.config_dir / "data" / "kernels" / "python3" / "kernel.json"

    @property
    def store(self) -> CertificateStore:
        return CertificateStore(self.settings.state_dir, self.account)


def layout(settings: Settings) -> Layout:
    return Layout(settings, serving_account(settings))


def make_directories(place: Layout) -> None:
    for folder in (place.settings.state_dir, place.settings.runtime_dir):
        folder.mkdir(parents=True, exist_ok=True)
    mode, owner = (0o700, None) if place.account.is_self else (0o750, (0, place.account.gid))
    _root_folder(place.config_dir, mode, owner)
    if not place.account.home.exists():
        _make_home(place.account)
    if not place.root_dir.is_dir():
        made = subprocess.run(child.as_account(place.account, ["mkdir", "-p", "--", str(place.root_dir)]),
                              env=child.account_environment(place.account), cwd="/",
                              capture_output=True, text=True, timeout=30)
        if made.returncode:
            log.error("cannot make root_dir %s as %s: %s", place.root_dir, place.account.name,
                      made.stderr.strip())


def _make_home(account: Account) -> None:
    """A missing home, made for the account; fchown on the new folder itself, never a path."""
    os.makedirs(account.home, mode=0o750)
    fd = os.open(account.home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        if not account.is_self:
            os.fchown(fd, account.uid, account.gid)
    finally:
        os.close(fd)
    log.info("made the home folder %s of %s", account.home, account.name)


def _root_folder(folder: Path, mode: int, owner: tuple[int, int] | None) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, mode)
    if owner:
        os.chown(folder, *owner)


def _readable_by_account(place: Layout) -> tuple[int, tuple[int, int] | None]:
    """Mode and owner of a file only the account (and root) may read."""
    return (0o600, None) if place.account.is_self else (0o640, (0, place.account.gid))


def ensure_password(settings: Settings) -> str:
    """The hash to serve with; on a first start with none set, make a password and say where it is."""
    hashed = passwords.read_hash(settings)
    if hashed:
        return hashed
    password = passwords.make_initial_password()
    # argon2 takes 10 MB to hash: in a child, so that the daemon does not keep them.
    hashed = isolated.call(passwords.hash_password, password)
    write_atomic(settings.initial_password_path, (password + "\n").encode(), mode=0o600)
    passwords.write_hash(settings.password_path, hashed)
    log.warning(
        "first start: a password was made; read it in %s (change it with: jupyter-remote password)",
        settings.initial_password_path,
    )
    return hashed


def ensure_certificate(place: Layout, force: str = "") -> dict[str, object] | None:
    """Present and current TLS material, made in a short-lived child; None when TLS is off."""
    if not place.settings.tls_enabled:
        return None
    outcome = isolated.call(_ensure_certificate_here, place.settings, place.account, force)
    for notice in outcome["notices"]:
        log.warning("%s", notice)
    return outcome


def _ensure_certificate_here(settings: Settings, account: Account, force: str) -> object:
    # Imported here, in the child: the resident daemon never loads cryptography.
    from supervisor.tls import lifecycle

    return lifecycle.ensure_current(settings, account, force=force)


def write_jupyter_config(place: Layout, hashed: str) -> None:
    tls = place.settings.tls_enabled
    inputs = JupyterInputs(
        home=place.account.home,
        hashed_password=hashed,
        live_file=place.live_file,
        certfile=place.store.certfile if tls else None,
        keyfile=place.store.keyfile if tls else None,
    )
    mode, owner = _readable_by_account(place)
    document = json.dumps(render(place.settings, inputs), indent=1).encode()
    write_atomic(place.config_file, document, mode=mode, owner=owner)
    # jupyter_core would otherwise try to write this marker of its IPython-3 migration into a
    # folder the account cannot write, and Jupyter would fail to start.
    migrated = place.config_dir / "migrated"
    if not migrated.exists():
        write_atomic(migrated, b"", mode=0o644)
    write_live_values(place, hashed)


def write_live_values(place: Layout, hashed: str) -> None:
    mode, owner = _readable_by_account(place)
    document = json.dumps(live_values(place.settings, hashed)).encode()
    write_atomic(place.live_file, document, mode=mode, owner=owner)


def ensure_kernel(place: Layout) -> Path | None:
    """The default "Python 3" kernel: `kernel.python`, or the notebooks' own environment (returned)."""
    settings, account = place.settings, place.account
    if settings.kernel.python:
        python, environment = Path(settings.kernel.python), None
        _require_ipykernel(settings, place, python)
    else:
        environment = kernel_env.location(account.home)
        python = environment / "bin" / "python"
        if not python.exists():
            # Made as the account, in its home; only its first making waits: kernels need it.
            made = subprocess.run(
                kernel_env_command(place, environment), env=child.account_environment(account),
                cwd="/", capture_output=True, text=True, timeout=600,
            )
            if made.returncode:
                log.error("cannot make the notebooks' Python environment %s: %s; kernels use the "
                          "bundled Python, where %%pip install cannot write", environment,
                          made.stderr.strip().splitlines()[-1:] or made.returncode)
                place.kernel_spec.unlink(missing_ok=True)
                return None
    for folder in reversed(place.kernel_spec.parents[:3]):
        _root_folder(folder, 0o755, None)
    spec = json.dumps(kernel_env.kernel_spec(python), indent=1).encode()
    write_atomic(place.kernel_spec, spec, mode=0o644)
    return environment


def kernel_env_command(place: Layout, environment: Path, packages: list[str] = ()) -> list[str]:
    argv = [sys.executable, "-m", "supervisor.kernel_env", str(environment)]
    if packages:
        argv += ["--packages", *packages]
    return child.as_account(place.account, argv)


def _require_ipykernel(settings: Settings, place: Layout, python: Path) -> None:
    try:
        probe = subprocess.run(
            child.as_account(place.account, [str(python), "-c", "import ipykernel"]),
            env=child.account_environment(place.account), cwd="/", capture_output=True, timeout=120,
        )
        ok = probe.returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        ok = False
    if not ok:
        raise SettingsError(
            f"{settings.source}: [kernel] python: {python} cannot run ipykernel; "
            f"install it with: {python} -m pip install ipykernel"
        )
