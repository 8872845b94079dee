"""Laying out what Jupyter needs before it starts, and what it picks up while it runs.

    <runtime_dir>/status.json                    the daemon's status (world-readable, no secret)
    <runtime_dir>/jupyter/                       JUPYTER_CONFIG_DIR, the account's alone
        jupyter_server_config.json               the rendered config (holds the hash: 0600)
        live.json                                what the extension applies without a restart
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from supervisor import isolated, passwords
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
    def store(self) -> CertificateStore:
        return CertificateStore(self.settings.state_dir, self.account)


def layout(settings: Settings) -> Layout:
    return Layout(settings, serving_account(settings))


def make_directories(place: Layout) -> None:
    for folder in (place.settings.state_dir, place.settings.runtime_dir):
        folder.mkdir(parents=True, exist_ok=True)
    _owned_folder(place.config_dir, place.account, 0o700)
    if not place.account.home.is_dir():
        _owned_folder(place.account.home, place.account, 0o750)
    if not place.root_dir.is_dir():
        _owned_folder(place.root_dir, place.account, 0o755)


def _owned_folder(folder: Path, account: Account, mode: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, mode)
    if not account.is_self:
        os.chown(folder, account.uid, account.gid)


def ensure_password(settings: Settings) -> str:
    """The hash to serve with; on a first start with none set, make a password and say where it is."""
    hashed = passwords.read_hash(settings)
    if hashed:
        return hashed
    password = passwords.make_initial_password()
    hashed = passwords.hash_password(password)
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
    owner = None if place.account.is_self else place.account.owner
    document = json.dumps(render(place.settings, inputs), indent=1).encode()
    write_atomic(place.config_file, document, mode=0o600, owner=owner)
    write_live_values(place, hashed)


def write_live_values(place: Layout, hashed: str) -> None:
    owner = None if place.account.is_self else place.account.owner
    document = json.dumps(live_values(place.settings, hashed)).encode()
    write_atomic(place.live_file, document, mode=0o600, owner=owner)
