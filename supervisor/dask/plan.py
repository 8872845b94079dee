"""What [dask] means for one start of Jupyter, as pure functions of the settings: the scheduler
the notebooks' `Client()` connects to, the dashboard link it prints, the environment Jupyter and
its kernels inherit, and the Dask settings of JupyterLab.

Both cluster kinds reach `Client()` the same way, through distributed's `scheduler-address`: the
notebook code stays the same when the cluster moves off the machine. "local" is a cluster the
extension inside Jupyter runs on loopback ports chosen here (supervisor.dask.ports).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from supervisor.settings import Settings

# Run by the notebooks' Python, started by the extension inside Jupyter.
LOCAL_CLUSTER_SCRIPT = (Path(__file__).parent.parent / "inside_jupyter" / "dask_cluster"
                        / "local_cluster.py")


@dataclass(frozen=True)
class DaskFiles:
    """The cluster's TLS identity (supervisor.dask.credentials): what the account reads, and
    distributed's `distributed.comm.tls` keys point at."""

    ca: Path
    cert: Path
    key: Path

    @property
    def ca_key(self) -> Path:
        return self.ca.with_name("ca-key.pem")


def files(state_dir: Path) -> DaskFiles:
    folder = state_dir / "dask"
    return DaskFiles(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")


@dataclass(frozen=True)
class LocalPorts:
    scheduler: int
    dashboard: int


@dataclass(frozen=True)
class DaskPlan:
    scheduler: str  # what `Client()` connects to
    dashboard_link: str  # distributed.dashboard.link: a template of {host} and {port}
    default_dashboard: str  # JupyterLab's Dask panes open this one first ("" = found from a kernel)
    tls: DaskFiles | None  # None: tcp://, neither encrypted nor authenticated
    local: LocalPorts | None  # cluster = "local": where the extension runs it
    python: str  # the notebooks' interpreter: the local cluster's workers import what they do


def plan(settings: Settings, public_base: str, tls: DaskFiles, ports: LocalPorts | None,
         python: str) -> DaskPlan | None:
    """`public_base`: the server's public URL down to base_url ("https://host:8888/base/")."""
    dask = settings.dask
    if not dask.enabled:
        return None
    # Through jupyter-server-proxy's handler, behind Jupyter's login: host and port, the host a
    # literal address (supervisor/inside_jupyter/jupyter_remote_ext/dask_gate.py).
    link = f"{public_base}proxy/{{host}}:{{port}}/status"
    if dask.local:
        assert ports is not None
        return DaskPlan(f"tls://127.0.0.1:{ports.scheduler}", link,
                        link.format(host="127.0.0.1", port=ports.dashboard), tls, ports, python)
    encrypted = dask.cluster.startswith("tls://")
    return DaskPlan(dask.cluster, link, "", tls if encrypted else None, None, python)


def environment(plan: DaskPlan) -> dict[str, str]:
    """distributed's settings (DASK_* variables) for Jupyter, its kernels and the local cluster."""
    variables = {
        "DASK_SCHEDULER_ADDRESS": plan.scheduler,
        "DASK_DISTRIBUTED__DASHBOARD__LINK": plan.dashboard_link,
    }
    if plan.tls:
        variables["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
        variables["DASK_DISTRIBUTED__COMM__TLS__CA_FILE"] = str(plan.tls.ca)
        for role in ("CLIENT", "SCHEDULER", "WORKER"):
            variables[f"DASK_DISTRIBUTED__COMM__TLS__{role}__CERT"] = str(plan.tls.cert)
            variables[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] = str(plan.tls.key)
    return variables


def lab_settings(plan: DaskPlan | None) -> dict[str, object]:
    """dask-labextension's settings: its panes check a dashboard from the browser, with the
    login's cookie (the server-side check would meet the login page); no cluster manager, whose
    clusters would run in Jupyter's own environment and listen on every address."""
    if plan is None:
        return {}
    return {"dask-labextension:plugin": {"browserDashboardCheck": True,
                                         "hideClusterManager": True,
                                         "defaultURL": plan.default_dashboard}}


def extension_config(plan: DaskPlan) -> dict[str, object]:
    """For the extension inside Jupyter (dask_gate.py)."""
    config: dict[str, object] = {"scheduler": plan.scheduler, "python": plan.python}
    if plan.local:
        config["dashboard_port"] = plan.local.dashboard
        config["script"] = str(LOCAL_CLUSTER_SCRIPT)
    return config
