"""First load over a real link: Debian's chromium logs in and waits for the JupyterLab launcher,
against our daemon and bare `jupyter lab`, through an emulated home link.

The link: a TUN device here and one in a network namespace made here, joined at the IP level by
bench/link.py (this machine's kernel has no tc netem): 20 Mbit/s down, 5 Mbit/s up, 40 ms each
way, so TLS handshakes and TCP slow start pay the round trips too. The servers listen on this
side's end (a private /30 in 10.213.0.0/16 that exists only on this link); the browser runs in the
namespace (bench/browser_client.py). Each round
gives each server a fresh browser profile: one visit with an empty cache, then one with the cache
of the first in a restarted browser, logged out. Servers alternate which goes first.

TLS session resumption is measured too, from this side: a second connection offering the first
one's session, and the same after the daemon swapped its certificate.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from harness import BareJupyter, Daemon, Lab, median, proc_sample, wait_serving, wait_until

HERE = Path(__file__).resolve().parent
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
DOWN_MBIT, UP_MBIT, DELAY_MS = 20, 5, 40  # each way
SCREENSHOTS = Path("/var/tmp/jr-bench-screenshots")


@dataclass
class Link:
    """Two TUN ends, one in a namespace of our own, joined by bench/link.py at the link's speeds."""

    namespace: str
    host_side: str
    browser_side: str
    server_ip: str
    browser_ip: str
    relay: subprocess.Popen[str] | None = None

    @classmethod
    def make(cls) -> Link:
        tag = uuid.uuid4().hex[:6]
        server_ip, browser_ip = (str(a) for a in _free_network().hosts())
        link = cls(f"jrb-{tag}", f"jrb{tag}h", f"jrb{tag}n", server_ip, browser_ip)
        try:
            _run("ip", "netns", "add", link.namespace)
            link.relay = subprocess.Popen(
                [sys.executable, str(HERE / "link.py"), link.namespace, link.host_side,
                 link.browser_side, server_ip, browser_ip, str(DOWN_MBIT), str(UP_MBIT),
                 str(DELAY_MS)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert link.relay.stdout
            if link.relay.stdout.readline().strip() != "ready":
                raise RuntimeError("the emulated link did not come up")
        except BaseException:
            link.remove()
            raise
        return link

    def remove(self) -> None:
        if self.relay:
            self.relay.terminate()
            try:
                self.relay.wait(10)
            except subprocess.TimeoutExpired:
                self.relay.kill()
                self.relay.wait(10)
        # The TUN devices went with the relay; the namespace is ours to remove.
        subprocess.run(["ip", "netns", "delete", self.namespace], capture_output=True, timeout=30,
                       check=False)


def _free_network() -> ipaddress.IPv4Network:
    """A /30 of 10.213.0.0/16 that no interface of this machine uses (another run may hold one)."""
    used = [ipaddress.ip_address(entry.address) for entries in psutil.net_if_addrs().values()
            for entry in entries if entry.family == socket.AF_INET]
    for network in ipaddress.ip_network("10.213.0.0/16").subnets(new_prefix=30):
        if not any(address in network for address in used):
            return network
    raise RuntimeError("no free /30 left in 10.213.0.0/16")


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip()}")
    return result.stdout


def spki_pin(pem: bytes) -> str:
    """Chrome's --ignore-certificate-errors-spki-list form: base64 of SHA-256 of the public key."""
    key = x509.load_pem_x509_certificate(pem).public_key()
    der = key.public_bytes(serialization.Encoding.DER,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


def browse(lab: Lab, link: Link, port: int, label: str, profile: Path) -> dict[str, Any]:
    chain = (lab.live_tls / "fullchain.pem").read_bytes()
    job = {
        "url": f"https://{link.server_ip}:{port}", "password": lab.password,
        "spki": [spki_pin(chain), spki_pin(lab.ca.read_bytes())],
        "profile": str(profile), "screenshots": str(SCREENSHOTS), "label": label,
        "interface": link.browser_side, "chromium": CHROMIUM, "chromedriver": CHROMEDRIVER,
    }
    result = subprocess.run(
        ["ip", "netns", "exec", link.namespace, sys.executable, str(HERE / "browser_client.py")],
        input=json.dumps(job), capture_output=True, text=True, timeout=900, check=False,
    )
    shutil.rmtree(profile, ignore_errors=True)
    if result.returncode:
        raise RuntimeError(f"the browser failed against {label}:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def run(lab: Lab, rounds: int) -> dict[str, Any]:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    link = Link.make()
    try:
        return _measure(lab, link, rounds)
    finally:
        link.remove()


def _measure(lab: Lab, link: Link, rounds: int) -> dict[str, Any]:
    settings = lab.settings("browser", server={"ip": link.server_ip},
                           tls={"cloud_metadata": False, "hostnames": [link.server_ip]})
    daemon = Daemon(lab, settings).start()
    bare: BareJupyter | None = None
    try:
        daemon.ready()
        bare = BareJupyter(lab, "bare-browser", ip=link.server_ip)  # a copy of the pair now live
        bare.start()
        wait_serving(bare.port, lab.context(), host=link.server_ip)
        servers = {"daemon": daemon.port, "bare": bare.port}
        visits: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
        first_ever: dict[str, Any] = {}
        # Round 0 warms both (page cache; our compressed copies) and is not counted.
        for index in range(rounds + 1):
            order = list(servers) if index % 2 == 0 else list(reversed(servers))
            for name in order:
                profile = lab.scratch(f"chromium-{name}")
                result = browse(lab, link, servers[name], f"{name}-{index}", profile)
                print(f"  browser round {index} {name}: cold {result['cold']['seconds']:.2f} s "
                      f"{result['cold']['bytes'] / 1e6:.2f} MB, warm {result['warm']['seconds']:.2f} s "
                      f"{result['warm']['bytes'] / 1e6:.2f} MB", flush=True)
                if index:
                    visits[name].append(result)
                else:
                    first_ever[name] = result["cold"]
            if not index:  # the brotli copies are made in the background: measure after them
                first_ever["copies_cpu_s"] = _settle(daemon.jupyter_pid())
        resumption = _resumption(lab, daemon, bare)
    finally:
        if bare:
            bare.stop()
        daemon.stop()
    return _figures(visits, first_ever, resumption, link)


def _settle(pid: int, quiet: float = 3.0, timeout: float = 300.0) -> float:
    """Waits until process `pid` has used no CPU for `quiet` s; the CPU s it used meanwhile."""
    began = last = proc_sample(pid).cpu_seconds
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = proc_sample(pid).cpu_seconds
        if now - last < 0.05:
            break
        last = now
    return last - began


def _figures(visits: dict[str, list[dict[str, Any]]], first_ever: dict[str, Any],
             resumption: dict[str, Any], link: Link) -> dict[str, Any]:
    figures: dict[str, Any] = {"rounds": visits, "first_ever": first_ever, "resumption": resumption,
                               "link": {"down_mbit": DOWN_MBIT, "up_mbit": UP_MBIT,
                         "delay_ms_each_way": DELAY_MS},
                               "screenshots": str(SCREENSHOTS)}
    for name, results in visits.items():
        figures[name] = {
            f"{kind}_{key}": median([r[kind][key] for r in results])
            for kind in ("cold", "warm")
            for key in ("seconds", "browser_cpu_s", "bytes", "down_wire_bytes", "up_wire_bytes",
                        "responses", "from_cache", "compressed")
        }
    ours, bare = figures["daemon"], figures["bare"]
    for key in ("cold_seconds", "cold_bytes", "cold_down_wire_bytes", "warm_seconds"):
        figures[f"ratio_{key}"] = ours[key] / bare[key]
    return figures


# --- TLS session resumption ---------------------------------------------------------------------


def _resumed(port: int, context: ssl.SSLContext, session: ssl.SSLSession | None,
             host: str) -> tuple[bool, ssl.SSLSession | None, str]:
    """One TLS 1.3 connection and GET /api, offering `session`; whether it was resumed."""
    with socket.create_connection((host, port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=host, session=session) as tls:
        tls.sendall(f"GET /api HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        while tls.recv(65536):
            pass  # TLS 1.3 tickets arrive after the handshake: read the whole answer first
        fingerprint = hashlib.sha256(tls.getpeercert(binary_form=True)).hexdigest()
        return tls.session_reused, tls.session, fingerprint


def _resumption(lab: Lab, daemon: Daemon, bare: BareJupyter) -> dict[str, Any]:
    from supervisor.prepare import layout
    from supervisor.settings import load
    from supervisor.tls import lifecycle

    host = bare.ip
    context = lab.context()
    figures: dict[str, Any] = {}
    for name, port in (("daemon", daemon.port), ("bare", bare.port)):
        _, session, _ = _resumed(port, context, None, host)
        figures[name] = sum(_resumed(port, context, session, host)[0] for _ in range(10))
    # Across a renewal: the daemon's Jupyter builds a new context (new ticket keys) for the pair.
    _, session, before = _resumed(daemon.port, context, None, host)
    settings = load(daemon.settings)
    lifecycle.ensure_current(settings, layout(settings).account, force="benchmark")
    after = wait_until(lambda: (found := _resumed(daemon.port, context, None, host)[2]) != before
                       and found, 30, "the renewed certificate served", 0.1)
    reused, _, served = _resumed(daemon.port, context, session, host)
    figures["daemon_after_swap"] = {"reused": reused, "new_certificate": served == after}
    return figures
