"""3. Renewal under load: certificates renewed while clients open fresh connections without pause,
and kernels (with state in them) run. Counted: failed and hung connections, kernels lost.

- ours: `lifecycle.ensure_current(renew_because=...)` (what `jupyter-remote cert renew` does) against a
  serving daemon; the extension swaps its SSLContext.
- stock, files replaced: stock Jupyter keeps reading certfile/keyfile; a naive deploy copies the new
  certificate, then the new key, over them in layout (`cp`, `cp`), as a hand-made cron job would.
- stock, restart: a certbot deploy hook's way: copy the files, restart `jupyter lab`, wait until it
  answers again. Every restart costs a full Jupyter start, so fewer rounds are run.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import (
    BareJupyter,
    Daemon,
    JupyterClient,
    Lab,
    Reply,
    fresh_request,
    logged_in,
    median,
    start_kernels,
    wait_serving,
)

CLIENTS = 2
KERNELS = 2
HUNG_AFTER = 5.0  # seconds without an answer: a hung connection
RETRY_AFTER = 0.05  # a client that failed waits this long, as a browser would, before the next try
STATE = "x = 6 * 7"


class Load:
    """CLIENTS threads opening fresh TLS connections back to back until stopped."""

    def __init__(self, port: int, lab: Lab) -> None:
        self.replies: list[tuple[float, Reply]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        context = lab.context()
        self._threads = [threading.Thread(target=self._run, args=(port, context), daemon=True)
                         for _ in range(CLIENTS)]
        for thread in self._threads:
            thread.start()

    def _run(self, port: int, context: Any) -> None:
        while not self._stop.is_set():
            reply = fresh_request(port, context, timeout=HUNG_AFTER)
            with self._lock:
                self.replies.append((time.monotonic(), reply))
            if not reply.ok:
                time.sleep(RETRY_AFTER)

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        for thread in self._threads:
            thread.join(HUNG_AFTER + 5)
        failed = [r for _, r in self.replies if not r.ok and r.error != "timeout"]
        errors: dict[str, int] = {}
        for reply in failed:
            errors[reply.error] = errors.get(reply.error, 0) + 1
        return {
            "connections": len(self.replies),
            "failed": len(failed),
            "hung": sum(1 for _, r in self.replies if r.error == "timeout"),
            "errors": errors,
        }


class Kernels:
    """KERNELS kernels holding a variable. Lost: the kernel is gone, or no longer holds it, when
    reached over a new websocket (an idle websocket of the test's own may be closed by Jupyter's
    ping timeout, which says nothing about the kernel)."""

    def __init__(self, client: JupyterClient) -> None:
        self.client = client
        self.ids = start_kernels(client, KERNELS)
        for kernel_id in self.ids:
            self._run(kernel_id, STATE)

    def _run(self, kernel_id: str, code: str) -> str:
        channel = self.client.kernel(kernel_id)
        try:
            return channel.execute(code, timeout=15)
        finally:
            channel.close()

    def lost(self) -> int:
        lost = 0
        for kernel_id in self.ids:
            try:
                alive = self._run(kernel_id, "print(x)").strip() == "42"
            except Exception:  # noqa: BLE001 - no such kernel any more, or no answer: it is gone
                alive = False
            lost += not alive
        return lost


def _paced(count: int, interval: float, renew: Callable[[int], None]) -> list[float]:
    """Runs renew(i) every `interval` s; returns when each renewal finished (monotonic)."""
    done = []
    for index in range(count):
        began = time.monotonic()
        renew(index)
        done.append(time.monotonic())
        time.sleep(max(0.0, began + interval - time.monotonic()))
    return done


def ours(lab: Lab, count: int, interval: float) -> dict[str, Any]:
    from supervisor.layout import layout_of
    from supervisor.loading import load
    from supervisor.tls import lifecycle

    settings_path = lab.settings("renewal")
    settings = load(settings_path)
    account = layout_of(settings).account
    daemon = Daemon(lab, settings_path).start()
    fingerprints: list[str] = []

    def renew(_: int) -> None:
        outcome = lifecycle.ensure_current(settings, account, renew_because="benchmark")
        fingerprints.append(outcome.sha256)

    try:
        daemon.ready()
        kernels = Kernels(logged_in(lab, daemon.port))
        load_ = Load(daemon.port, lab)
        renewed = _paced(count, interval, renew)
        time.sleep(2)  # the last renewal reaches new connections within about a second
        result = load_.stop()
        result["kernels_lost"] = kernels.lost()
        result["restarts"] = daemon.status()["restarts"]
        result["lag"] = _lags(load_.replies, renewed, fingerprints)
    finally:
        daemon.stop()
    result.update(renewals=count, kernels=KERNELS)
    return result


def _lags(replies: list[tuple[float, Reply]], renewed: list[float], fingerprints: list[str]) -> dict[str, Any]:
    """Seconds from each renewal until a new connection got its certificate; None when never
    (a later renewal came first: the extension looks once a second)."""
    first_seen: dict[str, float] = {}
    for at, reply in replies:
        if reply.fingerprint and reply.fingerprint not in first_seen:
            first_seen[reply.fingerprint] = at
    lags = [first_seen[f] - t for f, t in zip(fingerprints, renewed, strict=True) if f in first_seen]
    return {"served": len(lags), "median_s": median(lags), "max_s": max(lags, default=float("nan"))}


def _pairs(lab: Lab, count: int) -> list[tuple[Path, Path]]:
    """`count` new certificate/key pairs from the same CA, made beforehand in a scratch store."""
    import shutil

    from supervisor.layout import layout_of
    from supervisor.loading import load
    from supervisor.tls import lifecycle

    scratch = lab.scratch("pairs")
    shutil.copytree(lab.folder / "state", scratch / "state", symlinks=True)
    settings = load(lab.settings("pairs", paths={"state_dir": str(scratch / "state")}))
    account = layout_of(settings).account
    pairs = []
    for index in range(count):
        lifecycle.ensure_current(settings, account, renew_because="benchmark")
        folder = scratch / f"pair-{index:03d}"
        folder.mkdir()
        live = scratch / "state" / "tls" / "live"
        for name in ("fullchain.pem", "privkey.pem"):
            shutil.copy(live / name, folder / name)
        pairs.append((folder / "fullchain.pem", folder / "privkey.pem"))
    return pairs


def _copy_in_place(pair: tuple[Path, Path], bare: BareJupyter) -> None:
    # Two `cp`s, certificate first: each truncates and rewrites the file Jupyter reads.
    subprocess.run(["cp", str(pair[0]), str(bare.certfile)], check=True)
    subprocess.run(["cp", str(pair[1]), str(bare.keyfile)], check=True)


def stock_files(lab: Lab, count: int, interval: float) -> dict[str, Any]:
    pairs = _pairs(lab, count)
    bare = BareJupyter(lab, "bare-renewal").start()
    try:
        wait_serving(bare.port, lab.context())
        kernels = Kernels(logged_in(lab, bare.port))
        load_ = Load(bare.port, lab)
        _paced(count, interval, lambda index: _copy_in_place(pairs[index], bare))
        time.sleep(1)
        result = load_.stop()
        result["kernels_lost"] = kernels.lost()
    finally:
        bare.stop()
    result.update(renewals=count, kernels=KERNELS)
    return result


def stock_restart(lab: Lab, count: int) -> dict[str, Any]:
    pairs = _pairs(lab, count)
    bare = BareJupyter(lab, "bare-restart").start()
    context = lab.context()
    lost = 0
    downtimes = []
    load_: Load | None = None
    try:
        wait_serving(bare.port, context)
        client = logged_in(lab, bare.port)
        load_ = Load(bare.port, lab)
        for index in range(count):
            kernels = Kernels(client)
            began = time.monotonic()
            _copy_in_place(pairs[index], bare)
            bare.stop()
            bare.start()
            downtimes.append(wait_serving(bare.port, context, timeout=90) - began)
            lost += kernels.lost()
            time.sleep(1)
    finally:
        result = load_.stop() if load_ else {}
        bare.stop()
    result.update(renewals=count, kernels=KERNELS * count, kernels_lost=lost, downtime_median_s=median(downtimes))
    return result


def run(lab: Lab, count: int, restarts: int, interval: float) -> dict[str, Any]:
    results = {}
    for name, scenario in (("ours", lambda: ours(lab, count, interval)),
                           ("stock_files", lambda: stock_files(lab, count, interval)),
                           ("stock_restart", lambda: stock_restart(lab, restarts))):
        results[name] = scenario()
        print(f"  renewal {name}: {results[name]}", flush=True)
    return results
