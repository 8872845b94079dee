"""The Dask cluster's TLS identity, made and kept by root.

    <state_dir>/dask/ca.pem        the cluster CA's certificate (public)
    <state_dir>/dask/ca-key.pem    its key: root alone
    <state_dir>/dask/cert.pem      the identity: scheduler, workers and clients alike
    <state_dir>/dask/key.pem       its key: root's, readable by the account's group

distributed verifies peers against "a dedicated CA for the cluster" and never checks host names, so
whoever holds a certificate of this CA is in the cluster: that is the account (its notebooks, its
local cluster, the EC2 instances it starts) and root, never another user of the machine. It is not
the web certificate's CA: that one is replaced when the server's names change, and a cluster's
trust must outlive an address change. The identity is renewed under the same CA, so a cluster
started with an older one keeps accepting the notebooks.
"""

from __future__ import annotations

import logging
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from supervisor import isolated
from supervisor.dask.plan import DaskFiles, files
from supervisor.files import write_atomic
from supervisor.layout import Layout, root_folder

if TYPE_CHECKING:
    from cryptography import x509

log = logging.getLogger(__name__)

CA_LIFETIME = timedelta(days=3650)
IDENTITY_LIFETIME = timedelta(days=730)
RENEW_BEFORE = timedelta(days=60)
CLOCK_SKEW = timedelta(minutes=5)


def due(not_after: datetime, now: datetime) -> bool:
    """Whether a certificate valid until `not_after` is to be replaced at `now`. Not before its
    start too: a clock behind at boot must not replace the CA a running cluster trusts."""
    return not_after - now < RENEW_BEFORE


def ensure(layout: Layout) -> DaskFiles:
    """The identity, made or renewed when due, in a short-lived child (cryptography stays out
    of the resident daemon); waits for it."""
    wanted = files(layout.settings.state_dir)
    isolated.call(_ensure_here, layout, wanted, what="the Dask certificate worker")
    return wanted


def _ensure_here(layout: Layout, wanted: DaskFiles) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.now(UTC)
    root_folder(wanted.ca.parent, 0o755, None)

    def load(cert: Path, key: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
        try:
            certificate = x509.load_pem_x509_certificate(cert.read_bytes())
            private = serialization.load_pem_private_key(key.read_bytes(), None)
        except (OSError, ValueError):
            return None
        if not isinstance(private, ec.EllipticCurvePrivateKey) or due(
                certificate.not_valid_after_utc, now):
            return None
        return certificate, private

    def name(common_name: str) -> x509.Name:
        # A common name with a space is no host name: no name constraint or browser applies it.
        return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jupyter-remote"),
                          x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())

    host = socket.gethostname()[:30]
    ca = load(wanted.ca, wanted.ca_key)
    if ca is None:
        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = name(f"jupyter-remote Dask CA {host} {now:%Y-%m-%d %H%M%S}")
        ca_certificate = (
            x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
            .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW).not_valid_after(now + CA_LIFETIME)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                         False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        write_atomic(wanted.ca_key, pem_key(ca_key), mode=0o600)
        write_atomic(wanted.ca, ca_certificate.public_bytes(serialization.Encoding.PEM),
                     mode=0o644)
        wanted.cert.unlink(missing_ok=True)  # signed by the CA just replaced
        log.info("made the Dask cluster CA %s", wanted.ca)
        ca = ca_certificate, ca_key
    current = load(wanted.cert, wanted.key)
    if current is not None and _signed_by(current[0], ca[0]):
        return
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder().subject_name(name(f"jupyter-remote Dask {host}"))
        .issuer_name(ca[0].subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(min(now + IDENTITY_LIFETIME, ca[0].not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                     False), critical=True)
        # One identity for every role: the scheduler serves it, workers and clients present it.
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                              ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca[1].public_key()),
                       critical=False)
        .sign(ca[1], hashes.SHA256())
    )
    mode, owner = layout.account_readable
    write_atomic(wanted.key, pem_key(key), mode=mode, owner=owner)
    write_atomic(wanted.cert, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    log.info("made the Dask identity %s, valid until %s", wanted.cert,
             certificate.not_valid_after_utc.date())


def _signed_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        certificate.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
