"""The names a certificate must cover: configured, the machine's own, and on AWS its public ones."""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from supervisor.settings import Settings

log = logging.getLogger(__name__)

IMDS_URL_VARIABLE = "JUPYTER_REMOTE_IMDS_URL"  # for tests: a stand-in metadata service on loopback
IMDS_DEFAULT_URL = "http://169.254.169.254"
IMDS_TIMEOUT = 1.0
DMI = Path("/sys/class/dmi/id")


@dataclass(frozen=True)
class Names:
    dns: tuple[str, ...]
    ips: tuple[str, ...]

    @classmethod
    def of(cls, dns: set[str], ips: set[str]) -> Names:
        return cls(tuple(sorted(dns)), tuple(sorted(ips, key=_ip_order)))


@dataclass(frozen=True)
class CloudIdentity:
    public_ipv4: str | None
    public_hostname: str | None

    @property
    def public_dns_suffix(self) -> str | None:
        """ec2-1-2-3-4.compute-1.amazonaws.com -> compute-1.amazonaws.com: stable across stops."""
        if not self.public_hostname or "." not in self.public_hostname:
            return None
        return self.public_hostname.split(".", 1)[1]


def wanted_names(settings: Settings, cloud: CloudIdentity | None) -> Names:
    dns = {"localhost"}
    ips = {"127.0.0.1", "::1"}
    for name in settings.tls.hostnames:
        (ips if _is_ip(name) else dns).add(name.lower().rstrip("."))
    dns.update(machine_hostnames())
    ips.update(interface_addresses())
    if cloud:
        if cloud.public_ipv4:
            ips.add(cloud.public_ipv4)
        if cloud.public_hostname:
            dns.add(cloud.public_hostname.lower())
    return Names.of(dns, ips)


def machine_hostnames() -> set[str]:
    names = {socket.gethostname()}
    try:
        names.add(socket.getfqdn())
    except OSError:
        pass
    return {n.lower().rstrip(".") for n in names if n and not _is_ip(n) and n != "localhost"}


def interface_addresses() -> set[str]:
    addresses = set()
    for entries in psutil.net_if_addrs().values():
        for entry in entries:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            address = ipaddress.ip_address(entry.address.split("%")[0])
            if not address.is_link_local:  # fe80:: needs a zone; no browser URL uses it
                addresses.add(str(address))
    return addresses


class MetadataUnavailable(Exception):
    """On AWS, but the metadata service did not answer: the public names are unknown, not gone."""


def cloud_identity(settings: Settings) -> CloudIdentity | None:
    """The instance's public IPv4 and DNS name from IMDSv2, or None when not on AWS (or not asked).

    Raises MetadataUnavailable when the service should answer and does not.
    """
    if not settings.tls.cloud_metadata:
        return None
    base = os.environ.get(IMDS_URL_VARIABLE)
    if not base:
        if not _looks_like_ec2():
            return None  # not on AWS: pay no timeout
        base = IMDS_DEFAULT_URL
    # Never through a proxy: the metadata service is link-local.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        token_request = urllib.request.Request(
            f"{base}/latest/api/token", method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with opener.open(token_request, timeout=IMDS_TIMEOUT) as response:
            token = response.read().decode()
    except OSError as error:  # URLError and timeouts are OSErrors
        raise MetadataUnavailable(
            f"no answer from the metadata service at {base}: {error}") from None

    def get(item: str) -> str | None:
        request = urllib.request.Request(
            f"{base}/latest/meta-data/{item}", headers={"X-aws-ec2-metadata-token": token}
        )
        try:
            with opener.open(request, timeout=IMDS_TIMEOUT) as response:
                return response.read().decode().strip() or None
        except urllib.error.HTTPError as error:
            if error.code == 404:
                return None  # the instance has no public address
            raise MetadataUnavailable(f"instance metadata {item}: HTTP {error.code}") from None
        except OSError as error:
            raise MetadataUnavailable(f"instance metadata {item}: {error}") from None

    return CloudIdentity(get("public-ipv4"), get("public-hostname"))


def _looks_like_ec2() -> bool:
    for item in ("sys_vendor", "bios_vendor", "board_asset_tag"):
        try:
            value = (DMI / item).read_text().strip()
        except OSError:
            continue
        if value.startswith(("Amazon", "i-")):
            return True
    return False


def _ip_order(value: str) -> tuple[int, int]:
    address = ipaddress.ip_address(value)
    return address.version, int(address)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True
