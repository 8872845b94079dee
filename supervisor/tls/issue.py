"""Making the local certificate authority and the server certificates it signs (as mkcert does).

The CA's name constraints let it sign only this server's DNS names, so trusting it cannot let it
vouch for anyone else's site. IP addresses are left unconstrained: on a cloud machine the public
address changes with every stop and start.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes as PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from supervisor.tls import sha256_fingerprint
from supervisor.tls.names import Names

CA_LIFETIME = timedelta(days=3650)
CLOCK_SKEW = timedelta(hours=1)  # a client whose clock is a little behind still accepts a new cert


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def certificate_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )


_SPKI = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_matches(key: PrivateKey, certificate: x509.Certificate) -> bool:
    """Whether `key` is the private half of the certificate's public key."""
    return key.public_key().public_bytes(*_SPKI) == certificate.public_key().public_bytes(*_SPKI)


def certificate_sha256(certificate: x509.Certificate) -> str:
    return sha256_fingerprint(certificate.public_bytes(serialization.Encoding.DER))


def _key_usage(**allowed: bool) -> x509.KeyUsage:
    """KeyUsage with only the `allowed` usages set."""
    usages = ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
              "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only")
    return x509.KeyUsage(**{usage: allowed.get(usage, False) for usage in usages})


def make_ca(permitted_dns: list[str], now: datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jupyter-remote"),
        # Host and date make each CA's name unique in a trust store that holds several.
        x509.NameAttribute(
            NameOID.COMMON_NAME,
            f"jupyter-remote CA {socket.gethostname()[:30]} {now:%Y-%m-%d %H%M%S}",
        ),
    ])
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now - CLOCK_SKEW + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(
            x509.NameConstraints(
                permitted_subtrees=[x509.DNSName(n) for n in sorted(set(permitted_dns))],
                excluded_subtrees=None,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Issued(certificate, key)


def make_leaf(ca: Issued, names: Names, validity_days: int, now: datetime) -> Issued:
    key = ec.generate_private_key(ec.SECP256R1())
    common_name = next((n for n in names.dns if n != "localhost"), "localhost")
    alternatives: list[x509.GeneralName] = [x509.DNSName(n) for n in names.dns]
    alternatives += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in names.ips]
    public = key.public_key()
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jupyter-remote"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64]),
        ]))
        .issuer_name(ca.certificate.subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        # Counted from notBefore: Apple refuses a lifetime over 825 days by even an hour.
        .not_valid_after(now - CLOCK_SKEW + timedelta(days=validity_days))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(digital_signature=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Issued(certificate, key)


def permitted_dns_names(ca: x509.Certificate) -> list[str]:
    try:
        constraints = ca.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return []
    return [s.value for s in constraints.permitted_subtrees or [] if isinstance(s, x509.DNSName)]
