"""Certificate changes on a busy, real `jupyter lab`: no failed connection, no lost kernel.

While a thread opens new TLS connections back to back (each verified against the CA, each a
`GET /api` with a bounded wait) and a kernel holds state over an open websocket, the certificate
is renewed (self-signed mode) or replaced the way certbot replaces it (files mode).
"""

from __future__ import annotations

import hashlib
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from support import JupyterClient, cli, wait_until

from supervisor.accounts import serving_account
from supervisor.health import CERTIFICATE_SWAP_GRACE
from supervisor.loading import load
from supervisor.tls import issue, lifecycle
from supervisor.tls.names import Names
from supervisor.tls.store import CertificateStore

RENEWALS = 50
RENEWALS_BY_CLI = 5  # the rest in-process: the same code without a Python start-up each
SERVED_WITHIN = 2.0  # seconds from a renewal to new connections getting it (the issue's bound)
CONNECTION_BOUND = 5.0  # a connection that needs longer than this counts as hung


def fingerprint_of(der: bytes) -> str:
    return hashlib.sha256(der).hexdigest()


def served_fingerprint(port: int, ca: str, **versions: ssl.TLSVersion) -> tuple[str, str]:
    """One new verified TLS connection: the certificate served and the protocol agreed."""
    context = ssl.create_default_context(cafile=ca)
    for attribute, version in versions.items():
        setattr(context, attribute, version)
    with (socket.create_connection(("127.0.0.1", port), timeout=CONNECTION_BOUND) as raw,
          context.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
        return fingerprint_of(tls.getpeercert(binary_form=True)), tls.version() or ""


@dataclass
class Prober:
    """New TLS connections back to back from a thread; each one must verify and get HTTP 200."""

    port: int
    ca: str
    connections: int = 0
    failures: list[str] = field(default_factory=list)
    hangs: int = 0
    seen: set[str] = field(default_factory=set)
    served: list[tuple[float, str]] = field(default_factory=list)  # (time.monotonic(), sha256)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._context = ssl.create_default_context(cafile=self.ca)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=CONNECTION_BOUND * 3)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._connect_once()

    def _connect_once(self) -> None:
        deadline = time.monotonic() + CONNECTION_BOUND
        try:
            with (socket.create_connection(("127.0.0.1", self.port), timeout=CONNECTION_BOUND) as raw,
                  self._context.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
                served = fingerprint_of(tls.getpeercert(binary_form=True))
                self.seen.add(served)
                self.served.append((time.monotonic(), served))
                tls.sendall(f"GET /api HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
                            "Connection: close\r\n\r\n".encode())
                answer = b""
                while time.monotonic() < deadline:
                    tls.settimeout(max(deadline - time.monotonic(), 0.01))
                    chunk = tls.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
                else:
                    raise TimeoutError("no complete answer")
            if not answer.startswith(b"HTTP/1.1 200"):
                self.failures.append(f"answer: {answer[:60]!r}")
        except TimeoutError:
            self.hangs += 1
        except (OSError, ssl.SSLError) as error:
            self.failures.append(repr(error))
        self.connections += 1


def open_kernel(base: str, ca: str, password: str):
    client = JupyterClient(base, ca)
    assert client.login(password).status_code == 302
    kernel = client.kernel(client.start_kernel())
    kernel.execute("state = 41")
    return kernel


def test_50_renewals_reach_new_connections_and_drop_nothing(serving):
    settings = load(serving.settings)
    account = serving_account(settings)
    store = CertificateStore(settings.state_dir, account)
    kernel = open_kernel(serving.base, serving.ca, serving.password)
    jupyter_pid = serving.daemon.status()["jupyter_pid"]

    latencies, issue_times = [], []
    with Prober(serving.port, serving.ca) as prober:
        for number in range(RENEWALS):
            started = time.monotonic()
            if number < RENEWALS_BY_CLI:
                result = cli("cert", "renew", "--settings", str(serving.settings))
                assert result.returncode == 0, result.stderr
                assert result.stdout.startswith("certificate issued: version ")
                new = (store.meta() or {})["sha256"]
            else:
                outcome = lifecycle.ensure_current(settings, account, renew_because=f"test renewal {number}")
                assert outcome.issued
                new = outcome.sha256
            renewed = time.monotonic()
            issue_times.append(renewed - started)
            wait_until(lambda new=new: served_fingerprint(serving.port, serving.ca)[0] == new, SERVED_WITHIN,
                       f"renewal {number + 1} to be served")
            latencies.append(time.monotonic() - renewed)
            if number % 10 == 9:  # the same websocket answers all along
                assert kernel.execute("print(state)").strip() == "41"

    print(f"\nself-signed: {RENEWALS} renewals; {prober.connections} connections, "
          f"{len(prober.failures)} failed, {prober.hangs} hung; served after "
          f"max {max(latencies):.2f} s, mean {sum(latencies) / len(latencies):.2f} s; "
          f"renewal (CLI) mean {sum(issue_times[:RENEWALS_BY_CLI]) / RENEWALS_BY_CLI:.3f} s, "
          f"(in-process) mean {sum(issue_times[RENEWALS_BY_CLI:]) / (RENEWALS - RENEWALS_BY_CLI):.4f} s")
    assert prober.failures == [] and prober.hangs == 0
    assert prober.connections > RENEWALS * 5
    assert len(prober.seen) > RENEWALS // 2  # the prober did see certificates change under it
    assert kernel.execute("print(state + 1)").strip() == "42"
    status = serving.daemon.status()
    assert status["jupyter_pid"] == jupyter_pid and status["restarts"] == 0
    kernel.close()


def test_renewals_faster_than_the_swap_never_restart_jupyter(serving):
    """A `cert renew` loop in a script, one every 0.1 s: the extension looks once a second, so
    Jupyter serves certificates a few renewals old meanwhile. The daemon tolerates that for
    CERTIFICATE_SWAP_GRACE seconds after each change, and then restarts a Jupyter that still serves
    an old one: watched past that point, nothing may restart and every connection must verify."""
    settings = load(serving.settings)
    account = serving_account(settings)
    kernel = open_kernel(serving.base, serving.ca, serving.password)
    jupyter_pid = serving.daemon.status()["jupyter_pid"]
    issued = {served_fingerprint(serving.port, serving.ca)[0]}
    with Prober(serving.port, serving.ca) as prober:
        for number in range(60):
            issued.add(lifecycle.ensure_current(settings, account, renew_because=f"rapid renewal {number}").sha256)
            time.sleep(0.1)
        last = (CertificateStore(settings.state_dir, account).meta() or {})["sha256"]
        renewed = time.monotonic()
        # Past the grace, and past the failed probes that make a hang (one a second here).
        watch_until = renewed + CERTIFICATE_SWAP_GRACE + 15
        while time.monotonic() < watch_until:
            assert serving.daemon.status()["jupyter_pid"] == jupyter_pid, "Jupyter was restarted"
            time.sleep(1)
    status = serving.daemon.status()
    assert status["jupyter_pid"] == jupyter_pid and status["restarts"] == 0, status
    assert status["state"] == "running"
    assert kernel.execute("print(state + 1)").strip() == "42"
    assert prober.failures == [] and prober.hangs == 0, prober.failures[:5]
    assert prober.seen <= issued  # each connection: one of the certificates just issued
    settled = [sha for at, sha in prober.served if at > renewed + SERVED_WITHIN]
    assert settled and set(settled) == {last}, "new connections must get the last renewal"
    assert "stopped answering" not in serving.daemon.log()
    kernel.close()


def test_a_mismatched_live_pair_is_never_swapped_in(serving):
    settings = load(serving.settings)
    account = serving_account(settings)
    store = CertificateStore(settings.state_dir, account)
    served, _ = served_fingerprint(serving.port, serving.ca)
    # A version whose key is not its certificate's made live behind lifecycle's back (no meta: the
    # daemon's health probe keeps trusting what is served).
    ca = issue.Issued(
        x509.load_pem_x509_certificate(store.ca_certificate.read_bytes()),
        serialization.load_pem_private_key(store.ca_key.read_bytes(), password=None),
    )
    names = Names(("localhost",), ("127.0.0.1",))
    one, other = (issue.make_leaf(ca, names, 30, lifecycle.utcnow()) for _ in range(2))
    store.switch(store.add_version(one.certificate_pem, other.key_pem, {}))
    wait_until(lambda: "keeping the current certificate" in serving.daemon.log(), 5,
               "the extension to refuse the pair")
    assert served_fingerprint(serving.port, serving.ca)[0] == served
    # The daemon's next look (here: a renewal) finds the damage and issues a good pair.
    outcome = lifecycle.ensure_current(settings, account)
    assert outcome.issued and outcome.reason == "no live certificate"
    wait_until(lambda: served_fingerprint(serving.port, serving.ca)[0] == outcome.sha256, SERVED_WITHIN,
               "the repaired certificate to be served")


def test_tls_12_and_13_are_served(serving):
    for versions, agreed in (({"maximum_version": ssl.TLSVersion.TLSv1_2}, "TLSv1.2"),
                             ({"minimum_version": ssl.TLSVersion.TLSv1_3}, "TLSv1.3")):
        assert served_fingerprint(serving.port, serving.ca, **versions)[1] == agreed


class CertbotLive:
    """certbot's layout: live/NAME/{fullchain,privkey}.pem are symlinks into archive/NAME/."""

    def __init__(self, root: Path) -> None:
        self.archive = root / "archive" / "example"
        self.live = root / "live" / "example"
        self.archive.mkdir(parents=True)
        self.live.mkdir(parents=True)
        now = lifecycle.utcnow()
        # A stand-in for Let's Encrypt: a CA of its own that the test's clients trust.
        self.ca = issue.make_ca(["localhost"], now - timedelta(days=1))
        self.ca_file = root / "stand-in-ca.pem"
        self.ca_file.write_bytes(self.ca.certificate_pem)
        self.number = 0

    @property
    def fullchain(self) -> Path:
        return self.live / "fullchain.pem"

    @property
    def privkey(self) -> Path:
        return self.live / "privkey.pem"

    def issue_next(self) -> str:
        """Write the next pair into archive/, as certbot does before it touches live/."""
        self.number += 1
        leaf = issue.make_leaf(self.ca, Names(("localhost",), ("127.0.0.1",)), 90, lifecycle.utcnow())
        chain = self.archive / f"fullchain{self.number}.pem"
        chain.write_bytes(leaf.certificate_pem + self.ca.certificate_pem)
        key = self.archive / f"privkey{self.number}.pem"
        key.write_bytes(leaf.key_pem)
        key.chmod(0o600)
        return fingerprint_of(leaf.certificate.public_bytes(serialization.Encoding.DER))

    def point(self, kind: str) -> None:
        """certbot's own way: unlink the link, then make it anew (there is a moment without it)."""
        link = self.live / f"{kind}.pem"
        link.unlink(missing_ok=True)
        os.symlink(f"../../archive/example/{kind}{self.number}.pem", link)


def test_files_mode_serves_certbots_new_pair_only_once_both_are_replaced(make_settings, start_daemon, folder):
    certbot = CertbotLive(folder / "letsencrypt")
    fingerprint = certbot.issue_next()
    certbot.point("fullchain")
    certbot.point("privkey")
    settings = make_settings(tls={"mode": "files", "cert_file": str(certbot.fullchain),
                                  "key_file": str(certbot.privkey)})
    daemon = start_daemon(settings)
    daemon.wait_ready()
    port = load(settings).server.port
    base, ca = f"https://127.0.0.1:{port}", str(certbot.ca_file)
    password = (settings.parent / "initial-password").read_text().strip()
    assert served_fingerprint(port, ca)[0] == fingerprint
    kernel = open_kernel(base, ca, password)
    jupyter_pid = daemon.status()["jupyter_pid"]

    latencies = []
    with Prober(port, ca) as prober:
        # certbot replaces privkey before fullchain; the other order is covered too.
        for first, second in (("privkey", "fullchain"), ("fullchain", "privkey"), ("privkey", "fullchain")):
            old, new = fingerprint, certbot.issue_next()
            refused = daemon.log().count("certificate unchanged:")
            certbot.point(first)
            # The daemon looks every 5 s: it sees the half-replaced pair and keeps the old one.
            wait_until(lambda refused=refused: daemon.log().count("certificate unchanged:") > refused, 15,
                       f"the daemon to refuse a pair with only {first} replaced")
            assert served_fingerprint(port, ca)[0] == old
            certbot.point(second)
            replaced = time.monotonic()
            wait_until(lambda new=new: served_fingerprint(port, ca)[0] == new, 15,
                       "the new pair to be served", interval=0.1)
            latencies.append(time.monotonic() - replaced)
            fingerprint = new
            assert kernel.execute("print(state)").strip() == "41"

    print(f"\nfiles mode: {len(latencies)} replacements; {prober.connections} connections, "
          f"{len(prober.failures)} failed, {prober.hangs} hung; served after "
          f"{', '.join(f'{t:.1f}' for t in latencies)} s")
    assert prober.failures == [] and prober.hangs == 0
    assert "does not match cert_file" in daemon.log()
    assert kernel.execute("print(state + 1)").strip() == "42"
    assert daemon.status()["jupyter_pid"] == jupyter_pid
    leaf = x509.load_pem_x509_certificate(certbot.fullchain.read_bytes())
    show = cli("cert", "show", "--settings", str(settings))
    assert show.returncode == 0 and f"{leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC" in show.stdout
    stand_in = certbot.ca.certificate.public_bytes(serialization.Encoding.DER)
    digest = fingerprint_of(stand_in).upper()
    assert f"CA sha256:   {':'.join(digest[i:i + 2] for i in range(0, 64, 2))}" in show.stdout
    kernel.close()
