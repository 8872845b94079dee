"""When a certificate must be (re)issued: a pure function of the certificate, names and `now`."""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta

from cryptography import x509

from supervisor.tls.names import Names


def certificate_names(certificate: x509.Certificate) -> Names:
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return Names((), ())
    dns = set(san.get_values_for_type(x509.DNSName))
    ips = {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return Names.of(dns, ips)


def renewal_reason(
    certificate: x509.Certificate, wanted: Names | None, now: datetime, renew_before_days: int
) -> str | None:
    """Why `certificate` must be replaced at `now`, or None while it is good.

    `wanted` is None in files mode, where the names are the certificate owner's business.
    """
    if now < certificate.not_valid_before_utc:
        return "the clock is before the certificate's start (not before " \
            f"{certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC)"
    left = certificate.not_valid_after_utc - now
    if left <= timedelta(0):
        return f"it expired on {certificate.not_valid_after_utc:%Y-%m-%d}"
    if left < timedelta(days=renew_before_days):
        return f"{left.days} days left, fewer than renew_before_days ({renew_before_days})"
    if wanted is not None:
        have = certificate_names(certificate)
        if have != wanted:
            changes = _difference(have, wanted)
            return f"the names changed ({changes})"
    return None


def within_constraints(dns_name: str, permitted: list[str]) -> bool:
    """RFC 5280 dNSName subtree match: the name itself or any name below it."""
    dns_name = dns_name.lower()
    return any(dns_name == base or dns_name.endswith("." + base) for base in permitted)


def _difference(have: Names, wanted: Names) -> str:
    old = set(have.dns) | set(have.ips)
    new = set(wanted.dns) | set(wanted.ips)
    parts = [f"+{n}" for n in sorted(new - old, key=_sort_key)]
    parts += [f"-{n}" for n in sorted(old - new, key=_sort_key)]
    return " ".join(parts)


def _sort_key(name: str) -> tuple[int, str]:
    try:
        return (1, str(ipaddress.ip_address(name)))
    except ValueError:
        return (0, name)
