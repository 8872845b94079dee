"""Everything Jupyter needs before it starts, for one set of settings: folders, password,
certificate, the notebooks' kernel and the rendered config. Raises without changing what serves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from supervisor import kernel_env, passwords, terminal
from supervisor.files import write_atomic
from supervisor.layout import Layout, layout_of, make_directories, root_folder
from supervisor.render import (
    JupyterInputs, lab_setting_overrides, live_values, render, serving_url,
)
from supervisor.settings import Settings
from supervisor.tls import CertificateInfo
from supervisor.tls.watch import ensure_certificate


@dataclass(frozen=True)
class Prepared:
    layout: Layout
    hashed_password: str
    certificate: CertificateInfo | None  # None: TLS is off
    kernel_env: Path | None  # the notebooks' own environment, unless kernel.python names one
    acme_http_fd: int | None = None  # acme mode: the HTTP-01 socket Jupyter inherits
    setup_problem: str = ""  # what could not be made (root_dir), for the next failed start


def prepare(settings: Settings, live: CertificateInfo | None = None,
            acme_http_fd: int | None = None) -> Prepared:
    """`live`: a certificate already live, to start with at once (its renewal is checked later);
    `acme_http_fd`: the daemon's HTTP-01 socket, served by Jupyter under the same number."""
    layout = layout_of(settings)
    setup_problem = make_directories(layout)
    hashed = passwords.ensure_password(settings)
    certificate = None
    if settings.tls_enabled:
        certificate = live or ensure_certificate(settings, layout.account)
    environment = kernel_env.ensure_kernel(layout)
    terminal.write_rc(layout, environment)
    write_jupyter_config(layout, hashed, acme_http_fd)
    return Prepared(layout, hashed, certificate, environment, acme_http_fd, setup_problem)


def jupyter_inputs(layout: Layout, hashed: str, acme_http_fd: int | None = None) -> JupyterInputs:
    tls = layout.settings.tls_enabled
    return JupyterInputs(
        home=layout.account.home,
        hashed_password=hashed,
        live_file=layout.live_file,
        terminal_rc=layout.terminal_rc,
        display_url=serving_url(layout.settings),
        certfile=layout.store.certfile if tls else None,
        keyfile=layout.store.keyfile if tls else None,
        acme_http_fd=acme_http_fd,
        events_socket=layout.events_socket,
    )


def write_jupyter_config(layout: Layout, hashed: str, acme_http_fd: int | None = None) -> None:
    mode, owner = layout.account_readable
    inputs = jupyter_inputs(layout, hashed, acme_http_fd)
    document = json.dumps(render(layout.settings, inputs), indent=1).encode()
    write_atomic(layout.config_file, document, mode=mode, owner=owner)
    # jupyter_core would otherwise try to write this marker of its IPython-3 migration into a
    # folder the account cannot write, and Jupyter would fail to start.
    migrated = layout.config_dir / "migrated"
    if not migrated.exists():
        write_atomic(migrated, b"", mode=0o644)
    root_folder(layout.lab_overrides.parent, 0o755, None)
    write_atomic(layout.lab_overrides, json.dumps(lab_setting_overrides(), indent=1).encode(),
                 mode=0o644)
    write_live_values(layout, hashed)


def write_live_values(layout: Layout, hashed: str) -> None:
    """What the extension applies to the running Jupyter within a second, without a restart."""
    mode, owner = layout.account_readable
    document = json.dumps(live_values(layout.settings, hashed)).encode()
    write_atomic(layout.live_file, document, mode=mode, owner=owner)
