"""Runs every benchmark of jupyter-remote against its peer and writes bench/RESULTS.md.

    python bench/run.py            # the full run (about 15 minutes on 2 cores)
    python bench/run.py --quick    # fewer rounds, for a look (about 6 minutes)

Run it with the Python of the environment under test (`scripts/bench` does): its `jupyter` and
`jupyter-remote` are the ones measured. As root, Jupyter runs as a throwaway unprivileged account.
supervisord comes from PyPI into a venv of its own (bench/requirements.txt): its import name,
`supervisor`, is ours too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

TOOLS = Path(os.environ.get("JR_BENCH_TOOLS", "/var/tmp/jr-bench-tools"))
BENCHMARKS = ("start", "tls", "renewal", "footprint", "recovery", "profile", "browser", "kernels", "dask")


def plan(quick: bool) -> dict[str, object]:
    if quick:
        return {"start_rounds": 2, "connections": 300, "renewals": 10, "restarts": 2, "interval": 1.0,
                "kernels": (0, 5, 20), "window": 10.0, "recovery_rounds": 1, "browser_rounds": 1,
                "kernel_rounds": 5, "dask_rounds": 1}
    return {"start_rounds": 5, "connections": 1000, "renewals": 100, "restarts": 4, "interval": 1.0,
            "kernels": (0, 5, 20), "window": 30.0, "recovery_rounds": 2, "browser_rounds": 3,
            "kernel_rounds": 15, "dask_rounds": 3}


def ensure_tools() -> Path:
    """The bench-only venv (supervisord), made or updated from bench/requirements.txt."""
    requirements = HERE / "requirements.txt"
    stamp = TOOLS / ".requirements"
    if stamp.is_file() and stamp.read_text() == requirements.read_text():
        return TOOLS
    print(f"bench: installing bench-only tools into {TOOLS}", flush=True)
    subprocess.run(["/usr/bin/python3", "-m", "venv", str(TOOLS)], check=True)
    subprocess.run([str(TOOLS / "bin" / "pip"), "install", "--quiet", "-r", str(requirements)], check=True)
    stamp.write_text(requirements.read_text())
    return TOOLS


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds and shorter windows")
    parser.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma-separated subset of {BENCHMARKS}")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--render", type=Path, metavar="JSON",
                        help="only write the table again from the raw figures of an earlier run")
    args = parser.parse_args()
    selected = [name for name in args.only.split(",") if name]
    unknown = set(selected) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    # A packaged install runs from compiled bytecode; let the daemon compile ours once, as pip did.
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)

    import browser
    import dask_dashboard
    import footprint
    import kernels
    import profile_daemon
    import recovery
    import renewal
    import report
    import start
    import tls
    from harness import Daemon, Lab

    if args.render:
        raw = json.loads(args.render.read_text())
        args.output.write_text(report.render(raw["context"], raw["plan"], raw["results"]))
        return 0
    settings = plan(args.quick)
    tools = ensure_tools()
    context = report.context(tools, args.quick)
    began = time.monotonic()
    lab = Lab.create(tools)
    results: dict[str, object] = {}
    try:
        first = Daemon(lab, lab.settings("first")).start()  # makes the password, CA and certificate
        try:
            results["first_start_s"] = first.ready() - first.started
        finally:
            first.stop()
        steps = {
            "start": lambda: start.run(lab, settings["start_rounds"]),
            "tls": lambda: tls.run(lab, settings["connections"]),
            "renewal": lambda: renewal.run(lab, settings["renewals"], settings["restarts"], settings["interval"]),
            "footprint": lambda: footprint.run(lab, settings["kernels"], settings["window"]),
            "recovery": lambda: recovery.run(lab, settings["recovery_rounds"]),
            "profile": lambda: profile_daemon.run(lab, tools),
            "browser": lambda: browser.run(lab, settings["browser_rounds"]),
            "kernels": lambda: kernels.run(lab, settings["kernel_rounds"]),
            "dask": lambda: dask_dashboard.run(lab, settings["dask_rounds"]),
        }
        for name in selected:
            print(f"bench: {name}", flush=True)
            step_began = time.monotonic()
            try:
                results[name] = steps[name]()
            except Exception:  # noqa: BLE001 - one broken benchmark must not lose the others' figures
                results[name] = {"error": traceback.format_exc(limit=4)}
                print(f"bench: {name} failed:\n{results[name]['error']}", flush=True)
            print(f"bench: {name} done in {time.monotonic() - step_began:.0f} s", flush=True)
    finally:
        lab.close()
    context["runtime_s"] = time.monotonic() - began
    context["load_after"] = os.getloadavg()
    raw = Path("/var/tmp/jr-bench-results.json")
    raw.write_text(json.dumps({"context": context, "plan": settings, "results": results}, indent=1, default=str))
    args.output.write_text(report.render(context, settings, results))
    print(f"bench: wrote {args.output} (raw figures: {raw}) in {context['runtime_s'] / 60:.1f} min", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
