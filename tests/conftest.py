from __future__ import annotations

import os
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import pytest

from support import (
    Account, DaemonProcess, JupyterClient, free_port, make_account, open_folder, remove_account,
    settings_text,
)


# A test that uses one of these starts a real Jupyter: `scripts/test --fast` leaves it out.
JUPYTER_FIXTURES = {"start_daemon", "serve", "serving"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if JUPYTER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.jupyter)


@pytest.fixture(scope="session")
def account() -> Iterator[Account]:
    """The account Jupyter runs as: a throwaway one when the tests run as root (as on CI)."""
    made = make_account()
    yield made
    remove_account(made)


@pytest.fixture
def settings(tmp_path: Path, account: Account) -> Path:
    """A valid settings file for the commands, in a private folder (no daemon is started on it)."""
    path = tmp_path / "settings.toml"
    path.write_text(settings_text({
        "server": {"ip": "127.0.0.1", "port": 9999, "user": account.name},
        "paths": {"state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")},
    }))
    return path


@pytest.fixture
def folder() -> Iterator[Path]:
    made = open_folder("jr-test-")
    yield made
    shutil.rmtree(made, ignore_errors=True)


@pytest.fixture
def make_settings(folder: Path, account: Account) -> Callable[..., Path]:
    """Write settings.toml for a daemon on a free loopback port; sections override the defaults."""

    def make(name: str = "settings.toml", **sections: dict[str, Any]) -> Path:
        merged: dict[str, dict[str, Any]] = {
            "server": {"ip": "127.0.0.1", "port": free_port(), "user": account.name,
                       "root_dir": str(folder / "notebooks")},
            "tls": {"cloud_metadata": False},
            "supervise": {"health_interval": 1, "start_timeout": 60, "stop_timeout": 5},
            "paths": {"state_dir": str(folder / "state"), "runtime_dir": str(folder / "run")},
        }
        for section, values in sections.items():
            merged.setdefault(section, {}).update(values)
        notebooks = folder / "notebooks"  # the account's to write, as an operator would arrange
        notebooks.mkdir(exist_ok=True)
        os.chown(notebooks, account.uid, -1)
        path = folder / name
        path.write_text(settings_text(merged))
        return path

    return make


@pytest.fixture
def start_daemon(folder: Path) -> Iterator[Callable[..., DaemonProcess]]:
    started: list[DaemonProcess] = []

    def start(settings: Path, on_notify: Callable[[str], None] | None = None,
              prefix: list[str] | None = None, **env: str) -> DaemonProcess:
        daemon = DaemonProcess(settings, folder, extra_env=env, on_notify=on_notify,
                               prefix=prefix or []).start()
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@dataclass
class Serving:
    daemon: DaemonProcess
    settings: Path
    folder: Path
    port: int

    @property
    def password(self) -> str:
        return (self.settings.parent / "initial-password").read_text().strip()

    @property
    def ca(self) -> str:
        return str(self.folder / "state" / "tls" / "ca" / "ca.pem")

    @property
    def base(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def client(self, **kwargs: Any) -> JupyterClient:
        return JupyterClient(self.base, self.ca, **kwargs)

    def logged_in_client(self) -> JupyterClient:
        client = self.client()
        assert client.login(self.password).status_code == 302
        return client


def settings_port(settings: Path) -> int:
    return tomllib.loads(settings.read_text())["server"]["port"]


@pytest.fixture
def serve(make_settings: Callable[..., Path], start_daemon: Callable[..., DaemonProcess],
          folder: Path) -> Callable[..., Serving]:
    """Start a daemon with these settings sections (HTTPS, self-signed) and wait for READY=1."""

    def start(**sections: dict[str, Any]) -> Serving:
        settings = make_settings(**sections)
        daemon = start_daemon(settings)
        daemon.wait_ready()
        return Serving(daemon, settings, folder, settings_port(settings))

    return start


@pytest.fixture
def serving(serve: Callable[..., Serving]) -> Serving:
    """A daemon serving HTTPS with a self-signed certificate, started and READY."""
    return serve()
