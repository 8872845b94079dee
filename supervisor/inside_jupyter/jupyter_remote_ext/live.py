"""What changes in a running Jupyter without a restart: the certificate, and the live settings
file."""

from __future__ import annotations

import json
import os
import ssl

from tornado.ioloop import PeriodicCallback

from .login import RemoteIdentityProvider

WATCH_INTERVAL_MS = 1000  # a renewal reaches new connections within about a second
# Mozilla's "intermediate" TLS 1.2 suites, less its DHE ones (slow, and needing DH parameters):
# forward secrecy and AEAD only. OpenSSL's default list also has CBC suites, two with SHA-1.
# TLS 1.3 suites are all AEAD; OpenSSL keeps its own list for them.
TLS12_CIPHERS = ":".join((
    "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-CHACHA20-POLY1305",
))


def build_tls_context(version_dir: str) -> ssl.SSLContext:
    """A server context for one certificate version; raises if the files do not load or match."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(TLS12_CIPHERS)
    # The client's order: it knows whether it has AES hardware (else ChaCha20 is faster for it).
    context.options &= ~ssl.OP_CIPHER_SERVER_PREFERENCE
    # A client asking for renegotiation again and again costs the server handshakes for free.
    context.options |= ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(
        os.path.join(version_dir, "fullchain.pem"), os.path.join(version_dir, "privkey.pem")
    )
    return context


class LiveWatcher:
    """Polls the live certificate and the live settings file; applies what changed."""

    def __init__(self, serverapp):
        self.serverapp = serverapp
        self.log = serverapp.log
        self.live_tls_dir = os.path.dirname(serverapp.certfile) if serverapp.certfile else None
        self.tls_version = None
        self.live_file_stamp = None
        self.acme = None  # acme_answer.AcmeAnswers in acme mode: hooks every context built

    def start(self):
        self.check()
        PeriodicCallback(self.check, WATCH_INTERVAL_MS).start()

    def check(self):
        try:
            if self.live_tls_dir:
                self.check_tls()
            self.check_live_file()
        except Exception:  # the watcher must outlive any one bad tick
            self.log.exception("jupyter-remote: applying a live change failed")

    def check_tls(self):
        assert self.live_tls_dir is not None  # called only when Jupyter serves TLS
        # The live folder is a symlink to a version folder; resolving it once reads a matched pair.
        version = os.path.realpath(self.live_tls_dir)
        if version == self.tls_version:
            return
        try:
            context = build_tls_context(version)
        except (OSError, ssl.SSLError) as error:
            self.log.warning("jupyter-remote: keeping the current certificate: %s: %s",
                             version, error)
            # Do not retry a bad version every second; a new one will come.
            self.tls_version = version
            return
        if self.acme is not None:
            self.acme.install(context)
        self.serverapp.http_server.ssl_options = context
        self.log.info("jupyter-remote: serving certificate %s to new connections",
                      os.path.basename(version))
        self.tls_version = version

    def check_live_file(self):
        provider = self.serverapp.identity_provider
        if not isinstance(provider, RemoteIdentityProvider) or not provider.live_file:
            return
        try:
            status = os.stat(provider.live_file)
        except FileNotFoundError:
            return
        stamp = (status.st_ino, status.st_mtime_ns, status.st_size)
        if stamp == self.live_file_stamp:
            return
        self.live_file_stamp = stamp
        with open(provider.live_file, encoding="utf-8") as stream:
            values = json.load(stream)
        provider.apply_live(self.serverapp, values)
        apply_culling(self.serverapp.kernel_manager, int(values.get("cull_idle_minutes", 0)))


def apply_culling(kernel_manager, minutes: int) -> None:
    seconds = minutes * 60
    if seconds == kernel_manager.cull_idle_timeout:
        return
    callback = getattr(kernel_manager, "_culler_callback", None)
    if callback is not None:
        callback.stop()
        kernel_manager._culler_callback = None
    # Also without a culler running: every kernel start marks it initialized, at 0 minutes too, and
    # initialize_culler() then would not start one.
    kernel_manager._initialized_culler = False
    kernel_manager.cull_idle_timeout = seconds
    if seconds:
        kernel_manager.cull_connected = True
        kernel_manager.cull_interval = 60
        kernel_manager.initialize_culler()
    kernel_manager.log.info("jupyter-remote: idle kernels are culled after %s minutes (0 = never)",
                            minutes)
