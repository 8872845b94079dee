"""[dask] without Jupyter: the plan (pure), what the config and JupyterLab get, the cluster's TLS
identity as root keeps it, and the login's next path."""

from __future__ import annotations

import os
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509

from supervisor.advice import settings_warnings
from supervisor.dask import credentials
from supervisor.dask.plan import LocalPorts, environment, files, lab_settings, plan
from supervisor.inside_jupyter.jupyter_remote_ext.login import same_server_path
from supervisor.layout import layout_of
from supervisor.render import JupyterInputs, lab_page_config, render
from supervisor.settings import Dask, Server, Settings, needs_restart

PUBLIC = "https://203.0.113.7:8888/base/"
TLS = files(Path("/var/lib/jupyter-remote"))


def settings(**dask: object) -> Settings:
    return Settings(source=Path("/etc/jupyter-remote/settings.toml"), dask=Dask(**dask))


def test_off_means_no_plan_and_jupyterlab_shows_no_dask_panel() -> None:
    assert plan(settings(), PUBLIC, TLS, None, "/py") is None
    assert lab_settings(None) == {}
    assert lab_page_config(None) == {"disabledExtensions": {
        "dask-labextension": True, "@jupyterhub/jupyter-server-proxy": True}}
    assert plan(settings(enabled=False, cluster="tls://h:1"), PUBLIC, TLS, None, "/py") is None


def test_local_cluster_tls_on_loopback_and_a_dashboard_link_on_the_public_url() -> None:
    made = plan(settings(enabled=True), PUBLIC, TLS, LocalPorts(41000, 41001), "/py")
    assert made is not None
    assert made.scheduler == "tls://127.0.0.1:41000"
    # A literal address, never "localhost" (which may resolve to a ::1 anybody can bind).
    assert made.default_dashboard == f"{PUBLIC}proxy/127.0.0.1:41001/status"
    variables = environment(made)
    assert variables["DASK_SCHEDULER_ADDRESS"] == "tls://127.0.0.1:41000"
    assert variables["DASK_DISTRIBUTED__DASHBOARD__LINK"] == f"{PUBLIC}proxy/{{host}}:{{port}}/status"
    assert variables["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] == "True"
    for role in ("CLIENT", "SCHEDULER", "WORKER"):
        assert variables[f"DASK_DISTRIBUTED__COMM__TLS__{role}__KEY"] == str(TLS.key)
    assert lab_settings(made)["dask-labextension:plugin"]["defaultURL"] == made.default_dashboard
    assert lab_page_config(made)["disabledExtensions"]["dask-labextension"] is False


def test_a_named_scheduler_is_what_client_connects_to_and_tcp_gets_no_tls() -> None:
    remote = plan(settings(enabled=True, cluster="tls://10.0.1.5:8786"), PUBLIC, TLS, None, "/py")
    assert remote is not None and remote.local is None and remote.tls == TLS
    variables = environment(remote)
    assert variables["DASK_SCHEDULER_ADDRESS"] == "tls://10.0.1.5:8786"
    link = variables["DASK_DISTRIBUTED__DASHBOARD__LINK"]
    assert link.format(host="10.0.1.5", port=8787) == f"{PUBLIC}proxy/10.0.1.5:8787/status"
    plain = plan(settings(enabled=True, cluster="tcp://10.0.1.5:8786"), PUBLIC, TLS, None, "/py")
    assert plain is not None and plain.tls is None
    assert not any("TLS" in name or "ENCRYPTION" in name for name in environment(plain))
    for address in ("tcp://10.0.1.5:8786", "tcp://127.0.0.1:8786"):  # loopback: any local user
        warnings = settings_warnings(settings(enabled=True, cluster=address))
        assert len(warnings) == 1 and "[dask] cluster: tcp:// is neither encrypted" in warnings[0]
    assert settings_warnings(settings(enabled=True, cluster="tls://10.0.1.5:8786")) == []


def test_the_config_never_enables_the_proxys_or_dask_labextensions_server_extension() -> None:
    inputs = JupyterInputs(home=Path("/home/u"), hashed_password="argon2:x",
                           live_file=Path("/run/l"), terminal_rc=Path("/run/rc"))
    off = render(settings(), inputs)
    assert off["ServerApp"]["jpserver_extensions"]["jupyter_server_proxy"] is False
    assert off["ServerApp"]["jpserver_extensions"]["dask_labextension"] is False
    assert "DaskGate" not in off
    made = plan(settings(enabled=True), PUBLIC, TLS, LocalPorts(41000, 41001), "/py")
    on = render(settings(enabled=True), JupyterInputs(**{**inputs.__dict__, "dask": made}))
    # The extension adds the one gated route; should it fail, there is no proxy at all.
    assert on["ServerApp"]["jpserver_extensions"]["jupyter_server_proxy"] is False
    assert on["ServerApp"]["jpserver_extensions"]["dask_labextension"] is False
    assert on["DaskGate"]["dashboard_port"] == 41001 and on["DaskGate"]["python"] == "/py"


def test_a_dask_change_restarts_jupyter_and_other_sections_still_decide_alone() -> None:
    base = settings()
    assert needs_restart(base, settings(enabled=True))
    assert needs_restart(settings(enabled=True), settings(enabled=True, cluster="tls://h:1"))
    assert not needs_restart(base, settings())
    assert needs_restart(base, Settings(source=base.source, server=Server(port=1)))


def test_an_identity_is_due_within_sixty_days_of_its_end_and_a_clock_behind_changes_nothing() -> None:
    now = datetime(2026, 12, 1, tzinfo=UTC)
    assert not credentials.due(now + timedelta(days=61), now)
    assert credentials.due(now + timedelta(days=59), now)
    # Made "later" than a clock that is behind at boot: still the CA every cluster trusts.
    assert not credentials.due(now + timedelta(days=3650), now - timedelta(days=30))


@pytest.fixture
def identity(tmp_path: Path, account) -> tuple[Settings, credentials.DaskFiles]:
    made = Settings(source=tmp_path / "settings.toml",
                    server=Server(user=account.name),
                    dask=Dask(enabled=True))
    made = Settings.from_sections({**made.sections(), "paths": {
        "state_dir": str(tmp_path / "state"), "runtime_dir": str(tmp_path / "run")}},
        made.source)
    (tmp_path / "state").mkdir()
    return made, credentials.ensure(layout_of(made))


def test_the_identity_is_kept_and_the_account_reads_its_key_but_not_the_cas(identity) -> None:
    made, tls = identity
    layout = layout_of(made)
    mode, owner = layout.account_readable
    assert tls.key.stat().st_mode & 0o777 == mode
    assert tls.ca_key.stat().st_mode & 0o777 == 0o600
    if os.geteuid() == 0:
        assert (tls.key.stat().st_uid, tls.key.stat().st_gid) == owner
        assert tls.ca_key.stat().st_uid == 0
    first = tls.cert.read_bytes()
    assert credentials.ensure(layout) == tls and tls.cert.read_bytes() == first
    # A server context with it accepts a client holding it (mutual TLS as distributed does it).
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca))
    context.load_cert_chain(str(tls.cert), str(tls.key))


def test_a_new_identity_is_signed_by_the_same_ca(identity) -> None:
    """A cluster started with the old identity keeps accepting the notebooks after a renewal."""
    made, tls = identity
    ca = tls.ca.read_bytes()
    old = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    tls.cert.unlink()
    credentials.ensure(layout_of(made))
    assert tls.ca.read_bytes() == ca
    new = x509.load_pem_x509_certificate(tls.cert.read_bytes())
    assert new.serial_number != old.serial_number
    new.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))


@pytest.mark.parametrize("url", [
    "/proxy/10.0.1.5:8787/status", "/proxy/41001/status", "/lab?x=a:b", "/",
])
def test_the_login_sends_a_user_back_to_a_path_of_this_server_as_it_is(url: str) -> None:
    assert same_server_path(url, "/")


@pytest.mark.parametrize("url", [
    "//evil.example/", "/\\evil.example/", "/\t/evil.example/", "/\n/evil.example",
    "https://evil.example/", "javascript:alert(1)", "evil.example", "/other-base/x",
])
def test_any_other_next_goes_through_jupyters_own_check(url: str) -> None:
    assert not same_server_path(url, "/" if url != "/other-base/x" else "/base/")


def test_a_cluster_address_with_a_password_is_refused_and_never_echoed(tmp_path: Path) -> None:
    from supervisor.errors import SettingsError
    from supervisor.schema import load

    path = tmp_path / "settings.toml"
    path.write_text('[dask]\ncluster = "tls://admin:hunter2@10.0.1.5:8786"\n')
    with pytest.raises(SettingsError) as raised:
        load(path, euid=os.geteuid() or 1000)
    assert raised.value.lines == [
        f"{path}: [dask] cluster: must hold no user name or password (the cluster's TLS identity "
        "is its credential)"]
    assert "hunter2" not in str(raised.value)
