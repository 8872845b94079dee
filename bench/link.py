"""An emulated home link between this machine and a network namespace, at the IP level.

    python bench/link.py NAMESPACE HOST_IF BROWSER_IF SERVER_IP BROWSER_IP DOWN_MBIT UP_MBIT DELAY_MS

tc netem is the usual tool, but this machine's kernel is built without it (no sch_netem), so the
link is two TUN devices, one here (SERVER_IP) and one moved into NAMESPACE (BROWSER_IP), and this
process carries every IP packet between them: each direction is a FIFO that sends one packet at a
time at its rate (serialisation delay, as a link of that speed) and delivers it DELAY_MS later, with
a 1000-packet queue like netem's default. TCP's handshake, TLS round trips, slow start and loss all
happen as over a real link; packets are never larger than the 1500-byte MTU (no offloads).

Prints "ready" once both ends have their addresses; runs until SIGTERM or its stdin closes. The TUN
devices disappear with the process.
"""

from __future__ import annotations

import collections
import fcntl
import os
import selectors
import signal
import struct
import subprocess
import sys
import time

TUNSETIFF = 0x400454CA
IFF_TUN, IFF_NO_PI = 0x0001, 0x1000
LIMIT = 1000  # packets queued per direction, as netem's default
MTU = 1500


class Direction:
    """One way of the link: a FIFO at `bits_per_second`, each packet delivered `delay` s later."""

    def __init__(self, source: int, target: int, bits_per_second: float, delay: float) -> None:
        self.source, self.target = source, target
        self.seconds_per_byte = 8 / bits_per_second
        self.delay = delay
        self.free_at = 0.0  # when the link has finished sending the last queued packet
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.dropped = 0

    def take(self, now: float) -> None:
        while True:
            try:
                packet = os.read(self.source, 65536)
            except BlockingIOError:
                return
            if len(self.queue) >= LIMIT:
                self.dropped += 1
                continue
            self.free_at = max(now, self.free_at) + len(packet) * self.seconds_per_byte
            self.queue.append((self.free_at + self.delay, packet))

    def deliver(self, now: float) -> float | None:
        """Writes what is due; the time of the next packet, if any."""
        while self.queue and self.queue[0][0] <= now:
            os.write(self.target, self.queue.popleft()[1])
        return self.queue[0][0] if self.queue else None


def open_tun(name: str) -> int:
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TUN | IFF_NO_PI))
    return fd


def run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


def main() -> int:
    namespace, host_if, browser_if, server_ip, browser_ip = sys.argv[1:6]
    down, up, delay = float(sys.argv[6]) * 1e6, float(sys.argv[7]) * 1e6, float(sys.argv[8]) / 1e3
    host_fd, browser_fd = open_tun(host_if), open_tun(browser_if)
    inside = ("ip", "netns", "exec", namespace)
    run("ip", "link", "set", browser_if, "netns", namespace)  # the open fd keeps carrying it
    run("ip", "addr", "add", f"{server_ip}/30", "dev", host_if)
    run("ip", "link", "set", host_if, "mtu", str(MTU), "up")
    run(*inside, "ip", "addr", "add", f"{browser_ip}/30", "dev", browser_if)
    run(*inside, "ip", "link", "set", browser_if, "mtu", str(MTU), "up")
    run(*inside, "ip", "link", "set", "lo", "up")

    directions = {host_fd: Direction(host_fd, browser_fd, down, delay),
                  browser_fd: Direction(browser_fd, host_fd, up, delay)}
    selector = selectors.DefaultSelector()
    for fd in directions:
        selector.register(fd, selectors.EVENT_READ)
    os.set_blocking(0, False)
    selector.register(0, selectors.EVENT_READ)  # stdin closed: the parent is gone
    running = True

    def stop(*_: object) -> None:
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    print("ready", flush=True)
    timeout: float | None = None
    while running:
        for key, _ in selector.select(timeout):
            if key.fd == 0:
                if not os.read(0, 4096):
                    running = False
                continue
            directions[key.fd].take(time.monotonic())
        now = time.monotonic()
        due = [d for d in (direction.deliver(now) for direction in directions.values()) if d]
        timeout = max(0.0, min(due) - time.monotonic()) if due else None
    print(f"dropped down {directions[host_fd].dropped}, up {directions[browser_fd].dropped}",
          file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
