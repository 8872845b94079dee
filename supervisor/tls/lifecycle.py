"""Keeping the live certificate present and current, in both modes, through one versioned store.

Self-signed mode issues from the local CA; files mode imports certbot's pair once key and
certificate match. Either way a failure leaves the live certificate as it was.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta, UTC
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from supervisor.accounts import Account
from supervisor.errors import JupyterRemoteError, SettingsError
from supervisor import hints
from supervisor.files import write_atomic
from supervisor.public_address import CLOUD_FILE  # the last public names the metadata service told
from supervisor.settings import Settings
from supervisor.tls import CertificateInfo, issue
from supervisor.tls.names import (
    CloudIdentity,
    MetadataUnavailable,
    Names,
    cloud_identity,
    wanted_names,
)
from supervisor.tls.policy import renewal_reason, within_constraints
from supervisor.tls.store import CHAIN, KEY, CertificateStore

log = logging.getLogger(__name__)

CA_REPLACED = "replaced.json"  # why and when the CA was last replaced: users must trust it again
CA_NOTICE_DAYS = 30
NO_CA = "no CA yet"


def utcnow() -> datetime:
    return datetime.now(UTC)


def ensure_current(
    settings: Settings, account: Account, now: datetime | None = None, *, renew_because: str = ""
) -> CertificateInfo:
    """Make the live certificate present and current; `renew_because` is a reason to renew now whatever the rule says."""
    now = now or utcnow()
    store = CertificateStore(settings.state_dir, account)
    try:
        store.prepare()
        with store.locked():
            store.repair()
            if settings.tls.mode == "files":
                return _import_files(settings, store, now)
            return _self_signed(settings, store, now, renew_because)
    except OSError as error:
        where = f": {error.filename}" if error.filename else ""
        raise JupyterRemoteError(
            f"{store.root}: cannot update the certificate ({error.strerror or error}{where}); "
            "the live certificate is unchanged"
        ) from None


def _self_signed(
    settings: Settings, store: CertificateStore, now: datetime, renew_because: str
) -> CertificateInfo:
    cloud = current_cloud_identity(settings, store, remember=True)
    wanted = wanted_names(settings, cloud)
    ca = _load_ca(store)
    had_ca = store.ca_certificate.exists()
    ca_reason = _ca_replacement_reason(ca, had_ca, wanted, now, settings.tls.validity_days)
    if ca_reason or ca is None:
        ca = issue.make_ca(_permitted_dns(wanted, cloud), now)
        write_atomic(store.ca_key, ca.key_pem, mode=0o600)
        write_atomic(store.ca_certificate, ca.certificate_pem, mode=0o644)
        if ca_reason != NO_CA:  # ca_notices() tells the user to trust the new one, for a while
            write_atomic(store.ca_dir / CA_REPLACED, json.dumps(
                {"when": now.isoformat(), "reason": ca_reason}).encode(), mode=0o644)
        log.info("local CA made: %s", ca_reason)

    live = _load_live(store)
    reason = renew_because
    if not reason:
        if live is None:
            reason = "no live certificate"
        elif live.issuer != ca.certificate.subject:
            reason = "it was signed by an earlier CA"
        else:
            reason = renewal_reason(live, wanted, now, settings.tls.renew_before_days) or ""
    if not reason:
        return _outcome(settings, store, now)
    leaf = issue.make_leaf(ca, wanted, settings.tls.validity_days, now)
    meta = _meta("self-signed", leaf.certificate, now)
    version = store.add_version(leaf.certificate_pem, leaf.key_pem, meta)
    store.switch(version)
    store.prune()
    log.info("certificate issued (%s), valid until %s", reason,
             f"{leaf.certificate.not_valid_after_utc:%Y-%m-%d}")
    return _outcome(settings, store, now, issued=True, reason=reason)


def _ca_replacement_reason(
    ca: issue.Issued | None, had_ca: bool, wanted: Names, now: datetime, validity_days: int
) -> str:
    """Why a new CA is needed, or "" while the one we have can sign the certificate wanted."""
    if ca is None:
        return "the CA's certificate or key was unreadable or mismatched" if had_ca else NO_CA
    permitted = issue.permitted_dns_names(ca.certificate)
    outside = [n for n in wanted.dns if not within_constraints(n, permitted)]
    if outside:
        return f"new names outside the CA's constraints: {', '.join(outside)}"
    # A leaf must not outlive its CA; a clock before the CA's start is left alone (the clock is
    # wrong, not the CA, and a new CA would make every user trust it again).
    if ca.certificate.not_valid_after_utc < now + timedelta(days=validity_days):
        expires = ca.certificate.not_valid_after_utc
        return f"the CA expires on {expires:%Y-%m-%d}, before a new certificate would"
    return ""


def current_cloud_identity(
    settings: Settings, store: CertificateStore, *, remember: bool = False
) -> CloudIdentity | None:
    """The instance's public names; when the metadata service fails, the last ones it told.

    A metadata hiccup must not re-issue the certificate without the names users type.
    `remember` saves fresh names for that (the caller holds the store's lock).
    """
    path = store.root / CLOUD_FILE
    try:
        cloud = cloud_identity(settings)
    except MetadataUnavailable as error:
        try:
            known = json.loads(path.read_text())
        except (OSError, ValueError):
            log.warning("%s; no public names known yet", error)
            return None
        log.warning("%s; using the last public names it told", error)
        return CloudIdentity(known.get("public_ipv4"), known.get("public_hostname"))
    if cloud is not None and remember:
        document = json.dumps({"public_ipv4": cloud.public_ipv4,
                               "public_hostname": cloud.public_hostname})
        try:
            unchanged = path.read_text() == document
        except OSError:
            unchanged = False
        if not unchanged:
            write_atomic(path, document.encode(), mode=0o644)
    return cloud


def _import_files(settings: Settings, store: CertificateStore, now: datetime) -> CertificateInfo:
    chain_pem, key_pem, leaf = read_certificate_files(settings, now)
    notices: tuple[str, ...] = ()
    left = leaf.not_valid_after_utc - now
    if left < timedelta(days=settings.tls.renew_before_days):
        notices = (f"{settings.tls.cert_file} expires in {left.days} days: "
                   "is certbot renewing it?",)
    live = _load_live(store)
    if live is not None and issue.certificate_sha256(live) == issue.certificate_sha256(leaf):
        return _outcome(settings, store, now, notices=notices)
    version = store.add_version(chain_pem, key_pem, _meta("files", leaf, now))
    store.switch(version)
    store.prune()
    return _outcome(settings, store, now, issued=True, reason=f"imported {settings.tls.cert_file}",
                    notices=notices)


def read_certificate_files(
    settings: Settings, now: datetime
) -> tuple[bytes, bytes, x509.Certificate]:
    """certbot's pair, validated: both parse, the key matches, and the certificate is in date."""
    tls, where = settings.tls, f"{settings.source}: [tls]"
    contents = {}
    for name in ("cert_file", "key_file"):
        path = getattr(tls, name)
        try:
            contents[name] = Path(path).read_bytes()
        except OSError as error:
            raise SettingsError(f"{where} {name}: cannot read {path}: {error.strerror}") from None
    try:
        chain = x509.load_pem_x509_certificates(contents["cert_file"])
    except ValueError:
        raise SettingsError(f"{where} cert_file: not a PEM certificate: {tls.cert_file}") from None
    try:
        key = serialization.load_pem_private_key(contents["key_file"], password=None)
    except (ValueError, TypeError):
        raise SettingsError(
            f"{where} key_file: not an unencrypted PEM private key: {tls.key_file}") from None
    leaf = chain[0]
    if not issue.key_matches(key, leaf):
        raise SettingsError(
            f"{where} key_file: does not match cert_file ({tls.key_file}, {tls.cert_file})")
    if leaf.not_valid_after_utc <= now:
        raise SettingsError(
            f"{where} cert_file: expired on {leaf.not_valid_after_utc:%Y-%m-%d}: {tls.cert_file}"
        )
    return contents["cert_file"], contents["key_file"], leaf


def _permitted_dns(wanted: Names, cloud: CloudIdentity | None) -> list[str]:
    permitted = set(wanted.dns)
    if cloud and cloud.public_dns_suffix:
        # The public name (ec2-1-2-3-4.<suffix>) changes with the address; the suffix does not.
        permitted = {n for n in permitted if n != cloud.public_hostname} | {cloud.public_dns_suffix}
    return sorted(permitted)


def _load_ca(store: CertificateStore) -> issue.Issued | None:
    try:
        certificate = x509.load_pem_x509_certificate(store.ca_certificate.read_bytes())
        key = serialization.load_pem_private_key(store.ca_key.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        return None
    if not issue.key_matches(key, certificate):
        log.warning("the local CA's key does not match its certificate (a replacement cut short)")
        return None
    return issue.Issued(certificate, key)  # type: ignore[arg-type]


def _load_live(store: CertificateStore) -> x509.Certificate | None:
    version = store.live_version()
    if version is None:
        return None
    try:
        certificate = x509.load_pem_x509_certificate((version / CHAIN).read_bytes())
        key = serialization.load_pem_private_key((version / KEY).read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        log.warning("the live certificate %s is unreadable; issuing a new one", version.name)
        return None
    if not issue.key_matches(key, certificate):
        log.warning("the live certificate %s does not match its key; issuing a new one",
                    version.name)
        return None
    return certificate


def _meta(source: str, certificate: x509.Certificate, now: datetime) -> dict[str, object]:
    return {
        "source": source,
        "sha256": issue.certificate_sha256(certificate),
        "not_before": certificate.not_valid_before_utc.isoformat(),
        "not_after": certificate.not_valid_after_utc.isoformat(),
        "made": now.isoformat(),
    }


def _outcome(
    settings: Settings, store: CertificateStore, now: datetime, *, issued: bool = False,
    reason: str = "",
    notices: tuple[str, ...] = (),
) -> CertificateInfo:
    meta = store.meta() or {}
    version = store.live_version()
    return CertificateInfo(version.name if version else "", meta.get("not_after", ""),
                           meta.get("sha256", ""), issued, reason,
                           (*notices, *ca_notices(settings, store, now)))


def ca_notices(settings: Settings, store: CertificateStore, now: datetime) -> list[str]:
    try:
        replaced = json.loads((store.ca_dir / CA_REPLACED).read_text())
    except (OSError, ValueError):
        return []
    when = datetime.fromisoformat(replaced["when"])
    if now - when > timedelta(days=CA_NOTICE_DAYS):
        return []
    return [f"the local CA was replaced on {when:%Y-%m-%d} ({replaced['reason']}): "
            f"browsers must trust the new one ({hints.command(settings.source, 'cert', 'ca')})"]
