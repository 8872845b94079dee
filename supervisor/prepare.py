"""Everything Jupyter needs before it starts, for one set of settings: folders, password,
certificate, the notebooks' kernel and the rendered config. Raises without changing what serves."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from supervisor import kernel_env, passwords, terminal
from supervisor.dask import credentials
from supervisor.dask.plan import DaskPlan, environment, plan
from supervisor.dask.ports import local_ports
from supervisor.files import write_atomic
from supervisor.layout import Layout, layout_of, make_directories, root_folder
from supervisor.render import (
    JupyterInputs, lab_page_config, lab_setting_overrides, live_values, public_base, render,
    serving_url,
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
    dask: DaskPlan | None = None  # [dask] enabled

    @property
    def jupyter_variables(self) -> dict[str, str]:
        """Besides its usual environment, what Jupyter (and so each kernel) starts with."""
        return environment(self.dask) if self.dask else {}


def prepare(settings: Settings, live: CertificateInfo | None = None,
            acme_http_fd: int | None = None, starting: bool = False) -> Prepared:
    """`live`: a certificate already live, to start with at once (its renewal is checked later);
    `acme_http_fd`: the daemon's HTTP-01 socket, served by Jupyter under the same number;
    `starting`: no Jupyter of ours runs (the local Dask cluster's ports may be chosen again)."""
    layout = layout_of(settings)
    setup_problem = make_directories(layout)
    hashed = passwords.ensure_password(settings)
    certificate = None
    if settings.tls_enabled:
        certificate = live or ensure_certificate(settings, layout.account)
    notebooks_env = kernel_env.ensure_kernel(layout)
    terminal.write_rc(layout, notebooks_env)
    dask = dask_plan(layout, notebooks_env, starting)
    write_jupyter_config(layout, hashed, acme_http_fd, dask)
    return Prepared(layout, hashed, certificate, notebooks_env, acme_http_fd, setup_problem, dask)


def dask_plan(layout: Layout, notebooks_env: Path | None, starting: bool) -> DaskPlan | None:
    settings = layout.settings
    if not settings.dask.enabled:
        return None
    files = credentials.ensure(layout)
    ports = local_ports(settings.runtime_dir, starting) if settings.dask.local else None
    python = kernel_env.kernel_python(layout, notebooks_env)
    return plan(settings, public_base(settings), files, ports, str(python))


def jupyter_inputs(layout: Layout, hashed: str, acme_http_fd: int | None = None,
                   dask: DaskPlan | None = None) -> JupyterInputs:
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
        dask=dask,
    )


def write_jupyter_config(layout: Layout, hashed: str, acme_http_fd: int | None = None,
                         dask: DaskPlan | None = None) -> None:
    mode, owner = layout.account_readable
    inputs = jupyter_inputs(layout, hashed, acme_http_fd, dask)
    document = json.dumps(render(layout.settings, inputs), indent=1).encode()
    write_atomic(layout.config_file, document, mode=mode, owner=owner)
    # jupyter_core would otherwise try to write this marker of its IPython-3 migration into a
    # folder the account cannot write, and Jupyter would fail to start.
    migrated = layout.config_dir / "migrated"
    if not migrated.exists():
        write_atomic(migrated, b"", mode=0o644)
    root_folder(layout.lab_overrides.parent, 0o755, None)
    write_atomic(layout.lab_overrides, json.dumps(lab_setting_overrides(dask), indent=1).encode(),
                 mode=0o644)
    write_atomic(layout.lab_page_config, json.dumps(lab_page_config(dask), indent=1).encode(),
                 mode=0o644)
    write_live_values(layout, hashed)


def write_live_values(layout: Layout, hashed: str) -> None:
    """What the extension applies to the running Jupyter within a second, without a restart."""
    mode, owner = layout.account_readable
    document = json.dumps(live_values(layout.settings, hashed)).encode()
    write_atomic(layout.live_file, document, mode=mode, owner=owner)
