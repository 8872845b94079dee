"""acme mode: certificates from a real ACME CA (pebble, validating for real) answered by the
extension inside a real Jupyter; and the pure decisions (profile, renewal, backoff) on their own."""

from __future__ import annotations

import json
import os
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any
from collections.abc import Callable, Iterator

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from acme_support import BLOCKED_NAME, Pebble, served_certificate
from support import cli, free_port, stop_tree, wait_until
from supervisor import child, schema
from supervisor.accounts import Account, serving_account
from supervisor.errors import JupyterRemoteError, SettingsError
from supervisor.passwords import hash_password
from supervisor.render import JupyterInputs, render
from supervisor.settings import Settings
from supervisor.tls import acme, lifecycle
from supervisor.tls.challenge_socket import bind_http_challenge_socket
from supervisor.tls.names import Names
from supervisor.tls.store import CertificateStore

DATA = Path(__file__).parent / "data"
UTC = UTC


# --- settings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, line",
    [
        (
            '[tls]\nmode = "acme"\nacme_directory = "http://acme.example/dir"',
            "[tls] acme_directory: must be https:// (http:// only for a server on this machine), "
            'got "http://acme.example/dir"',
        ),
        (
            '[tls]\nacme_directory = "acme.example/dir"',
            "[tls] acme_directory: must be the https:// URL of an ACME directory, such as "
            '"https://acme-v02.api.letsencrypt.org/directory", got "acme.example/dir"',
        ),
        ("[tls]\nacme_http_port = 65536", "[tls] acme_http_port: must be 0-65535, got 65536"),
        (
            '[tls]\nacme_email = "me at example"',
            '[tls] acme_email: must be an e-mail address such as "you@example.com", or "", '
            'got "me at example"',
        ),
        (
            '[tls]\nmode = "acme"\nacme_ca_bundle = "/nonexistent/ca.pem"',
            "[tls] acme_ca_bundle: cannot read /nonexistent/ca.pem: No such file or directory",
        ),
        (
            '[tls]\nmode = "acme"\nacme_http_port = 8888',
            "[tls] acme_http_port: must differ from [server] port (HTTPS is served there), "
            "got 8888",
        ),
    ],
)
def test_bad_acme_settings_are_one_line_naming_the_key(tmp_path, text, line):
    path = tmp_path / "settings.toml"
    path.write_text(text)
    with pytest.raises(SettingsError) as raised:
        schema.load(path, euid=1000)
    assert raised.value.lines == [f"{path}: {line}"]


def test_acme_ca_bundle_must_hold_a_pem_certificate(tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_text("not a certificate\n")
    path = tmp_path / "settings.toml"
    path.write_text(f'[tls]\nmode = "acme"\nacme_ca_bundle = "{bundle}"\n')
    with pytest.raises(SettingsError) as raised:
        schema.load(path, euid=1000)
    assert raised.value.lines == [
        f'{path}: [tls] acme_ca_bundle: not a PEM certificate file, got "{bundle}"'
    ]


def test_a_loopback_http_directory_is_accepted_for_a_local_test_ca(tmp_path):
    path = tmp_path / "settings.toml"
    path.write_text(
        '[tls]\nmode = "acme"\nacme_directory = "http://127.0.0.1:14000/dir"\nacme_http_port = 0\n'
    )
    assert schema.load(path, euid=1000).tls.acme_http_port == 0


# --- pure decisions -----------------------------------------------------------------------------


def test_an_ip_address_asks_for_the_short_lived_profile_a_ca_advertises():
    directory = json.loads((DATA / "acme-directory-profiles.json").read_text())
    profiles = directory["meta"]["profiles"]
    assert (
        acme.choose_profile(profiles, Names(("jupyter.example.org",), ("203.0.113.7",)))
        == "shortlived"
    )
    assert (
        acme.choose_profile(profiles, Names(("jupyter.example.org",), ())) is None
    )  # the CA's default
    assert (
        acme.choose_profile(None, Names((), ("203.0.113.7",))) is None
    )  # no profiles: order plainly
    described = {"default": "90 days", "brief": "Short-lived certificates, valid for about 6 days"}
    assert acme.choose_profile(described, Names((), ("203.0.113.7",))) == "brief"


def test_renewal_when_a_third_of_the_lifetime_is_left_or_in_the_cas_window():
    start = datetime(2026, 12, 1, tzinfo=UTC)
    six_days = start + timedelta(days=6)
    assert acme.renewal_reason(start, six_days, start + timedelta(days=3, hours=23)) is None
    assert "a third of its lifetime" in acme.renewal_reason(
        start, six_days, start + timedelta(days=4)
    )
    ninety = start + timedelta(days=90)
    assert acme.renewal_reason(start, ninety, start + timedelta(days=59)) is None
    assert acme.renewal_reason(start, ninety, start + timedelta(days=61))
    assert "expired" in acme.renewal_reason(start, six_days, six_days)
    window = acme.RenewalWindow(start + timedelta(days=10), start + timedelta(days=12))
    # The CA's window wins over the lifetime rule, both earlier (a revocation) and later.
    assert acme.renewal_reason(start, ninety, start + timedelta(days=9), window) is None
    assert "renewal window" in acme.renewal_reason(
        start, ninety, start + timedelta(days=10), window
    )
    assert acme.renewal_due_at(start, six_days, None) == start + timedelta(days=4)


def test_backoff_doubles_with_jitter_up_to_a_bound_and_honours_retry_after():
    middle = lambda: 0.5  # noqa: E731 - jitter pinned to none
    assert acme.backoff_seconds("unreachable", 1, None, middle) == 60
    assert acme.backoff_seconds("unreachable", 3, None, middle) == 240
    assert acme.backoff_seconds("unreachable", 30, None, middle) == acme.MAX_WAIT
    assert acme.backoff_seconds("unreachable", 1, None, lambda: 0.0) == pytest.approx(48)
    assert acme.backoff_seconds("unreachable", 1, None, lambda: 0.999) == pytest.approx(72, abs=0.1)
    assert acme.backoff_seconds("rate-limited", 1, 7200, middle) == 7200
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    assert acme.retry_after_seconds("Tue, 01 Dec 2026 13:00:00 GMT", now) == 3600
    assert acme.retry_after_seconds("120", now) == 120


def test_a_rate_limit_waits_for_the_cas_retry_after(tmp_path):
    class Problem:
        code, detail = "rateLimited", "too many certificates (5) already issued for this exact set"

    store = CertificateStore(tmp_path, Account("root", 0, 0, Path("/root")))
    (store.root / "acme").mkdir(parents=True)
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    limited = acme.describe_problem(acme._RateLimited(Problem(), 7200.0), "x.test", "the order")
    state = acme.record_failure(store, limited, "fingerprint", now, lambda: 0.5)
    assert state.error == (
        "the CA's rate limit: too many certificates (5) already issued for this exact set; "
        "next attempt at 2026-12-01 14:00:00 UTC"
    )
    assert acme.load_state(store) == state


def test_a_challenge_the_ca_could_not_reach_says_which_port_to_open():
    class Problem:
        code, detail = (
            "connection",
            "203.0.113.7: Fetching http://203.0.113.7/.well-known/...: Timeout",
        )

    failure = acme.describe_problem(Problem(), "203.0.113.7", "port 80")
    assert failure.kind == "challenge"
    assert "could not validate 203.0.113.7 (port 80)" in failure.message
    assert (
        "open port 80 of 203.0.113.7 to the internet (on AWS: in the security group)"
        in failure.message
    )


def test_the_extension_maps_a_reverse_dns_server_name_to_the_ip_identifier():
    from supervisor.inside_jupyter.jupyter_remote_ext import acme_answer as answer

    assert answer.identifier_of("7.113.0.203.in-addr.arpa") == "203.0.113.7"
    assert (
        answer.identifier_of(
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.ip6.arpa"
        )
        == "::1"
    )
    assert answer.identifier_of("Jupyter.Example.org.") == "jupyter.example.org"


def test_the_http01_socket_takes_both_families_for_every_address(make_settings):
    port = free_port()
    settings = loaded(
        make_settings(server={"ip": "::"}, tls={"mode": "acme", "acme_http_port": port})
    )
    listener = bind_http_challenge_socket(settings)
    try:
        assert listener.get_inheritable()
        for address in ("127.0.0.1", "::1"):
            with socket.create_connection((address, port), timeout=5):
                pass
        busy = loaded(make_settings(tls={"mode": "acme", "acme_http_port": port}))
        with pytest.raises(JupyterRemoteError) as raised:
            bind_http_challenge_socket(busy)
        assert raised.value.lines == [
            f"{busy.source}: [tls] acme_http_port: cannot listen on port {port} (Address already "
            "in use); set it to 0 to answer only TLS-ALPN-01 on [server] port"
        ]
    finally:
        listener.close()
    assert (
        bind_http_challenge_socket(loaded(make_settings(tls={"mode": "acme", "acme_http_port": 0})))
        is None
    )


# --- against pebble -----------------------------------------------------------------------------


@pytest.fixture
def pebble(folder: Path) -> Iterator[Pebble]:
    made = Pebble(folder, http_port=free_port(), tls_port=free_port())
    yield made
    made.stop()


@pytest.fixture
def acme_settings(make_settings: Callable[..., Path], pebble: Pebble) -> Callable[..., Path]:
    def make(hostnames: list[str], **tls: Any) -> Path:
        return make_settings(
            server={"port": pebble.tls_port},
            tls={
                "mode": "acme",
                "acme_directory": pebble.directory,
                "acme_ca_bundle": str(pebble.listener_ca),
                "acme_http_port": pebble.http_port,
                "hostnames": hostnames,
                **tls,
            },
        )

    return make


def loaded(path: Path) -> Settings:
    return schema.load(path, euid=os.geteuid())


class Jupyter:
    """A real `jupyter lab` with the rendered config, as the daemon will start it in acme mode:
    the HTTP-01 socket bound here (as root) and inherited (child.spawn_jupyter pass_fds)."""

    def __init__(self, settings: Settings, folder: Path) -> None:
        self.settings, self.account = settings, serving_account(settings)
        lifecycle.ensure_current(settings, self.account, jupyter_answers=False)  # the local CA's
        self.listener = bind_http_challenge_socket(settings)
        config_dir = folder / "config"
        config_dir.mkdir(mode=0o755, exist_ok=True)
        store = CertificateStore(settings.state_dir, self.account)
        inputs = JupyterInputs(
            home=self.account.home,
            hashed_password=hash_password("a test password"),
            live_file=config_dir / "live.json",
            terminal_rc=config_dir / "bashrc",
            certfile=store.certfile,
            keyfile=store.keyfile,
            acme_http_fd=self.listener.fileno() if self.listener else None,
        )
        (config_dir / "jupyter_server_config.json").write_text(json.dumps(render(settings, inputs)))
        (config_dir / "migrated").write_text("")
        fds = (self.listener.fileno(),) if self.listener else ()
        self.process = child.spawn_jupyter(settings, self.account, config_dir, pass_fds=fds).process
        self.port = settings.server.port
        self.local_ca = store.ca_certificate
        wait_until(self._answers, 90, "Jupyter answering over HTTPS", interval=0.2)

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError("Jupyter exited")
        session = requests.Session()
        session.trust_env = False
        try:
            return session.get(
                f"https://127.0.0.1:{self.port}/api", verify=str(self.local_ca), timeout=5
            ).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        stop_tree(self.process, 10)
        if self.listener:
            self.listener.close()


@pytest.fixture
def jupyter(folder: Path) -> Iterator[Callable[[Settings], Jupyter]]:
    started: list[Jupyter] = []

    def start(settings: Settings) -> Jupyter:
        started.append(Jupyter(settings, folder))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def pebble_root(pebble: Pebble, folder: Path) -> Path:
    path = folder / "pebble-root.pem"
    path.write_bytes(pebble.root_pem())
    return path


def verifies(port: int, name: str, cafile: Path) -> x509.Certificate | None:
    try:
        return served_certificate(port, name, cafile)
    except (OSError, ValueError):
        return None


def test_http01_for_a_dns_name_then_the_ca_gone_keeps_it_served(
    acme_settings, pebble, jupyter, folder
):
    settings = loaded(acme_settings(["jupyter.test"]))
    pebble.start()
    server = jupyter(settings)
    session = requests.Session()
    session.trust_env = False
    moved = session.get(
        f"http://127.0.0.1:{pebble.http_port}/lab?x=1", allow_redirects=False, timeout=10
    )
    assert (moved.status_code, moved.headers["Location"]) == (
        301,
        f"https://127.0.0.1:{server.port}/lab?x=1",
    )
    assert (
        verifies(server.port, "jupyter.test", pebble_root(pebble, folder)) is None
    )  # the local CA's yet

    outcome = lifecycle.ensure_current(settings, server.account)
    assert outcome.issued and not outcome.error, outcome
    root = pebble_root(pebble, folder)
    served = wait_until(
        lambda: verifies(server.port, "jupyter.test", root), 10, "pebble's certificate served"
    )
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["jupyter.test"]
    assert not list(
        (acme.challenge_dir(settings.state_dir) / "http-01").iterdir()
    )  # answers removed

    store = CertificateStore(settings.state_dir, server.account)
    live = store.live_version()
    pebble.stop()
    failed = lifecycle.ensure_current(settings, server.account, renew_because="asked for (a test)")
    assert not failed.issued
    assert failed.error.startswith(f"cannot reach the ACME server {pebble.directory}: ")
    assert failed.next_attempt_after and failed.next_attempt_after > 0
    assert store.live_version() == live  # the last good one stays live, nothing replaces it
    assert verifies(server.port, "jupyter.test", root) == served  # and is served


def test_http01_for_the_ip_address_once_the_ca_is_back(acme_settings, pebble, jupyter, folder):
    settings = loaded(acme_settings(["127.0.0.1"]))
    server = jupyter(settings)
    down = lifecycle.ensure_current(settings, server.account)  # pebble not started yet
    assert down.error.startswith("cannot reach the ACME server") and not down.issued
    shown = cli("cert", "show", "--settings", str(settings.source)).stdout
    assert f"the local CA, until the first certificate from {pebble.directory}" in shown
    assert f"last order failed: {down.error}" in shown
    checked = cli("check", "--settings", str(settings.source))
    assert checked.returncode == 0 and f"last order failed: {down.error}" in checked.stdout

    pebble.start()
    later = datetime.now(UTC) + timedelta(hours=1)  # past the backoff
    outcome = lifecycle.ensure_current(settings, server.account, now=later)
    assert outcome.issued and not outcome.error, outcome
    root = pebble_root(pebble, folder)
    served = wait_until(
        lambda: verifies(server.port, "127.0.0.1", root), 10, "pebble's certificate served"
    )
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    settled = lifecycle.ensure_current(settings, server.account, now=later)
    assert not settled.issued and not settled.error
    assert settled.next_attempt_after > 0  # when renewal is due
    shown = cli("cert", "show", "--settings", str(settings.source)).stdout
    assert "failed" not in shown  # the earlier failure is forgotten
    assert f"issuer:      {served.issuer.rfc4514_string()}" in shown
    meta = CertificateStore(settings.state_dir, server.account).meta()
    assert f"account:     {meta['account']}" in shown and "renewal:     from " in shown
    refused = cli("cert", "ca", "--settings", str(settings.source))
    assert refused.returncode == 1 and "nothing to trust" in refused.stderr

    # Renewal comes by itself once due, and a new name is ordered at once, both served live.
    due = later + timedelta(seconds=settled.next_attempt_after + 60)
    renewed = lifecycle.ensure_current(settings, server.account, now=due)
    assert renewed.issued and renewed.reason.startswith("a third of its lifetime is left")
    wider = loaded(acme_settings(["127.0.0.1", "more.test"]))
    widened = lifecycle.ensure_current(wider, server.account, now=due)
    assert widened.issued and widened.reason == "the names changed"
    wait_until(
        lambda: verifies(server.port, "more.test", root), 10, "the certificate for the new name"
    )


def test_tls_alpn01_on_the_https_port_for_a_name_and_an_ip(acme_settings, pebble, jupyter, folder):
    settings = loaded(acme_settings(["alpn.test", "127.0.0.1"], acme_http_port=0))
    pebble.start()
    server = jupyter(settings)
    outcome = lifecycle.ensure_current(settings, server.account)
    assert outcome.issued and not outcome.error, outcome
    root = pebble_root(pebble, folder)
    wait_until(
        lambda: verifies(server.port, "alpn.test", root), 10, "pebble's certificate for the name"
    )
    assert verifies(server.port, "127.0.0.1", root)
    meta = CertificateStore(settings.state_dir, server.account).meta()
    assert meta["source"] == "acme" and meta["account"].startswith(
        f"https://127.0.0.1:{pebble.port}/"
    )


def handshake(port: int, name: str, protocols: list[str]) -> tuple[x509.Certificate, str | None]:
    """The certificate served to a client offering `protocols` for `name`, and the one agreed."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_alpn_protocols(protocols)
    with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
          context.wrap_socket(raw, server_hostname=name) as tls):
        served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
        return served, tls.selected_alpn_protocol()


def test_while_a_challenge_is_pending_only_the_ca_gets_the_challenge_certificate(
    acme_settings, jupyter
):
    settings = loaded(acme_settings(["alpn.test"], acme_http_port=0))
    server = jupyter(settings)
    pending = acme.challenge_dir(settings.state_dir) / "tls-alpn-01" / "alpn.test.pem"
    pending.parent.mkdir(parents=True, exist_ok=True)
    pending.write_bytes(acme.tls_alpn_certificate("alpn.test", "token.thumbprint"))
    try:
        answer, agreed = handshake(server.port, "alpn.test", ["acme-tls/1"])
        assert agreed == "acme-tls/1"
        assert answer.extensions.get_extension_for_oid(acme.ACME_IDENTIFIER_OID).critical
        browser, agreed = handshake(server.port, "alpn.test", ["h2", "http/1.1"])
        assert agreed is None  # Jupyter speaks HTTP/1.1 without ALPN, as before
        assert browser.issuer.rfc4514_string().startswith("CN=jupyter-remote CA")  # the live one
    finally:
        pending.unlink()
    after, agreed = handshake(server.port, "alpn.test", ["acme-tls/1"])
    assert after == browser and agreed is None


def test_a_refused_name_is_not_asked_for_again_until_the_settings_change(
    acme_settings, pebble, account
):
    path = acme_settings([BLOCKED_NAME])
    settings = loaded(path)
    pebble.start()
    owner = serving_account(settings)
    first = lifecycle.ensure_current(settings, owner)
    assert first.retry_blocked and first.next_attempt_after is None
    assert first.error.startswith(f"the CA refused {BLOCKED_NAME}: ")
    assert first.error.endswith("; no new attempt until the settings change")
    store = CertificateStore(settings.state_dir, owner)
    assert store.meta()["source"] == "self-signed"  # the local CA's keeps the server reachable
    state = (store.root / "acme" / acme.STATE).read_text()

    pebble.stop()  # asking it now would fail differently: "cannot reach"
    later = datetime.now(UTC) + timedelta(days=2)
    again = lifecycle.ensure_current(settings, owner, now=later)
    assert (again.error, again.retry_blocked) == (first.error, True)
    assert (store.root / "acme" / acme.STATE).read_text() == state

    changed = loaded(acme_settings([BLOCKED_NAME, "jupyter.test"]))
    retried = lifecycle.ensure_current(changed, owner, now=later)
    assert retried.error.startswith("cannot reach the ACME server")


class HangUp:
    """A CA that is down: accepts each connection and closes it at once, counting them."""

    def __init__(self) -> None:
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.seen = 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.seen += 1
            connection.close()

    def connections(self) -> int:
        seen, self.seen = self.seen, 0
        return seen

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self.thread.join(10)


def test_an_unreachable_ca_is_asked_again_only_after_the_backoff(make_settings, account):
    down = HangUp()
    url = f"https://127.0.0.1:{down.port}/dir"
    settings = loaded(
        make_settings(tls={"mode": "acme", "acme_directory": url, "hostnames": ["x.test"]})
    )
    owner = serving_account(settings)
    connections = down.connections
    now = datetime.now(UTC)
    try:
        first = lifecycle.ensure_current(settings, owner, now=now)
        assert first.error.startswith(f"cannot reach the ACME server {url}: ")
        assert 48 <= first.next_attempt_after <= 72
        assert CertificateStore(settings.state_dir, owner).meta()["source"] == "self-signed"
        assert connections() >= 1
        soon = lifecycle.ensure_current(settings, owner, now=now + timedelta(seconds=30))
        assert soon.error == first.error and connections() == 0
        later = lifecycle.ensure_current(settings, owner, now=now + timedelta(seconds=80))
        assert connections() >= 1
        assert (
            96 <= later.next_attempt_after <= 144
        )  # the second failure in a row waits twice as long
    finally:
        down.close()


def test_tls_alpn01_through_the_daemon_renews_live_under_load(serve, pebble, folder):
    """The daemon's Jupyter answers TLS-ALPN-01 on its HTTPS port; each new certificate reaches new
    connections with none failing, and a kernel keeps its state over its open websocket."""
    from test_tls_live import Prober, fingerprint_of, open_kernel

    pebble.start()
    serving = serve(
        server={"port": pebble.tls_port},
        tls={
            "mode": "acme",
            "acme_directory": pebble.directory,
            "hostnames": ["127.0.0.1"],
            "acme_ca_bundle": str(pebble.listener_ca),
            "acme_http_port": 0,
        },
    )
    settings = loaded(serving.settings)
    owner = serving_account(settings)
    kernel = open_kernel(serving.base, serving.ca, serving.password)
    jupyter_pid = serving.daemon.status()["jupyter_pid"]
    trust = folder / "trust.pem"  # what a browser trusts, plus the local CA served until the first
    trust.write_bytes(pebble.root_pem() + Path(serving.ca).read_bytes())
    root = pebble_root(pebble, folder)
    # Once Jupyter serves, the daemon orders by itself: a certificate every browser trusts.
    wait_until(lambda: verifies(serving.port, "127.0.0.1", root) is not None, 60,
               "the daemon's own certificate from pebble served")
    assert serving.daemon.status()["last_error"] == ""
    durations, issued = [], set()
    with Prober(serving.port, str(trust)) as prober:
        for number in range(3):
            started = time.monotonic()
            outcome = lifecycle.ensure_current(settings, owner, renew_because=f"test renewal {number}")
            durations.append(time.monotonic() - started)
            assert outcome.issued and not outcome.error, outcome
            issued.add(outcome.sha256)
            wait_until(
                lambda wanted=outcome.sha256: (
                    (served := verifies(serving.port, "127.0.0.1", root)) is not None
                    and fingerprint_of(served.public_bytes(serialization.Encoding.DER)) == wanted
                ),
                10,
                f"certificate {number + 1} from pebble served",
            )
    print(
        f"\nacme (pebble, tls-alpn-01): 3 orders, {prober.connections} connections, "
        f"{len(prober.failures)} failed, {prober.hangs} hung; order mean {sum(durations) / 3:.2f} s"
    )
    assert prober.failures == [] and prober.hangs == 0
    assert issued <= set(prober.seen) and prober.connections > 20
    assert kernel.execute("print(state + 1)").strip() == "42"
    status = serving.daemon.status()
    assert status["jupyter_pid"] == jupyter_pid and status["restarts"] == 0
    kernel.close()


def test_a_failed_check_says_what_to_open_and_the_account_is_kept(acme_settings, pebble):
    """Nobody answers on the HTTP-01 port: the CA's own words and what to do; the account (key
    root's alone) is reused by the next attempt, also after the contact address changed."""
    settings = loaded(acme_settings(["127.0.0.1"]))
    pebble.start()
    owner = serving_account(settings)
    failed = lifecycle.ensure_current(settings, owner)
    assert failed.error.startswith("the CA could not validate 127.0.0.1 (port 80): ")
    assert (
        "open port 80 of 127.0.0.1 to the internet (on AWS: in the security group)" in failed.error
    )
    assert 240 <= failed.next_attempt_after <= 360  # a failed check waits longer than a blip
    accounts = list(
        (CertificateStore(settings.state_dir, owner).root / "acme" / "accounts").iterdir()
    )
    assert len(accounts) == 1
    key = accounts[0] / "key.pem"
    assert (key.stat().st_uid, key.stat().st_mode & 0o777) == (os.geteuid(), 0o600)  # root's
    first = json.loads((accounts[0] / "account.json").read_text())["uri"]

    with_email = loaded(acme_settings(["127.0.0.1"], acme_email="ops@jupyter.test"))
    again = lifecycle.ensure_current(with_email, owner)  # new settings: tried at once
    assert again.error.startswith("the CA could not validate 127.0.0.1")
    known = json.loads((accounts[0] / "account.json").read_text())
    assert known == {"uri": first, "email": "ops@jupyter.test"}
    assert contact_at_the_ca(pebble, key, first) == ("mailto:ops@jupyter.test",)


def contact_at_the_ca(pebble: Pebble, key_file: Path, uri: str) -> tuple[str, ...]:
    """The account's contact as the CA has it, asked with the account's own key."""
    import josepy as jose
    from acme import client, messages
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    key = jose.JWKEC(key=load_pem_private_key(key_file.read_bytes(), password=None))
    net = client.ClientNetwork(key, alg=jose.ES256, verify_ssl=str(pebble.listener_ca))
    net.session.trust_env = False
    ca = client.ClientV2(client.ClientV2.get_directory(pebble.directory, net), net)
    account = messages.RegistrationResource(uri=uri, body=messages.Registration())
    net.account = account
    return tuple(ca.query_registration(account).body.contact)


def test_a_fresh_start_serves_a_trusted_certificate_by_http01_with_no_step(serve, pebble, folder):
    """The whole promise, through the real daemon: start in acme mode with a DNS name; the daemon
    binds port 80's stand-in, Jupyter answers HTTP-01 on it, and the certificate served verifies
    against the CA's root, with no step by anyone; plain HTTP redirects to HTTPS."""
    pebble.start()
    serving = serve(tls={
        "mode": "acme",
        "acme_directory": pebble.directory,
        "hostnames": ["jupyter.test"],
        "acme_ca_bundle": str(pebble.listener_ca),
        "acme_http_port": pebble.http_port,
    })
    root = pebble_root(pebble, folder)
    wait_until(lambda: verifies(serving.port, "jupyter.test", root) is not None, 60,
               "the daemon's own certificate from pebble, by HTTP-01")
    assert serving.daemon.status()["last_error"] == ""
    session = requests.Session()
    session.trust_env = False
    redirect = session.get(f"http://127.0.0.1:{pebble.http_port}/lab", allow_redirects=False,
                           timeout=10)
    assert redirect.status_code == 301 and redirect.headers["Location"].startswith("https://")
