"""bench/RESULTS.md: headline figures against their goals first, then details, machine and versions."""

from __future__ import annotations

import itertools
import math
import os
import platform
import ssl
import statistics
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import report_user
from harness import REPO, cpu_model

PACKAGES = ("jupyterlab", "jupyter_server", "tornado", "jupyter-remote")


def context(tools: Path, quick: bool) -> dict[str, Any]:
    memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    versions = {name: _version(name) for name in PACKAGES}
    versions["python"] = f"{platform.python_version()} ({sys.executable})"
    versions["OpenSSL"] = ssl.OPENSSL_VERSION
    versions["supervisord"] = _run([str(tools / "bin" / "supervisord"), "--version"])
    commit = _run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _run(["git", "-C", str(REPO), "status", "--porcelain", "--", "supervisor"])
    versions["jupyter-remote"] += f" (commit {commit}{', with uncommitted changes in supervisor/' if dirty else ''})"
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": {"nproc": os.cpu_count(), "cpu": cpu_model(), "ram_gib": round(memory_kib / 2**20, 1),
                    "kernel": platform.release()},
        "versions": versions, "quick": quick, "load_before": os.getloadavg(),
    }


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _run(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False).stdout.strip()
    except OSError:
        return "?"


# --- formatting -------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 2) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _met(ok: bool | None) -> str:
    return "—" if ok is None else ("met" if ok else "**missed**")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_f(cell) for cell in row) + " |" for row in rows]
    return [*lines, ""]


# --- the document ------------------------------------------------------------------------------------


def render(context: dict[str, Any], plan: dict[str, Any], results: dict[str, Any]) -> str:
    failed = {name: value["error"] for name, value in results.items() if isinstance(value, dict) and "error" in value}
    results = {name: value for name, value in results.items() if name not in failed}
    headline, missed = _headline(results)
    user_rows, user_missed = report_user.headline(results)
    headline += user_rows
    missed += user_missed
    machine, versions = context["machine"], context["versions"]
    lines = [
        "# jupyter-remote benchmarks",
        "",
        (f"{context['date']} · {machine['nproc']} × {machine['cpu']}, {machine['ram_gib']} GiB RAM · "
        f"jupyter-remote {versions['jupyter-remote']} · {'`--quick` run' if context['quick'] else 'full run'} "
        f"in {context['runtime_s'] / 60:.1f} min. Written by `bench/run.py`; do not edit by hand."),
        "",
        "## How to reproduce",
        "",
        "```sh",
        "scripts/bench                              # makes the environment, then runs bench/run.py",
        "scripts/bench --quick                      # a look in about 6 minutes; --only start,tls for a subset",
        "scripts/bench --only start,browser,kernels # what a remote user feels, and the start",
        "```",
        "",
        ("Run as root on a machine with nothing else busy: Jupyter runs as a throwaway unprivileged account "
        "(made and removed by the run), everything listens on 127.0.0.1 (the browser benchmark's servers: on "
        "a private link it makes into a network namespace of its own, with Debian's chromium and "
        "chromium-driver, scripts/environment.sh installs them), and supervisord comes from PyPI into "
        "a venv of its own (`bench/requirements.txt`, /var/tmp/jr-bench-tools: its import name `supervisor` "
        "is ours too). Where there is a peer, A and B alternate and medians are reported. "
        "Raw figures: /var/tmp/jr-bench-results.json."),
        "",
        *_noise(context),
        "## Headline",
        "",
        *_table(["#", "what", "jupyter-remote", "peer", "ratio", "goal", ""], headline),
    ]
    for name, error in failed.items():
        lines += [f"**The {name} benchmark failed**; its figures are missing:", "", "```", error.strip(), "```", ""]
    if missed:
        lines += ["## Goals missed: where it goes and what would close it", "", *missed]
    lines += _details(plan, results)
    lines += report_user.details(results)
    lines += [
        "## Machine and versions",
        "",
        *_table(["", ""], [
            ["CPU", f"{machine['nproc']} × {machine['cpu']}"], ["RAM", f"{machine['ram_gib']} GiB"],
            ["Linux", machine["kernel"]],
            *[[name, value] for name, value in versions.items()],
            ["load average before / after", f"{_load(context['load_before'])} / {_load(context['load_after'])}"],
        ]),
    ]
    return "\n".join(lines) + "\n"


def _noise(context: dict[str, Any]) -> list[str]:
    busiest = max(context["load_before"][0], context["load_after"][0])
    if busiest <= context["machine"]["nproc"] * 0.25:
        return []
    return [(f"**The machine was not idle**: load average {_load(context['load_before'])} before and "
            f"{_load(context['load_after'])} after, on {context['machine']['nproc']} cores (other jobs ran). "
            "Timings are slower and noisier than on a quiet machine; A and B alternate so both sides share the "
            "noise, but figures from one sample (footprint, stop) can move by a second."), ""]


def _load(values: Any) -> str:
    return ", ".join(f"{v:.2f}" for v in values)


def _headline(results: dict[str, Any]) -> tuple[list[list[Any]], list[str]]:
    rows: list[list[Any]] = []
    missed: list[str] = []
    profile = results.get("profile", {})
    if "start" in results:
        m = results["start"]["median"]
        ok = m["ratio"] <= 1.05
        rows.append(["1", "start → serving (s): daemon start → READY=1 vs bare start → first 200 on /api",
                     m["daemon_ready"], m["bare_first"], f"{m['ratio']:.3f}", "≤ 1.05", _met(ok)])
        if "daemon_jupyter_cpu" in m:
            rows.append(["1", "… Jupyter's own CPU from spawn to its first answer (s)", m["daemon_jupyter_cpu"],
                         m["bare_jupyter_cpu"], f"{m['daemon_jupyter_cpu'] / m['bare_jupyter_cpu']:.3f}",
                         "", "reported"])
        gap_ok = m["gap"] <= 0.1 and m["gap_max"] <= 0.1
        rows.append(["1", "Jupyter's first answer → READY=1 (ms, median / max)",
                     f"{m['gap'] * 1e3:.0f} / {m['gap_max'] * 1e3:.0f}", "", "", "≤ 100 ms", _met(gap_ok)])
        if not ok:
            missed += _start_missed(m, profile, results["start"]["rounds"])
        if not gap_ok:
            missed += [(f"- **First answer → READY=1** (median {m['gap'] * 1e3:.0f} ms, worst {m['gap_max'] * 1e3:.0f} "
                       "ms): while Jupyter starts the daemon probes every `READINESS_POLL` (0.1 s, "
                       "`supervisor/daemon.py`), so the worst case is that interval plus one probe (a TLS "
                       "handshake and GET, slower on a busy machine). What would close it: probe again at once "
                       "after a refused connection, or make `READINESS_POLL` 0.05 s (a refused connect costs "
                       "microseconds)."), ""]
    if "tls" in results:
        t = results["tls"]
        ok = t["speedup_median_ms"] >= 1.6
        rows.append(["2", "new TLS connection: connect + handshake + GET /api, median (ms)",
                     t["daemon"]["median_ms"], t["bare"]["median_ms"], f"{t['speedup_median_ms']:.2f}×",
                     "≥ 1.6×", _met(ok)])
        rows.append(["2", "… p99 (ms)", t["daemon"]["p99_ms"], t["bare"]["p99_ms"],
                     f"{t['speedup_p99_ms']:.2f}×", "", ""])
        rows.append(["2", "… Jupyter's CPU per connection (ms)", t["daemon"]["server_cpu_ms"],
                     t["bare"]["server_cpu_ms"], f"{t['speedup_server_cpu_ms']:.2f}×", "", ""])
        if not ok:
            missed += _tls_missed(t)
    if "renewal" in results:
        r = results["renewal"]
        ours, files, restart = r["ours"], r["stock_files"], r["stock_restart"]
        ok = ours["failed"] + ours["hung"] == 0 and ours["kernels_lost"] == 0
        rows.append(["3", (f"renewal under load: failed + hung connections, kernels lost "
                          f"(ours: {ours['renewals']} renewals)"),
                     f"{ours['failed']} + {ours['hung']}, {ours['kernels_lost']}",
                     (f"files replaced: {files['failed']} + {files['hung']}, {files['kernels_lost']}; "
                     f"restart ×{restart['renewals']}: {restart['failed']} + {restart['hung']}, "
                     f"{restart['kernels_lost']}"), "", "0 and 0", _met(ok)])
    if "footprint" in results:
        f = results["footprint"]
        ours, theirs = f["daemon"], f["supervisord"]
        counts = sorted(ours, key=int)
        rss_ratio = max(ours[k]["rss_mib"] / theirs[k]["rss_mib"] for k in counts)
        rows.append(["4", "RSS of the supervising process (MiB, 0 kernels)", ours[counts[0]]["rss_mib"],
                     theirs[counts[0]]["rss_mib"], f"{rss_ratio:.2f}", "≤ 1.1", _met(rss_ratio <= 1.1)])
        wake = max(ours[k]["wakeups_per_s"] for k in counts)
        rows.append(["4", f"wake-ups per second while idle (worst of {', '.join(map(str, counts))} kernels)", wake,
                     max(theirs[k]["wakeups_per_s"] for k in counts), "", "≤ 2", _met(wake <= 2)])
        growth = ours[counts[-1]]["rss_mib"] - ours[counts[0]]["rss_mib"]
        wake_growth = ours[counts[-1]]["wakeups_per_s"] - ours[counts[0]]["wakeups_per_s"]
        flat = abs(growth) <= 1.0 and wake_growth <= 0.5
        rows.append(["4", f"growth from {counts[0]} to {counts[-1]} kernels: RSS (MiB), wake-ups/s",
                     f"{growth:+.2f}, {wake_growth:+.2f}",
                     (f"{theirs[counts[-1]]['rss_mib'] - theirs[counts[0]]['rss_mib']:+.2f}, "
                     f"{theirs[counts[-1]]['wakeups_per_s'] - theirs[counts[0]]['wakeups_per_s']:+.2f}"),
                     "", "flat", _met(flat)])
        stop = max(ours[k]["stop_s"] for k in counts)
        leftovers = sum(ours[k]["leftovers"] for k in counts)
        codes = {ours[k]["exit_code"] for k in counts}
        rows.append(["6", f"SIGTERM → exit (s, worst of {', '.join(map(str, counts))} kernels); leftover processes",
                     f"{stop:.2f}; {leftovers} (exit {', '.join(map(str, sorted(codes, key=str)))})",
                     (f"{max(theirs[k]['stop_s'] for k in counts):.2f}; "
                     f"{sum(theirs[k]['leftovers'] for k in counts)}"), "", "0 left", _met(leftovers == 0)])
        if rss_ratio > 1.1:
            missed += _rss_missed(ours[counts[0]], theirs[counts[0]], profile)
        if wake > 2:
            missed += ["- **Wake-ups**: above 2 a second while idle; see the footprint table.", ""]
    if "recovery" in results:
        rec = results["recovery"]
        kill, stop = rec["kill"], rec["stop"]
        rows.append(["5", "kill -9 of Jupyter → READY=1 again vs cold start → READY=1 (s)", kill["recover_s"],
                     kill["cold_s"], f"{kill['ratio']:.2f}", "≤ 1.1", _met(kill["ratio"] <= 1.1)])
        rows.append(["5", "SIGSTOP of Jupyter → killed (detection, s; health_interval 1 s)", stop["detect_s"],
                     "", "", "≤ 3 (3 intervals)", _met(stop["detect_s"] <= 3.0)])
        rows.append(["5", "… killed → READY=1 again vs cold start (s)", stop["recover_s"], stop["cold_s"],
                     f"{stop['ratio']:.2f}", "≤ 1.1", _met(stop["ratio"] <= 1.1)])
        if kill["ratio"] > 1.1 or stop["ratio"] > 1.1:
            missed += _recovery_missed(kill, stop)
    if "first_start_s" in results:
        rows.append(["", "very first start (makes password, CA, certificate) → READY=1 (s)",
                     results["first_start_s"], "", "", "", ""])
    return rows, missed


def _steps(profile: dict[str, Any]) -> list[str]:
    steps = profile.get("start_s", {})
    return [f"  - {name}: {seconds * 1e3:.0f} ms" for name, seconds in steps.items()]


def _start_missed(m: dict[str, Any], profile: dict[str, Any], rounds: list[dict[str, float]]) -> list[str]:
    budget = (1.05 - 1) * m["bare_first"]
    own = statistics.median(r["daemon_first"] - r["spawn_delay"] for r in rounds)
    imports = profile.get("imports", {})
    by_package = ", ".join(f"{name} {ms:.0f} ms" for name, ms in imports.get("by_package", []))
    return [
        (f"- **Start → serving** ({m['ratio']:.3f}×): Jupyter itself starts in {m['bare_first']:.2f} s here, so "
        f"the 5 % budget is {budget * 1e3:.0f} ms; the daemon spends {m['spawn_delay'] * 1e3:.0f} ms (median, "
        f"from its own log) before it spawns Jupyter, and READY=1 follows Jupyter's first answer by "
        f"{m['gap'] * 1e3:.0f} ms. Its steps before the spawn, each timed in a fresh interpreter:"),
        *_steps(profile),
        (f"  - the daemon's imports by package (self time, -X importtime, {imports.get('total_ms', 0):.0f} ms in "
        f"all): {by_package}"),
        (f"  - Jupyter's own start, spawn → first answer, took {own:.2f} s under the daemon against "
         f"{m['bare_first']:.2f} s bare (medians; the same `jupyter lab`, plus our extension and the notebooks' "
         "kernel environment on JUPYTER_PATH): on a busy machine most of that difference is noise; rerun on an "
         "idle one before acting on it."),
        ("  - Already done: `jupyter-remote run` goes to the daemon without the command-line library or a "
        "second interpreter (`supervisor/entry.py`), and with a certificate already live Jupyter is spawned "
        "before the renewal check. What would close the rest: validate the settings in the forked child "
        "while the daemon imports (start it first thing in `supervisor/entry.py`), about 30 ms; or cache the "
        "validated settings keyed by the file's (inode, mtime, size) and skip pydantic when unchanged, about "
        "45 ms. Not done: a cache could serve settings whose machine-dependent checks (the account exists, "
        "`server.jupyter` is executable) have gone stale, and the gain is under 5 % of a 1 s Jupyter start."),
        "",
    ]


def _tls_missed(t: dict[str, Any]) -> list[str]:
    return [
        (f"- **New TLS connections** ({t['speedup_median_ms']:.2f}× at the median): the server's CPU per "
        f"connection falls {t['speedup_server_cpu_ms']:.2f}× (tornado given certfile/keyfile builds an "
        "SSLContext and reads both files for every connection; the extension reuses one), but the client's "
        "and the kernel's share of a loopback connection is the same on both sides and dilutes the ratio."),
        "",
    ]


def _rss_missed(ours: dict[str, Any], theirs: dict[str, Any], profile: dict[str, Any]) -> list[str]:
    steps = profile.get("rss_mib") or [("python alone", math.nan)]
    deltas = sorted(((mib - previous, label) for (_, previous), (label, mib) in itertools.pairwise(steps)),
                    reverse=True)
    return [
        f"- **RSS** ({ours['rss_mib']:.1f} MiB against supervisord's {theirs['rss_mib']:.1f}; the goal is "
        f"{theirs['rss_mib'] * 1.1:.1f}): a fresh interpreter is {steps[0][1]:.1f} MiB; the largest additions "
        "of what the daemon imports: " + "; ".join(f"{label} {delta:+.1f} MiB" for delta, label in deltas[:4])
        + ". Keep what only a command or a rare task needs in a short-lived child (as `supervisor/isolated.py` "
        "does) and out of `supervisor/daemon.py`'s imports.",
        "",
    ]


def _renewal_missed(ours: dict[str, Any]) -> list[str]:
    lag = ours.get("lag", {})
    lines = [(f"- **Renewal under load** (ours: {ours['failed']} failed, {ours['hung']} hung, "
             f"{ours['kernels_lost']} kernels lost; the daemon restarted Jupyter {ours.get('restarts')} times).")]
    if ours.get("restarts"):
        lines.append(
            "  The connections failed and the kernels went because the daemon replaced a Jupyter that was "
            "serving: its health probe pins the certificate, and with renewals every second a new connection "
            f"got the newest certificate only {_f(lag.get('median_s'))} s (median; max {_f(lag.get('max_s'))} s) "
            "later, as the extension looks once a second; a probe that met a certificate neither the live one "
            "nor the one before counted as no answer, three in a row as hung (the daemon's log says `serves "
            "certificate …, not the live one`). What would close it: in `supervisor/daemon.py` `_serves` (with "
            "`_refresh_live_certificate`), take a 200 from /api with any certificate still in the store "
            "(`CertificateStore` keeps the last versions) as serving; a certificate older than that deserves "
            "a warning in the log, never a restart that costs the kernels.")
    return [*lines, ""]


def _recovery_missed(kill: dict[str, Any], stop: dict[str, Any]) -> list[str]:
    return [
        (f"- **Recovery** (kill -9: {kill['ratio']:.2f}×, SIGSTOP: {stop['ratio']:.2f}×): a Jupyter that "
         "served for a minute is started again at once (`states.Backoff`), so what is left is the "
         "killing of the old process tree and the new Jupyter's own start, which takes longer than a cold "
         f"one ({kill['cold_s']:.1f} s) while the old kernels' memory is still being freed; on a busy "
         "machine rerun before acting on it."),
        "",
    ]


def _details(plan: dict[str, Any], results: dict[str, Any]) -> list[str]:
    lines = ["## Details", ""]
    if "start" in results:
        lines += ["### 1. Start to serving (s; every 5 ms a fresh GET /api polls both)", ""]
        lines += _table(["round", "daemon → READY=1", "daemon → Jupyter's first 200", "gap", ("daemon's own time "
                         "before spawning Jupyter"), "bare jupyter lab → first 200"],
                        [[i + 1, r["daemon_ready"], r["daemon_first"], r["gap"], r["spawn_delay"], r["bare_first"]]
                         for i, r in enumerate(results["start"]["rounds"])])
        lines += [("The bare run uses a hand-written config with the same certfile/keyfile (a copy of the "
                  "daemon's live pair), the same password hash, token off, as the same account via setpriv. "
                  "The first round of each warms caches and is not counted."), ""]
    if "tls" in results:
        t = results["tls"]
        lines += [f"### 2. New TLS connections ({t['daemon']['connections']} each, blocks of 50 alternating)", ""]
        lines += _table(["server", "median ms", "p99 ms", "Jupyter CPU ms / connection", "failed"],
                        [[name, t[name]["median_ms"], t[name]["p99_ms"], t[name]["server_cpu_ms"], t[name]["failed"]]
                         for name in ("daemon", "bare")])
        lines += [("One client, sequential, TLS 1.3, certificate verified against the local CA, no session "
                  "resumption; the same ECDSA certificate on both."), ""]
    if "renewal" in results:
        r = results["renewal"]
        lines += ["### 3. Renewal under load", ""]
        rows = []
        for name, label in (("ours", "jupyter-remote: lifecycle.ensure_current(renew_because=…)"),
                            ("stock_files", "stock Jupyter, `cp` cert then `cp` key in place"),
                            ("stock_restart", "stock Jupyter restarted per renewal")):
            x = r[name]
            rows.append([label, x["renewals"], x["connections"], x["failed"], x["hung"],
                         ", ".join(f"{k} {v}" for k, v in x["errors"].items()) or "—",
                         f"{x['kernels_lost']} of {x['kernels']}"])
        lines += _table(["scenario", "renewals", "connections", "failed", "hung (> 5 s)", "errors", "kernels lost"],
                        rows)
        lag = r["ours"].get("lag", {})
        lines += [(f"Two clients open fresh connections back to back throughout; renewals every "
                  f"{plan['interval']:g} s; two kernels hold a variable that must still be there at the end "
                  f"(reached over a new websocket). Ours: a new certificate reached new connections after "
                  f"{_f(lag.get('median_s'))} s (median; max {_f(lag.get('max_s'))} s; {lag.get('served', 0)} of "
                  f"{r['ours']['renewals']} versions were served before the next replaced them); daemon restarts "
                  f"of Jupyter meanwhile: {r['ours'].get('restarts')}. The restart scenario runs "
                  f"{r['stock_restart']['renewals']} renewals, not {r['ours']['renewals']}: each costs a full "
                  f"Jupyter start (median downtime {_f(r['stock_restart'].get('downtime_median_s'))} s) and loses "
                  "every kernel, which a few rounds already show."), ""]
    if "footprint" in results:
        f = results["footprint"]
        rows = []
        for name in ("daemon", "supervisord"):
            for kernels, x in sorted(f[name].items(), key=lambda item: int(item[0])):
                rows.append([name, kernels, x["rss_mib"], x["pss_mib"], x["cpu_ms_per_min"], x["wakeups_per_s"],
                             x["stop_s"], x["exit_code"], x["leftovers"]])
        lines += [f"### 4 and 6. Footprint while idle ({f['window_s']:g} s window) and stop", ""]
        lines += _table(["supervisor", "kernels", "RSS MiB", "PSS MiB", "CPU ms / min", "wake-ups / s",
                         "SIGTERM → exit s", "exit code", "leftover processes"], rows)
        lines += [("The supervising process alone (not Jupyter, not kernels). Wake-ups: voluntary + involuntary "
                  "context switches of all its threads (/proc/PID/task/*/status). The daemon runs with the "
                  "default health_interval (10 s); supervisord has no health check. Leftovers: processes of the "
                  "serving account alive 0.5 s after the supervisor exited."), ""]
    if "recovery" in results:
        rec = results["recovery"]
        rows = [[how, i + 1, r["cold"], r.get("detect"), r["recover"]]
                for how in ("kill", "stop") for i, r in enumerate(rec["rows"][how])]
        lines += ["### 5. Recovery (s; a fresh daemon per round, health_interval 1 s)", ""]
        lines += _table(["fault", "round", "cold start → READY=1", "detection", "→ READY=1 again"], rows)
    if "profile" in results:
        p = results["profile"]
        lines += ["### Profile of the daemon", ""]
        lines += _table(["step before the daemon spawns Jupyter (inclusive; fresh interpreter, median of 3)", "ms"],
                        [[name, seconds * 1e3] for name, seconds in p["start_s"].items()])
        if p.get("helpers"):
            lines += _table(["our helper process during a start (not Jupyter)", "seen from s", "to s",
                             "CPU s", "READY=1 at s"],
                            [[h["command"], h["from_s"], h["to_s"], h["cpu_s"], h["ready_s"]] for h in p["helpers"]])
        lines += _table(["interpreter + imports", "RSS MiB"], [[label, mib] for label, mib in p["rss_mib"]])
        lines += _table(["package (-X importtime, self)", "ms"], [[n, ms] for n, ms in p["imports"]["by_package"]])
    return lines
