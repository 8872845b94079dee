"""The TLS lifecycle with real crypto and real files: the local CA, its leaf, renewal, repair.

Certificates are parsed back with `cryptography` and verified by OpenSSL through Python's `ssl`
module against a TLS server on 127.0.0.1 that serves them with the extension's own context.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import os
import pwd
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, UTC
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from support import JUPYTER_REMOTE, StandInMetadataService, cli

from supervisor import hints
from supervisor.accounts import serving_account
from supervisor.errors import JupyterRemoteError
from supervisor.inside_jupyter.jupyter_remote_ext import build_tls_context
from supervisor.loading import load
from supervisor.settings import Settings
from supervisor.tls import CertificateInfo, issue, lifecycle
from supervisor.tls.names import IMDS_URL_VARIABLE, Names
from supervisor.tls.policy import renewal_reason, within_constraints
from supervisor.tls.store import CertificateStore

T0 = datetime(2030, 6, 1, 12, 0, tzinfo=UTC)


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture
def tls_settings(make_settings: Callable[..., Path]) -> Callable[..., Settings]:
    """Settings (self-signed, no cloud metadata unless asked) loaded from a real settings.toml."""

    def make(**tls: Any) -> Settings:
        return load(make_settings(tls={"cloud_metadata": False, **tls}))

    return make


def ensure(settings: Settings, **kwargs: Any) -> CertificateInfo:
    return lifecycle.ensure_current(settings, serving_account(settings), **kwargs)


def store_of(settings: Settings) -> CertificateStore:
    return CertificateStore(settings.state_dir, serving_account(settings))


def read_certificate(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def live_leaf(settings: Settings) -> x509.Certificate:
    return read_certificate(store_of(settings).certfile)


def ca_of(settings: Settings) -> x509.Certificate:
    return read_certificate(store_of(settings).ca_certificate)


def sha256(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest()


def sans(certificate: x509.Certificate) -> tuple[set[str], set[str]]:
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    ips = {str(address) for address in san.get_values_for_type(x509.IPAddress)}
    return set(san.get_values_for_type(x509.DNSName)), ips


def permitted_subtrees(ca: x509.Certificate) -> list[x509.GeneralName]:
    constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    assert constraints.excluded_subtrees is None
    return list(constraints.permitted_subtrees or [])


class TlsServer:
    """A TLS server on 127.0.0.1 in a thread, serving with a given context; answers b"ok"."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self.running = True
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while self.running:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                continue
            raw.settimeout(5)
            try:
                with self.context.wrap_socket(raw, server_side=True) as tls:
                    tls.sendall(b"ok")
            except OSError:
                pass  # a client that refused our certificate: that is what some tests want

    def handshake(self, ca_file: Path, server_hostname: str, **versions: ssl.TLSVersion) -> str:
        """Connect as a browser trusting only `ca_file` would; returns the TLS version agreed."""
        client = ssl.create_default_context(cafile=str(ca_file))
        for attribute, version in versions.items():
            setattr(client, attribute, version)
        with (socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw,
              client.wrap_socket(raw, server_hostname=server_hostname) as tls):
            assert tls.recv(2) == b"ok"
            return tls.version() or ""

    def close(self) -> None:
        self.running = False
        self.thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def tls_server() -> Iterator[Callable[[Path], TlsServer]]:
    servers: list[TlsServer] = []

    def start(version_dir: Path) -> TlsServer:
        servers.append(TlsServer(build_tls_context(str(version_dir))))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def serve_live(settings: Settings, tls_server: Callable[[Path], TlsServer]) -> TlsServer:
    version = store_of(settings).live_version()
    assert version is not None
    return tls_server(version)


def own_addresses() -> set[str]:
    """The machine's addresses as iproute2 reports them (not psutil, which the code under test
    uses), without the link-local ones: no URL can name those without a zone."""
    result = subprocess.run(["ip", "-json", "address", "show"], capture_output=True, text=True,
                            check=True, timeout=30)
    return {str(ipaddress.ip_address(entry["local"]))
            for interface in json.loads(result.stdout) for entry in interface.get("addr_info", [])
            if entry.get("family") in ("inet", "inet6") and entry.get("scope") != "link"}


def run_as(account: Any, code: str) -> subprocess.CompletedProcess[str]:
    entry = pwd.getpwnam(account.name)
    return subprocess.run([sys.executable, "-c", code], user=entry.pw_uid, group=entry.pw_gid,
                          extra_groups=[], capture_output=True, text=True, timeout=30)


# --- the CA and the leaf -------------------------------------------------------------------------


def test_ca_and_leaf_parse_back_with_the_promised_contents(tls_settings):
    settings = tls_settings(hostnames=["jr.example.org", "203.0.113.7"])
    ensure(settings)
    ca, leaf = ca_of(settings), live_leaf(settings)

    for certificate in (ca, leaf):
        assert isinstance(certificate.public_key(), ec.EllipticCurvePublicKey)
        assert certificate.public_key().curve.name == "secp256r1"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert ca.not_valid_after_utc - ca.not_valid_before_utc == timedelta(days=3650)

    # Name constraints: DNS names only, this server's; IP addresses stay unconstrained.
    subtrees = permitted_subtrees(ca)
    assert all(isinstance(s, x509.DNSName) for s in subtrees)
    hostname = socket.gethostname().lower()
    assert {s.value for s in subtrees} >= {"jr.example.org", "localhost", hostname}

    dns, ips = sans(leaf)
    assert dns >= {"jr.example.org", "localhost", hostname}
    assert ips >= {"127.0.0.1", "::1", "203.0.113.7"} | own_addresses()
    assert ips <= {"203.0.113.7", "127.0.0.1", "::1"} | own_addresses()
    assert all(within_constraints(name, [s.value for s in subtrees]) for name in dns)
    assert leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value == \
        x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=365)
    assert leaf.issuer == ca.subject
    leaf.verify_directly_issued_by(ca)


def test_validity_days_is_the_leaf_lifetime_exactly(tls_settings):
    # Apple refuses a server certificate living longer than 825 days, by even an hour.
    settings = tls_settings(validity_days=825, renew_before_days=30)
    ensure(settings)
    leaf = live_leaf(settings)
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == timedelta(days=825)


@pytest.mark.skipif(os.geteuid() != 0, reason="as a user, the CA and the account's key are both ours")
def test_file_modes_and_owners(tls_settings, account):
    settings = tls_settings()
    ensure(settings)
    store = store_of(settings)
    ca_dir = store.ca_dir.stat()
    assert (ca_dir.st_mode & 0o777, ca_dir.st_uid) == (0o700, 0)
    ca_key = store.ca_key.stat()
    assert (ca_key.st_mode & 0o777, ca_key.st_uid) == (0o600, 0)
    leaf_key = store.keyfile.stat()
    # Root's, the account's group may read it: Jupyter loads it, and cannot replace it.
    assert (leaf_key.st_mode & 0o777, leaf_key.st_uid, leaf_key.st_gid) == (0o640, 0, account.gid)
    assert store.certfile.stat().st_mode & 0o777 == 0o644
    lock = (store.root / ".lock").stat()
    assert (lock.st_mode & 0o777, lock.st_uid) == (0o600, 0)

    # What those bits mean to the Jupyter account: its key to read, not to change; the CA's key
    # not at all; the lock not at all (holding it would stall every renewal).
    attempts = [(str(store.keyfile), "rb"), (str(store.keyfile), "r+b"), (str(store.ca_key), "rb"),
                (str(store.root / ".lock"), "rb")]
    result = run_as(account, (
        "import fcntl\n"
        f"for path, how in {attempts!r}:\n"
        "    try:\n"
        "        fcntl.flock(open(path, how), fcntl.LOCK_EX | fcntl.LOCK_NB); print('opened', how, path)\n"
        "    except PermissionError:\n        print('denied', how, path)\n"
    ))
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:4] == [
        f"opened rb {store.keyfile}", f"denied r+b {store.keyfile}", f"denied rb {store.ca_key}",
        f"denied rb {store.root / '.lock'}"]


def test_leaf_verifies_against_the_ca_for_local_names(tls_settings, tls_server):
    settings = tls_settings(hostnames=["jr.example.org"])
    ensure(settings)
    server = serve_live(settings, tls_server)
    ca_file = store_of(settings).ca_certificate
    for name in ("localhost", "127.0.0.1", "::1", "jr.example.org", socket.gethostname()):
        server.handshake(ca_file, name)
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        server.handshake(ca_file, "not-configured.example.org")


def test_tls_12_and_13_are_accepted_and_the_minimum_is_12(tls_settings, tls_server):
    settings = tls_settings()
    ensure(settings)
    assert build_tls_context(str(store_of(settings).live_version())).minimum_version == ssl.TLSVersion.TLSv1_2
    server = serve_live(settings, tls_server)
    ca_file = store_of(settings).ca_certificate
    tls12 = server.handshake(ca_file, "localhost", maximum_version=ssl.TLSVersion.TLSv1_2)
    tls13 = server.handshake(ca_file, "localhost", minimum_version=ssl.TLSVersion.TLSv1_3)
    assert (tls12, tls13) == ("TLSv1.2", "TLSv1.3")


def test_the_ca_cannot_vouch_for_a_name_outside_its_constraints(tls_settings, tls_server, folder):
    settings = tls_settings()
    ensure(settings)
    store = store_of(settings)
    ca = lifecycle._load_ca(store)
    # Someone holding the CA key signs a certificate for another site (and our loopback address).
    rogue = issue.make_leaf(ca, Names(("www.example.com",), ("127.0.0.1",)), 30, lifecycle.utcnow())
    rogue_dir = folder / "rogue"
    rogue_dir.mkdir()
    (rogue_dir / "fullchain.pem").write_bytes(rogue.certificate_pem)
    (rogue_dir / "privkey.pem").write_bytes(rogue.key_pem)
    server = tls_server(rogue_dir)
    # OpenSSL refuses every name of a leaf with one DNS name outside the constraints.
    for name in ("www.example.com", "127.0.0.1"):
        with pytest.raises(ssl.SSLCertVerificationError, match=r"name constraint|permitted"):
            server.handshake(store.ca_certificate, name)


# --- names and the CA's constraints --------------------------------------------------------------


def test_a_new_dns_name_outside_the_constraints_makes_a_new_ca_and_says_so(tls_settings, tls_server, caplog):
    settings = tls_settings(hostnames=["a.example.org"])
    ensure(settings)
    first_ca = sha256(ca_of(settings))

    # A name below a permitted one, and new IP addresses, fit the CA we have.
    settings = tls_settings(hostnames=["a.example.org", "lab.a.example.org", "198.51.100.4"])
    outcome = ensure(settings)
    assert outcome.issued and "+lab.a.example.org" in outcome.reason and "+198.51.100.4" in outcome.reason
    assert sha256(ca_of(settings)) == first_ca and outcome.notices == ()

    settings = tls_settings(hostnames=["a.example.org", "b.example.net"])
    with caplog.at_level(logging.INFO, logger="supervisor.tls.lifecycle"):
        outcome = ensure(settings)
    assert sha256(ca_of(settings)) != first_ca
    assert "local CA made: new names outside the CA's constraints: b.example.net" in caplog.text
    assert any("browsers must trust the new one" in n and "b.example.net" in n for n in outcome.notices)
    assert "b.example.net" in {s.value for s in permitted_subtrees(ca_of(settings))}
    serve_live(settings, tls_server).handshake(store_of(settings).ca_certificate, "b.example.net")

    for command in (("cert", "show"), ("check",)):
        result = cli(*command, "--settings", str(settings.source))
        assert result.returncode == 0, result.stderr
        trust = hints.command(settings.source, "cert", "ca")  # test_experience runs such hints
        assert f"browsers must trust the new one ({trust})" in result.stdout, command


def test_changed_ip_names_never_make_a_new_ca(tls_settings):
    settings = tls_settings(hostnames=["203.0.113.7"])
    ensure(settings)
    first_ca = sha256(ca_of(settings))
    settings = tls_settings(hostnames=["203.0.113.99", "2001:db8::5"])
    outcome = ensure(settings)
    assert outcome.issued and outcome.notices == ()
    assert sha256(ca_of(settings)) == first_ca
    assert {"203.0.113.99", "2001:db8::5"} <= sans(live_leaf(settings))[1]
    assert "203.0.113.7" not in sans(live_leaf(settings))[1]


def test_an_expiring_ca_is_replaced_before_it_would_sign_a_leaf_outliving_it(tls_settings):
    settings = tls_settings()
    ensure(settings, now=T0)
    first_ca = ca_of(settings)
    late = first_ca.not_valid_after_utc - timedelta(days=200)  # a 365-day leaf would outlive it
    outcome = ensure(settings, now=late)
    assert outcome.issued and sha256(ca_of(settings)) != sha256(first_ca)
    assert live_leaf(settings).not_valid_after_utc <= ca_of(settings).not_valid_after_utc
    assert any("the CA expires on" in n and "trust the new one" in n for n in outcome.notices)


# --- the renewal rule, a pure function of the certificate and `now` ------------------------------


@pytest.fixture(scope="module")
def policy_leaf() -> x509.Certificate:
    ca = issue.make_ca(["example.org"], T0)
    return issue.make_leaf(ca, Names(("example.org",), ("127.0.0.1",)), 365, T0).certificate


SAME = Names(("example.org",), ("127.0.0.1",))


@pytest.mark.parametrize("now, wanted, expected", [
    (T0, SAME, None),
    (T0 + timedelta(days=300), SAME, None),
    (T0 + timedelta(days=335) - timedelta(hours=1), SAME, None),  # exactly 30 days left: not yet
    (T0 + timedelta(days=335), SAME, "29 days left, fewer than renew_before_days (30)"),
    (T0 + timedelta(days=365), SAME, "it expired on 2031-06-01"),
    (T0 + timedelta(days=900), None, "it expired on 2031-06-01"),
    (T0 - timedelta(hours=2), SAME, "the clock is before the certificate's start"),
    (T0, Names(("example.org",), ("127.0.0.1", "198.51.100.4")), "the names changed (+198.51.100.4)"),
    (T0, Names(("example.org", "lab.example.org"), ()), "the names changed (+lab.example.org -127.0.0.1)"),
    (T0, None, None),  # files mode: the names are the certificate owner's business
])
def test_renewal_reason(policy_leaf, now, wanted, expected):
    reason = renewal_reason(policy_leaf, wanted, now, renew_before_days=30)
    if expected is None:
        assert reason is None
    else:
        assert reason is not None and reason.startswith(expected), reason


def test_renewal_due_by_the_injected_clock_reissues(tls_settings):
    settings = tls_settings(validity_days=100, renew_before_days=10)
    first = ensure(settings, now=T0)
    assert ensure(settings, now=T0 + timedelta(days=80)).issued is False
    due = ensure(settings, now=T0 + timedelta(days=95))
    assert due.issued and "days left" in due.reason and due.sha256 != first.sha256
    assert live_leaf(settings).not_valid_before_utc == T0 + timedelta(days=95) - issue.CLOCK_SKEW


@pytest.mark.parametrize("name, permitted, inside", [
    ("example.org", ["example.org"], True),
    ("Lab.Example.org", ["example.org"], True),
    ("badexample.org", ["example.org"], False),
    ("example.org.evil.net", ["example.org"], False),
    ("ec2-3-4-5-6.compute-1.amazonaws.com", ["compute-1.amazonaws.com"], True),
])
def test_within_constraints(name, permitted, inside):
    assert within_constraints(name, permitted) is inside


# --- an interrupted switch, damaged files, a failed issuance -------------------------------------


def test_an_interrupted_switch_is_cleaned_up_and_the_live_certificate_kept(tls_settings):
    settings = tls_settings()
    first = ensure(settings)
    store = store_of(settings)
    # A crash after the new link was made but before the rename, and one while a version was written.
    os.symlink("versions/0001", store.root / ".live.new")
    staging = store.versions / ".new-abc123"
    staging.mkdir()
    (staging / "fullchain.pem").write_text("-----BEGIN CERT")
    outcome = ensure(settings)
    assert not outcome.issued and outcome.sha256 == first.sha256
    assert not (store.root / ".live.new").is_symlink() and not staging.exists()
    assert sorted(p.name for p in store.versions.iterdir()) == ["0001"]


def test_a_live_link_to_a_deleted_version_is_repaired(tls_settings, tls_server):
    settings = tls_settings()
    ensure(settings)
    second = ensure(settings, renew_because="test")
    store = store_of(settings)
    shutil.rmtree(store.versions / second.version)
    outcome = ensure(settings)
    assert store.live_version() is not None and store.live_version().name == "0001"
    assert not outcome.issued  # version 0001 is complete and current
    serve_live(settings, tls_server).handshake(store.ca_certificate, "localhost")

    shutil.rmtree(store.versions / "0001")  # nothing left to point at: a new one is issued
    outcome = ensure(settings)
    assert outcome.issued and outcome.reason == "no live certificate"
    serve_live(settings, tls_server).handshake(store.ca_certificate, "localhost")


@pytest.mark.parametrize("damage", ["truncated chain", "garbage key", "other key", "deleted key"])
def test_damaged_live_files_are_replaced(tls_settings, tls_server, damage):
    settings = tls_settings()
    first = ensure(settings)
    store = store_of(settings)
    version = store.versions / first.version
    if damage == "truncated chain":
        chain = version / "fullchain.pem"
        chain.write_bytes(chain.read_bytes()[:200])
    elif damage == "garbage key":
        (version / "privkey.pem").write_bytes(b"\0" * 64)
    elif damage == "other key":
        stranger = ec.generate_private_key(ec.SECP256R1())
        (version / "privkey.pem").write_bytes(stranger.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    else:
        (version / "privkey.pem").unlink()
    outcome = ensure(settings)
    assert outcome.issued and outcome.sha256 != first.sha256
    serve_live(settings, tls_server).handshake(store.ca_certificate, "127.0.0.1")


def test_cert_show_on_a_damaged_certificate_is_one_line_not_a_traceback(tls_settings):
    settings = tls_settings()
    ensure(settings)
    store_of(settings).certfile.write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    result = cli("cert", "show", "--settings", str(settings.source))
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert f"is damaged: `{hints.command(settings.source, 'cert', 'renew')}` replaces it" in result.stdout


def test_a_failed_issuance_leaves_the_live_certificate_and_says_why_in_one_line(tls_settings, tls_server):
    settings = tls_settings()
    first = ensure(settings)
    store = store_of(settings)

    def small_files() -> None:
        # The disk "fills up" after 300 bytes of any file: the new certificate cannot be written.
        resource.setrlimit(resource.RLIMIT_FSIZE, (300, 300))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    # Not measured by scripts/coverage: its data file could not be written either.
    result = subprocess.run([JUPYTER_REMOTE, "cert", "renew", "--settings", str(settings.source)],
                            capture_output=True, text=True, timeout=60, preexec_fn=small_files,
                            env={**os.environ, "COVERAGE_PROCESS_START": ""})
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"{store.root}: cannot update the certificate (File too large); the live certificate is unchanged"
    ]
    assert store.live_version().name == first.version
    assert sorted(p.name for p in store.versions.iterdir()) == [first.version]  # none half-written
    assert sha256(live_leaf(settings)) == first.sha256
    serve_live(settings, tls_server).handshake(store.ca_certificate, "localhost")
    assert ensure(settings, renew_because="disk has room again").issued


def test_a_state_folder_that_cannot_hold_versions_is_a_clear_error(tls_settings):
    settings = tls_settings()
    (settings.state_dir / "tls").mkdir(parents=True)
    (settings.state_dir / "tls" / "versions").write_text("not a folder")
    with pytest.raises(JupyterRemoteError) as raised:
        ensure(settings)
    assert raised.value.lines == [(
        f"{settings.state_dir}/tls: cannot update the certificate (File exists: "
        f"{settings.state_dir}/tls/versions); the live certificate is unchanged"
    )]


# --- the cloud's public names --------------------------------------------------------------------


@pytest.fixture
def imds(monkeypatch) -> Iterator[StandInMetadataService]:
    service = StandInMetadataService("54.1.2.3", "ec2-54-1-2-3.compute-1.amazonaws.com")
    monkeypatch.setenv(IMDS_URL_VARIABLE, service.url)
    yield service
    service.close()


def test_cloud_public_names_are_covered_and_a_new_address_needs_no_new_ca(tls_settings, imds, tls_server):
    settings = tls_settings(cloud_metadata=True)
    ensure(settings)
    assert imds.requests[0] == "PUT /latest/api/token" and imds.violations == []
    dns, ips = sans(live_leaf(settings))
    assert "ec2-54-1-2-3.compute-1.amazonaws.com" in dns and "54.1.2.3" in ips
    permitted = {s.value for s in permitted_subtrees(ca_of(settings))}
    assert "compute-1.amazonaws.com" in permitted
    assert "ec2-54-1-2-3.compute-1.amazonaws.com" not in permitted  # the suffix covers it
    first_ca = sha256(ca_of(settings))

    # Stop and start: a new public address and name.
    imds.answers.update({"public-ipv4": "54.9.8.7",
                         "public-hostname": "ec2-54-9-8-7.compute-1.amazonaws.com"})
    outcome = ensure(settings)
    assert outcome.issued and "+ec2-54-9-8-7.compute-1.amazonaws.com" in outcome.reason
    assert sha256(ca_of(settings)) == first_ca and outcome.notices == ()
    server = serve_live(settings, tls_server)
    for name in ("ec2-54-9-8-7.compute-1.amazonaws.com", "54.9.8.7"):
        server.handshake(store_of(settings).ca_certificate, name)
    assert imds.violations == []


def test_a_silent_metadata_service_keeps_the_last_public_names(tls_settings, imds):
    settings = tls_settings(cloud_metadata=True)
    first = ensure(settings)
    imds.close()  # the service stops answering: the names are unknown, not gone
    outcome = ensure(settings)
    assert not outcome.issued and outcome.sha256 == first.sha256
    result = cli("cert", "show", "--settings", str(settings.source), env={IMDS_URL_VARIABLE: imds.url})
    assert result.returncode == 0 and "renewal due" not in result.stdout, result.stdout
    assert "54.1.2.3" in result.stdout


def test_cloud_metadata_off_asks_nothing(tls_settings, imds):
    settings = tls_settings(cloud_metadata=False)
    ensure(settings)
    assert imds.requests == []
    assert "54.1.2.3" not in sans(live_leaf(settings))[1]


# --- what an operator reads ----------------------------------------------------------------------


def test_cert_show_ca_and_check_tell_an_operator_what_they_need(tls_settings):
    settings = tls_settings(hostnames=["jr.example.org"])
    ensure(settings)
    leaf, ca = live_leaf(settings), ca_of(settings)

    def colons(certificate: x509.Certificate) -> str:
        digest = sha256(certificate).upper()
        return ":".join(digest[i:i + 2] for i in range(0, 64, 2))

    show = cli("cert", "show", "--settings", str(settings.source))
    assert show.returncode == 0, show.stderr
    days_left = (leaf.not_valid_after_utc - lifecycle.utcnow()).days
    for expected in (f"subject:     {leaf.subject.rfc4514_string()}", "jr.example.org", "127.0.0.1", "::1",
                     f"not after:   {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC ({days_left} days left)",
                     f"sha256:      {colons(leaf)}", f"CA sha256:   {colons(ca)}"):
        assert expected in show.stdout, expected

    pem = cli("cert", "ca", "--settings", str(settings.source))
    assert pem.returncode == 0 and x509.load_pem_x509_certificate(pem.stdout.encode()) == ca

    check = cli("check", "--settings", str(settings.source))
    assert check.returncode == 0, check.stderr
    assert f"not after:   {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC" in check.stdout


def test_files_mode_errors_name_the_file_section_and_key(make_settings, folder):
    chain, key = folder / "fullchain.pem", folder / "privkey.pem"
    settings = make_settings(tls={"mode": "files", "cert_file": str(chain), "key_file": str(key)})
    result = cli("check", "--settings", str(settings))
    assert (result.returncode, result.stderr.strip()) == (
        78, f"{settings}: [tls] cert_file: cannot read {chain}: No such file or directory")

    ca = issue.make_ca(["localhost"], lifecycle.utcnow())
    one = issue.make_leaf(ca, Names(("localhost",), ()), 30, lifecycle.utcnow())
    other = issue.make_leaf(ca, Names(("localhost",), ()), 30, lifecycle.utcnow())
    chain.write_bytes(one.certificate_pem)
    key.write_bytes(other.key_pem)
    result = cli("check", "--settings", str(settings))
    assert (result.returncode, result.stderr.strip()) == (
        78, f"{settings}: [tls] key_file: does not match cert_file ({key}, {chain})")

    expired = issue.make_leaf(ca, Names(("localhost",), ()), 1, lifecycle.utcnow() - timedelta(days=3))
    chain.write_bytes(expired.certificate_pem)
    key.write_bytes(expired.key_pem)
    result = cli("check", "--settings", str(settings))
    assert result.returncode == 78
    assert result.stderr.strip().startswith(f"{settings}: [tls] cert_file: expired on ")
    assert "Traceback" not in result.stderr

    key.write_bytes(one.key_pem)
    chain.write_bytes(one.certificate_pem + ca.certificate_pem)
    result = cli("check", "--settings", str(settings))
    assert result.returncode == 0, result.stderr
    assert f"{chain}: valid until" in result.stdout
