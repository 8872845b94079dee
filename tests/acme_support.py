"""A real ACME CA for the tests: Debian's pebble on loopback, validating for real (never
PEBBLE_VA_ALWAYS_VALID), with a tiny DNS responder that points the test names at 127.0.0.1.

Pebble's Debian package ships no certificate for its own HTTPS, so the fixture makes a CA and a
localhost certificate for it: that CA is what `[tls] acme_ca_bundle` names, as it would for a
private ACME server.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import ssl
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, UTC
from pathlib import Path

import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSServer

from support import free_port, stop_tree, wait_until

PEBBLE = "/usr/bin/pebble"
BLOCKED_NAME = "blocked.test"  # pebble's policy refuses it (domainBlocklist): a rejected identifier


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class LoopbackResolver(BaseResolver):
    """A 127.0.0.1 for every name under .test; an empty answer for anything else."""

    def resolve(self, request, handler):
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        if request.q.qtype == QTYPE.A and name.endswith(".test"):
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("127.0.0.1"), ttl=5))
        return reply


def make_tls_pair(folder: Path) -> tuple[Path, Path, Path]:
    """A CA and a localhost/127.0.0.1 certificate it signed, for pebble's own HTTPS."""
    now = datetime.now(UTC) - timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pebble test listener CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = folder / "listener-ca.pem", folder / "listener.pem", folder / "listener-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


@dataclass
class Pebble:
    """pebble on loopback; it validates HTTP-01 on `http_port` and TLS-ALPN-01 on `tls_port`."""

    folder: Path
    http_port: int
    tls_port: int
    process: subprocess.Popen[bytes] | None = None
    dns: DNSServer | None = None

    def __post_init__(self) -> None:
        self.port = free_port()
        self.management_port = free_port()
        self.dns_port = free_udp_port()
        self.listener_ca, self.certificate, self.key = make_tls_pair(self.folder)

    @property
    def directory(self) -> str:
        return f"https://127.0.0.1:{self.port}/dir"

    def start(self) -> Pebble:
        self.dns = DNSServer(LoopbackResolver(), port=self.dns_port, address="127.0.0.1")
        self.dns.start_thread()
        config = self.folder / "pebble-config.json"
        config.write_text(
            json.dumps(
                {
                    "pebble": {
                        "listenAddress": f"127.0.0.1:{self.port}",
                        "managementListenAddress": f"127.0.0.1:{self.management_port}",
                        "certificate": str(self.certificate),
                        "privateKey": str(self.key),
                        "httpPort": self.http_port,
                        "tlsPort": self.tls_port,
                        "ocspResponderURL": "",
                        "externalAccountBindingRequired": False,
                        "domainBlocklist": [BLOCKED_NAME],
                    }
                }
            )
        )
        env = {
            "PATH": "/usr/bin:/bin",
            "PEBBLE_VA_NOSLEEP": "1",  # validate at once instead of after a random pause
            "PEBBLE_WFE_NONCEREJECT": "0",  # no deliberate badNonce answers
            "PEBBLE_AUTHZREUSE": "0",  # every order is validated anew
        }
        log = open(self.folder / "pebble.log", "ab")  # noqa: SIM115 - closed with the process
        self.process = subprocess.Popen(
            [PEBBLE, "-config", str(config), "-dnsserver", f"127.0.0.1:{self.dns_port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        log.close()
        wait_until(self._answers, 30, "pebble's directory", interval=0.1)
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"pebble exited: {self.log()[-2000:]}")
        try:
            return self.session().get(self.directory, timeout=5).ok
        except requests.RequestException:
            return False

    def session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False
        session.verify = str(self.listener_ca)
        return session

    def root_pem(self) -> bytes:
        """The root pebble issues under (changes with every start of pebble)."""
        response = self.session().get(
            f"https://127.0.0.1:{self.management_port}/roots/0", timeout=10
        )
        response.raise_for_status()
        return response.content

    def log(self) -> str:
        try:
            return (self.folder / "pebble.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.process is not None:
            stop_tree(self.process, 10)
            self.process = None
        if self.dns is not None:
            self.dns.stop()
            self.dns = None


def served_certificate(port: int, server_name: str, cafile: Path) -> x509.Certificate:
    """Handshake with 127.0.0.1:port as a browser would for `server_name`, verifying the chain
    against `cafile` and the name; returns the leaf served. Raises ssl.SSLError when it fails."""
    context = ssl.create_default_context(cafile=str(cafile))
    with (socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
          context.wrap_socket(raw, server_hostname=server_name) as tls):
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
