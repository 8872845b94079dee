"""4. Kernels: POST /api/kernels -> the first execute_reply of `1+1`, over the kernel's websocket.

Ours: the daemon's default kernel, in the notebooks' writable environment layered over the bundled
one (its .pth and pip constraint). Bare: stock `jupyter lab`'s default kernel, the environment's
own python. Both servers run at once; starts alternate between them, one kernel at a time, each
shut down before the next starts.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from typing import Any

import psutil
from harness import BareJupyter, Daemon, Lab, logged_in, median, wait_serving
from support import JupyterClient, KernelChannel

TIMEOUT = 120.0


def first_reply(client: JupyterClient, server_pid: int) -> dict[str, float]:
    """Seconds from POST /api/kernels to its answer, and to the first execute_reply of 1+1; and the
    kernel's CPU seconds by then (its start-up: a figure the machine's other load blurs less)."""
    began = time.monotonic()
    kernel_id = client.start_kernel()
    created = time.monotonic()
    channel = KernelChannel(client, kernel_id)
    try:
        msg_id = uuid.uuid4().hex
        channel.socket.send(json.dumps({
            "header": {"msg_id": msg_id, "msg_type": "execute_request", "session": uuid.uuid4().hex,
                       "username": "bench", "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": "1+1", "silent": False, "store_history": False,
                        "user_expressions": {}, "allow_stdin": False, "stop_on_error": True},
        }))
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            message = json.loads(channel.socket.recv())
            if (message.get("msg_type") == "execute_reply"
                    and message.get("parent_header", {}).get("msg_id") == msg_id):
                replied = time.monotonic()
                cpu = _kernel_cpu(server_pid, kernel_id)
                break
        else:
            raise RuntimeError("no execute_reply")
    finally:
        channel.close()
        client.session.delete(f"{client.base}/api/kernels/{kernel_id}", timeout=30,
                              headers={"X-XSRFToken": client.session.cookies.get("_xsrf", "")})
    return {"created_s": created - began, "reply_s": replied - began, "kernel_cpu_s": cpu}


def _kernel_cpu(server_pid: int, kernel_id: str) -> float:
    for process in psutil.Process(server_pid).children(recursive=True):
        try:
            if any(kernel_id in part for part in process.cmdline()):
                times = process.cpu_times()
                return times.user + times.system
        except psutil.Error:
            continue
    return math.nan


def run(lab: Lab, rounds: int) -> dict[str, Any]:
    daemon = Daemon(lab, lab.settings("kernels")).start()
    bare = BareJupyter(lab, "bare-kernels")
    try:
        daemon.ready()
        bare.start()
        wait_serving(bare.port, lab.context())
        clients = {"daemon": logged_in(lab, daemon.port), "bare": logged_in(lab, bare.port)}
        pids = {"daemon": daemon.jupyter_pid(), "bare": bare.pid}
        rows: dict[str, list[dict[str, float]]] = {name: [] for name in clients}
        for index in range(rounds + 1):  # the first of each warms the page cache: not counted
            order = list(clients) if index % 2 == 0 else list(reversed(clients))
            for name in order:
                row = first_reply(clients[name], pids[name])
                if index:
                    rows[name].append(row)
            time.sleep(0.5)  # the shut-down kernels' exit is not charged to the next start
    finally:
        bare.stop()
        daemon.stop()
    figures: dict[str, Any] = {"rounds": rows}
    for name, values in rows.items():
        figures[name] = {key: median([v[key] for v in values]) for key in values[0]}
    figures["ratio"] = figures["daemon"]["reply_s"] / figures["bare"]["reply_s"]
    figures["cpu_ratio"] = figures["daemon"]["kernel_cpu_s"] / figures["bare"]["kernel_cpu_s"]
    return figures
