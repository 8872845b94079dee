"""Where everything lives for one set of settings, and the folders made before Jupyter starts.

    <runtime_dir>/status.json                    the daemon's status (world-readable, no secret)
    <runtime_dir>/jupyter/                       JUPYTER_CONFIG_DIR: root's, readable by the account
        jupyter_server_config.json               the rendered config (holds the hash: 0640)
        live.json                                what the extension applies without a restart
        terminal.bashrc                          the shell of JupyterLab terminals (terminal.py)
        labconfig/default_setting_overrides.json JupyterLab's setting defaults (no news)
        data/kernels/python3/kernel.json         the default "Python 3" kernel
    <state_dir>/tls/                             certificates (supervisor.tls.store)

Everything the daemon writes as root is in folders root owns: a folder the account owns could hold
a symlink that turns root's chmod or chown against a file of root's. What belongs in the account's
own folders (its home, root_dir, the notebooks' Python) is made by the account itself.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from supervisor import child
from supervisor.accounts import Account, serving_account
from supervisor.render import root_dir
from supervisor.settings import Settings
from supervisor.tls.store import CertificateStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    settings: Settings
    account: Account

    @property
    def config_dir(self) -> Path:
        return self.settings.runtime_dir / "jupyter"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "jupyter_server_config.json"

    @property
    def events_socket(self) -> Path:
        """Where the extension reports login attempts; the daemon logs them (login_events)."""
        return self.config_dir / "events.sock"

    @property
    def live_file(self) -> Path:
        return self.config_dir / "live.json"

    @property
    def lab_overrides(self) -> Path:
        return self.config_dir / "labconfig" / "default_setting_overrides.json"

    @property
    def lab_page_config(self) -> Path:
        return self.config_dir / "labconfig" / "page_config.json"

    @property
    def terminal_rc(self) -> Path:
        return self.config_dir / "terminal.bashrc"

    @property
    def root_dir(self) -> Path:
        return root_dir(self.settings, self.account.home)

    @property
    def kernel_spec(self) -> Path:
        return self.config_dir / "data" / "kernels" / "python3" / "kernel.json"

    @property
    def store(self) -> CertificateStore:
        return CertificateStore(self.settings.state_dir, self.account)

    @property
    def account_readable(self) -> tuple[int, tuple[int, int] | None]:
        """Mode and owner of a file only the account (and root) may read."""
        return (0o600, None) if self.account.is_self else (0o640, (0, self.account.gid))


def layout_of(settings: Settings) -> Layout:
    return Layout(settings, serving_account(settings))


def make_directories(layout: Layout) -> str:
    """Folders before Jupyter starts; returns what the account could not make ("" when none)."""
    for folder in (layout.settings.state_dir, layout.settings.runtime_dir):
        folder.mkdir(parents=True, exist_ok=True)
    mode, owner = (0o700, None) if layout.account.is_self else (0o750, (0, layout.account.gid))
    root_folder(layout.config_dir, mode, owner)
    if not layout.account.home.exists():
        _make_home(layout.account)
    # As the account, never as root: root_dir is the account's to change. The look first only
    # saves a process on most starts; nothing relies on it (Jupyter starts in "/" and reports a
    # root_dir that is gone by then).
    if layout.root_dir.is_dir():
        return ""
    made = child.run(child.as_account(layout.account, ["mkdir", "-p", "--", str(layout.root_dir)]),
                     child.account_environment(layout.account), timeout=30)
    if not made.returncode:
        return ""
    problem = f"cannot make root_dir {layout.root_dir} as {layout.account.name}: " \
              f"{made.stderr.strip()}"
    log.error("%s", problem)
    return problem


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


def root_folder(folder: Path, mode: int, owner: tuple[int, int] | None) -> None:
    """A folder of root's (or ours), made if missing; mode and owner set on the folder itself."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        os.fchmod(fd, mode)
        if owner:
            os.fchown(fd, *owner)
    finally:
        os.close(fd)
