"""The host name or address a user types to reach a server that listens on every address.

A bound wildcard address is no URL, and the machine's host name is not one either: on AWS it is an
internal `ip-172-31-...` name nobody outside resolves. In order: the instance's public DNS name,
then its public IPv4 (both from the metadata service, as the certificate code last remembered
them, so that no URL waits for the network), then the first `tls.hostnames` entry, then the
machine's primary address (the one its default route leaves from), and only then its host name.
Standard library only: the resident daemon asks this for every status it writes.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path

from supervisor.settings import Settings

# Written by supervisor.tls.lifecycle: the last public names the metadata service told.
CLOUD_FILE = "cloud.json"
# Documentation addresses (RFC 5737, RFC 3849): connecting a UDP socket to them sends nothing,
# it only asks the kernel which local address its default route would use.
_PROBE = {socket.AF_INET: "192.0.2.1", socket.AF_INET6: "2001:db8::1"}


@dataclass(frozen=True)
class Candidates:
    """What a user could type, as far as this machine knows, best first within each kind."""

    public_hostname: str | None = None
    public_ipv4: str | None = None
    configured: tuple[str, ...] = ()  # tls.hostnames
    primary_address: str | None = None
    hostname: str = "localhost"


def choose(candidates: Candidates) -> str:
    for host in (candidates.public_hostname, candidates.public_ipv4, *candidates.configured[:1],
                 candidates.primary_address):
        if host:
            return host
    return candidates.hostname


def candidates(settings: Settings) -> Candidates:
    public_hostname = public_ipv4 = None
    if settings.tls.cloud_metadata:
        remembered = _remembered_cloud(settings.state_dir / "tls" / CLOUD_FILE)
        public_hostname = remembered.get("public_hostname") or None
        public_ipv4 = remembered.get("public_ipv4") or None
    return Candidates(public_hostname, public_ipv4, settings.tls.hostnames, primary_address(),
                      socket.gethostname())


def primary_address() -> str | None:
    """The address the default route leaves from: IPv4 first, as most users reach servers."""
    for family, probe in _PROBE.items():
        try:
            with socket.socket(family, socket.SOCK_DGRAM) as probe_socket:
                probe_socket.connect((probe, 9))
                address = probe_socket.getsockname()[0]
        except OSError:
            continue  # no route in this family
        if address not in ("0.0.0.0", "::"):
            return str(address)
    return None


def _remembered_cloud(path: Path) -> dict[str, str | None]:
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return document if isinstance(document, dict) else {}
