"""What `cert show` and `check` tell an operator about the live certificate and the local CA."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509

from supervisor import hints
from supervisor.accounts import Account
from supervisor.settings import Settings
from supervisor.tls.issue import certificate_sha256
from supervisor.tls.lifecycle import ca_notices, current_cloud_identity
from supervisor.tls.names import wanted_names
from supervisor.tls.policy import certificate_names, renewal_reason
from supervisor.tls.store import CHAIN, CertificateStore



def fingerprint(certificate: x509.Certificate) -> str:
    digest = certificate_sha256(certificate).upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def live_chain(store: CertificateStore) -> list[x509.Certificate]:
    """The live certificate and what else its chain file holds; [] when there is none yet."""
    version = store.live_version()
    if version is None:
        return []
    return x509.load_pem_x509_certificates((version / CHAIN).read_bytes())


def describe(settings: Settings, account: Account, now: datetime) -> list[str]:
    if not settings.tls_enabled:
        return ['TLS is off ([tls] mode = "off"): Jupyter serves plain HTTP on a loopback address']
    store = CertificateStore(settings.state_dir, account)
    renew = hints.command(settings.source, "cert", "renew")
    try:
        chain = live_chain(store)
    except ValueError:
        return [f"certificate: {store.certfile} is damaged: `{renew}` replaces it"]
    if not chain:
        return [f"no certificate yet: `{hints.command(settings.source, 'run')}` makes one at its "
                "first start"]
    certificate = chain[0]
    names = certificate_names(certificate)
    left = certificate.not_valid_after_utc - now
    lines = [
        f"certificate: {store.certfile} (version {store.live_version().name}, {settings.tls.mode})",  # type: ignore[union-attr]
        f"subject:     {certificate.subject.rfc4514_string()}",
        f"names:       {', '.join([*names.dns, *names.ips])}",
        f"not after:   {certificate.not_valid_after_utc:%Y-%m-%d %H:%M} UTC "
        f"({left.days} days left)",
        f"sha256:      {fingerprint(certificate)}",
    ]
    if settings.tls.mode == "files":
        lines.append(f"CA:          {certificate.issuer.rfc4514_string()} (the issuer)")
        if len(chain) > 1:  # certbot's fullchain.pem: the leaf, then the CA that issued it
            lines.append(f"CA sha256:   {fingerprint(chain[1])}")
    if settings.tls.mode == "acme":
        lines += _acme_lines(settings, store)
    if settings.tls.mode == "self-signed":
        try:
            ca = x509.load_pem_x509_certificate(store.ca_certificate.read_bytes())
        except OSError as error:
            lines.append(f"CA:          cannot read {store.ca_certificate}: {error.strerror}")
        except ValueError:
            lines.append(f"CA:          {store.ca_certificate} is damaged: `{renew}` replaces it")
        else:
            lines += [
                f"CA:          {ca.subject.rfc4514_string()} "
                f"(until {ca.not_valid_after_utc:%Y-%m-%d})",
                f"CA sha256:   {fingerprint(ca)}",
                f"trust the CA once: {hints.command(settings.source, 'cert', 'ca')} "
                "> jupyter-remote-ca.pem, then import that file",
            ]
        wanted = wanted_names(settings, current_cloud_identity(settings, store))
        due = renewal_reason(certificate, wanted, now, settings.tls.renew_before_days)
        if due:
            lines.append(f"renewal due: {due} (the running daemon renews it within the hour)")
        lines += [f"notice: {n}" for n in ca_notices(settings, store, now)]
    return lines


def _acme_lines(settings: Settings, store: CertificateStore) -> list[str]:
    from supervisor.tls import acme

    meta = store.meta() or {}
    if meta.get("source") == "acme" and meta.get("directory") == settings.tls.acme_directory:
        lines = [
            f"issuer:      {meta.get('issuer', '')} (browsers trust it: nothing to import)",
            f"account:     {meta.get('account', '')}",
            f"renewal:     from {meta.get('next_renewal', '')[:16].replace('T', ' ')} UTC "
            "(the running daemon renews it live)",
        ]
    else:
        directory = settings.tls.acme_directory
        lines = [f"issuer:      the local CA, until the first certificate from {directory}"]
    state = acme.load_state(store)
    if state is not None:
        lines.append(f"last order failed: {state.error}")
    return lines
