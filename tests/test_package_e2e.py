"""End to end: the .deb on a fresh Debian bookworm with systemd as PID 1, in a systemd-nspawn container.

The package is built from this checkout (or reused from dist/ when made from the same sources). A
minimal bookworm root (debootstrap --variant=minbase, plus systemd and what the package depends on)
is made once and cached; each run boots it with --volatile=overlay, so it starts pristine and the
cache is never written, and with --private-network, so the install has no network. Commands run
inside with nsenter; the browser's part (e2e/client.py) runs in the container's network namespace.

The tests share one container, in the order of a user's day: install, log in, run code, reload,
upgrade, move the port, break the settings, stop, purge. None needs the ones before it to have run:
the install is a fixture, and each test makes the state it starts from (`pytest -k purge` works).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
from pathlib import Path
from typing import Any
from collections.abc import Iterator

import pytest

from support import wait_until

REPO = Path(__file__).resolve().parent.parent
CLIENT = Path(__file__).resolve().parent / "e2e" / "client.py"
CACHE = Path(os.environ.get("JUPYTER_REMOTE_TEST_CACHE", "/var/cache/jupyter-remote-test"))
MIRROR = os.environ.get("JUPYTER_REMOTE_TEST_MIRROR", "http://deb.debian.org/debian")
SUITE = "bookworm"
BOOT_PACKAGES = ("systemd", "systemd-sysv", "dbus")
INSIDE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Seconds from `apt install` to a login over HTTPS that only a broken install exceeds (about 30 on a
# quiet machine: the figure is printed and recorded as install_to_serving_seconds, not asserted).
SERVE_BOUND = 300.0
UNIT = "jupyter-remote"
ACCOUNT = "jupyter-remote"
HOME = "/var/lib/jupyter-remote/home"
NOTEBOOKS = f"{HOME}/notebooks"
FIRST_PORT, SECOND_PORT = 8888, 443  # 443: the port below 1024 goes through the sandbox's capabilities


def _why_nspawn_cannot_run() -> str:
    if os.geteuid() != 0:
        return "needs root to boot a container with systemd-nspawn"
    for tool, package in (("systemd-nspawn", "systemd-container"), ("nsenter", "util-linux"),
                          ("debootstrap", "debootstrap"), ("dpkg-buildpackage", "dpkg-dev")):
        if not shutil.which(tool):
            return f"needs {tool} (apt install {package})"
    return ""


pytestmark = [pytest.mark.e2e, pytest.mark.skipif(bool(_why_nspawn_cannot_run()), reason=_why_nspawn_cannot_run())]


# --- the package and the root file system ---------------------------------------------------------


@pytest.fixture(scope="module")
def package() -> Path:
    """The .deb of this checkout: scripts/build-deb --reuse builds only when the sources changed."""
    result = subprocess.run([str(REPO / "scripts" / "build-deb"), "--reuse"], cwd=REPO,
                            capture_output=True, text=True, timeout=45 * 60)
    assert result.returncode == 0, f"build-deb failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    built = Path(result.stdout.strip().splitlines()[-1])
    assert built.is_file() and built.suffix == ".deb", result.stdout[-2000:]
    return built


def _dependencies(deb: Path) -> list[str]:
    """The packages the .deb depends on (first of each set of alternatives), without versions."""
    depends = subprocess.run(["dpkg-deb", "--field", str(deb), "Depends"], capture_output=True,
                             text=True, check=True, timeout=60).stdout
    names = []
    for item in depends.split(","):
        first = item.split("|")[0].strip()
        if first:
            names.append(re.split(r"[\s(:]", first, maxsplit=1)[0])
    return names


@pytest.fixture(scope="module")
def bookworm_root(package: Path) -> Path:
    """A cached minimal bookworm with systemd and the package's dependencies, made once per set."""
    includes = sorted(set(BOOT_PACKAGES) | set(_dependencies(package)))
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(includes)}".encode()).hexdigest()[:12]
    root = CACHE / f"{SUITE}-{key}"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second run waits for the first one's debootstrap
        if not (root / ".complete").exists():
            partial = root.with_name(root.name + ".partial")
            shutil.rmtree(partial, ignore_errors=True)
            result = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(includes)}", SUITE,
                 str(partial), MIRROR], capture_output=True, text=True, timeout=30 * 60)
            assert result.returncode == 0, f"debootstrap failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            (partial / ".complete").write_text(" ".join(includes) + "\n")
            partial.rename(root)
            for stale in CACHE.glob(f"{SUITE}-*"):  # roots for an older set of dependencies
                if stale != root:
                    shutil.rmtree(stale, ignore_errors=True)
    return root


# Lines the next release adds to the settings reference, as the [idle] and [dask] keys will.
NEXT_RELEASE_LINES = "\n# [next]\n# documented_in_the_next_release = true\n"
REFERENCE = "usr/share/doc/jupyter-remote/settings.toml.reference"


@pytest.fixture(scope="module")
def next_release(package: Path) -> Iterator[Path]:
    """The next release as users get it: a newer version whose settings reference documents more.
    Repacked from the package (about 10 s; the same files otherwise) rather than built again."""
    work = Path(tempfile.mkdtemp(prefix="jupyter-remote-next-"))
    try:
        tree = work / "tree"
        subprocess.run(["dpkg-deb", "--raw-extract", str(package), str(tree)], check=True,
                       capture_output=True, timeout=600)
        control = tree / "DEBIAN" / "control"
        text = control.read_text()
        version = re.search(r"(?m)^Version: (.+)$", text).group(1)  # type: ignore[union-attr]
        arch = re.search(r"(?m)^Architecture: (.+)$", text).group(1)  # type: ignore[union-attr]
        control.write_text(text.replace(f"Version: {version}", f"Version: {version}+next"))
        reference = tree / REFERENCE
        reference.write_text(reference.read_text() + NEXT_RELEASE_LINES)
        sums = tree / "DEBIAN" / "md5sums"
        digest = hashlib.md5(reference.read_bytes()).hexdigest()
        entry = rf"(?m)^[0-9a-f]{{32}}  {re.escape(REFERENCE)}$"
        sums.write_text(re.sub(entry, f"{digest}  {REFERENCE}", sums.read_text()))
        built = package.parent / f"jupyter-remote_{version}+next_{arch}.deb"
        subprocess.run(["dpkg-deb", "-Zgzip", "-z1", "--build", str(tree), str(built)], check=True,
                       capture_output=True, timeout=600)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    yield built
    built.unlink(missing_ok=True)


# --- the container ----------------------------------------------------------------------------------


class Container:
    """A booted container: commands run inside with nsenter, files are read through /proc/<pid>/root."""

    def __init__(self, root: Path, dist: Path) -> None:
        # The container writes to it for its whole life: closed in destroy().
        self.log = tempfile.NamedTemporaryFile(  # noqa: SIM115
            prefix="jupyter-remote-e2e-", suffix=".log", delete=False)
        self.nspawn = subprocess.Popen(
            ["systemd-nspawn", "--boot", "--volatile=overlay", "--private-network", "--register=no",
             "--keep-unit", f"--machine=jr-e2e-{os.getpid()}", "--directory", str(root),
             f"--bind-ro={dist}:/mnt/dist"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid1 = 0
        self.port = FIRST_PORT
        self.install_to_serving = 0.0  # seconds, once installed

    def wait_booted(self) -> None:
        self.pid1 = wait_until(self._find_init, 30, "the container's systemd to start")
        # systemctl fails (prints no state) until systemd has opened its socket; --wait then
        # waits for the boot to finish.
        state = wait_until(self._boot_state, 90, f"the container to boot:\n{self.boot_log()}", interval=0.2)
        assert state in ("running", "degraded"), f"container boot ended {state!r}:\n{self.boot_log()}"

    def _boot_state(self) -> str:
        state = self.run("systemctl", "is-system-running", "--wait", check=False, timeout=90).stdout.strip()
        # "offline": systemctl could not reach the manager yet (it is still setting itself up), which
        # happens when we ask in the first moments of the boot: ask again.
        return "" if state == "offline" else state

    def _find_init(self) -> int:
        if self.nspawn.poll() is not None:
            raise AssertionError(f"systemd-nspawn exited with {self.nspawn.returncode}:\n{self.boot_log()}")
        try:
            children = Path(f"/proc/{self.nspawn.pid}/task/{self.nspawn.pid}/children").read_text().split()
        except OSError:
            return 0
        for pid in children:
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return int(pid)
            except OSError:
                continue
        return 0

    def boot_log(self) -> str:
        return Path(self.log.name).read_text(errors="replace")[-4000:]

    def run(self, *argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-a", "env", "-i", f"PATH={INSIDE_PATH}", "LANG=C.UTF-8",
             "DEBIAN_FRONTEND=noninteractive", *argv],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )
        if check:
            said = f"{result.stdout}\n{result.stderr}"
            assert result.returncode == 0, f"{' '.join(argv)}: exit {result.returncode}\n{said}"
        return result

    def path(self, inside: str) -> Path:
        return Path(f"/proc/{self.pid1}/root") / inside.lstrip("/")

    def client(self, action: str, argument: str = "", port: int | None = None) -> dict[str, Any]:
        """The browser's part (e2e/client.py), in the container's network namespace."""
        argv = [str(self.path("/")), str(port or self.port), action, *([argument] if argument else [])]
        result = subprocess.run(
            ["nsenter", "-t", str(self.pid1), "-n", "--", sys.executable, str(CLIENT), *argv],
            capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 0, f"client {action} failed:\n{result.stderr[-3000:]}"
        return json.loads(result.stdout)

    def logs_in(self, port: int | None = None) -> bool:
        try:
            return self.client("login", port=port) == {"login_status": 302, "logged_in": True}
        except AssertionError:
            return False

    def show(self, *properties: str) -> dict[str, str]:
        argv = ["systemctl", "show", UNIT, *(f"--property={name}" for name in properties)]
        return dict(line.split("=", 1) for line in self.run(*argv).stdout.splitlines() if "=" in line)

    def is_active(self) -> str:
        return self.run("systemctl", "is-active", UNIT, check=False).stdout.strip()

    def daemon_status(self) -> dict[str, Any]:
        return json.loads(self.run("jupyter-remote", "status", "--json").stdout)

    def account_processes(self) -> list[str]:
        """The service account's processes in this container (its pid namespace), as "pid cmdline"."""
        passwd = self.path("/etc/passwd").read_text().splitlines()
        uid = next(line.split(":")[2] for line in passwd if line.startswith(f"{ACCOUNT}:"))
        namespace = os.readlink(f"/proc/{self.pid1}/ns/pid")
        found = []
        for process in Path("/proc").iterdir():
            try:
                if not process.name.isdigit() or os.readlink(process / "ns" / "pid") != namespace:
                    continue
                status = (process / "status").read_text().splitlines()
                if uid in next(line for line in status if line.startswith("Uid:")).split()[1:]:
                    cmdline = (process / "cmdline").read_bytes().replace(bytes(1), b" ").decode()
                    found.append(f"{process.name} {cmdline}")
            except (OSError, StopIteration):
                continue  # gone meanwhile
        return found

    def destroy(self) -> None:
        """SIGTERM makes nspawn shut the container down cleanly; SIGKILL to its init ends the rest."""
        if self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(timeout=30)
            except subprocess.TimeoutExpired:
                for pid in (self.pid1, self.nspawn.pid):
                    if pid:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                self.nspawn.wait(timeout=30)
        self.log.close()
        os.unlink(self.log.name)


@pytest.fixture(scope="module")
def container(bookworm_root: Path, package: Path) -> Iterator[Container]:
    booted = Container(bookworm_root, package.parent)
    try:
        booted.wait_booted()
        yield booted
    finally:
        booted.destroy()


@pytest.fixture(scope="module")
def installed(container: Container, package: Path) -> Container:
    """The package installed with `apt install` and serving, as the first thing of the day."""
    started = time.monotonic()
    container.run("apt-get", "install", "--yes", "--no-install-recommends", f"/mnt/dist/{package.name}",
                  timeout=300)
    wait_until(lambda: container.is_active() == "active", SERVE_BOUND, "the service to be active")
    wait_until(container.logs_in, SERVE_BOUND, "a login over HTTPS with the initial password", interval=0.5)
    container.install_to_serving = time.monotonic() - started
    return container


def _write_settings(container: Container, edit: Any) -> None:
    path = container.path("/etc/jupyter-remote/settings.toml")
    path.write_text(edit(path.read_text()))


def _journal(container: Container) -> str:
    return container.run("journalctl", "--unit", UNIT, "--no-pager", "--output=cat").stdout


# --- the tests, in the order of a user's day --------------------------------------------------------


def test_install_without_network_serves_https_with_a_password(
        installed: Container, record_property: Any) -> None:
    container = installed
    elapsed = container.install_to_serving
    record_property("install_to_serving_seconds", round(elapsed, 1))
    print(f"\ninstall to serving: {elapsed:.1f} s")

    password = container.path("/etc/jupyter-remote/initial-password").stat()
    assert (password.st_mode & 0o777, password.st_uid) == (0o600, 0)
    assert container.run("systemctl", "is-enabled", UNIT).stdout.strip() == "enabled"


@pytest.mark.usefixtures("installed")
def test_kernel_runs_code_as_the_account_and_saves_a_notebook(container: Container) -> None:
    code = (
        "import os, pwd, socket\n"
        "for family in (socket.AF_INET, socket.AF_INET6):\n"
        "    socket.socket(family).close()\n"
        f"with open({NOTEBOOKS + '/kept.ipynb'!r}, 'w') as notebook:\n"
        "    notebook.write('{}')\n"
        "print(6 * 7, pwd.getpwuid(os.getuid()).pw_name)\n"
    )
    assert container.client("kernel", code)["output"] == f"42 {ACCOUNT}\n"
    assert container.path(f"{NOTEBOOKS}/kept.ipynb").exists()


@pytest.mark.usefixtures("installed")
def test_terminal_opens_a_login_shell_on_a_pty(container: Container) -> None:
    output = container.client("terminal", "echo $((6*7)) $(id -un) $(tty); echo END-OF-OUTPUT")["output"]
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output).replace("\r", "")  # what a user sees
    assert re.search(rf"^42 {ACCOUNT} /dev/pts/\d+$", screen, re.MULTILINE), output
    # The notebooks' Python and the serving Jupyter, though Debian's /etc/profile sets PATH afresh.
    typed = "command -v pip python jupyter; echo END-OF-OUTPUT"
    output = container.client("terminal", typed)["output"]
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", output).replace("\r", "")
    environment = f"{HOME}/.local/share/jupyter-remote/python/bin"
    serving = "/usr/lib/jupyter-remote/bin/jupyter"
    for found in (f"{environment}/pip", f"{environment}/python", serving):
        assert re.search(rf"^{re.escape(found)}$", screen, re.MULTILINE), output


# A wheel made on the spot: pip installs it with no network, as `%pip install` would from PyPI.
OWN_PACKAGE = r"""
import base64, hashlib, os, subprocess, sys, tempfile, zipfile
def line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}\n"
files = {
    "e2e_own_package.py": b"ANSWER = 42\n",
    "e2e_own_package-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: e2e-own-package\nVersion: 1.0\n",
    "e2e_own_package-1.0.dist-info/WHEEL":
        b"Wheel-Version: 1.0\nGenerator: e2e\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
}
wheel = os.path.join(tempfile.mkdtemp(), "e2e_own_package-1.0-py3-none-any.whl")
with zipfile.ZipFile(wheel, "w") as archive:
    record = "".join(line(name, data) for name, data in files.items())
    for name, data in files.items():
        archive.writestr(name, data)
    archive.writestr("e2e_own_package-1.0.dist-info/RECORD", record + "e2e_own_package-1.0.dist-info/RECORD,,\n")
pip = subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--quiet", wheel],
                     capture_output=True, text=True)
print("pip exit", pip.returncode, pip.stderr[-500:] if pip.returncode else "")
print(sys.prefix.startswith(os.path.expanduser("~")))
print(subprocess.run([sys.executable, "-c", "import e2e_own_package; print(e2e_own_package.ANSWER)"],
                     capture_output=True, text=True).stdout.strip())
for folder in ("/srv/data", "/home/data", "/mnt/data"):
    with open(folder + "/written-by-kernel", "w") as out:
        out.write("x")
print("data folders written")
"""


@pytest.mark.usefixtures("installed")
def test_kernel_installs_packages_into_its_own_environment_and_writes_data_folders(container: Container) -> None:
    container.run("install", "-d", "-o", ACCOUNT, "-g", ACCOUNT, "/srv/data", "/home/data", "/mnt/data")
    output = container.client("kernel", OWN_PACKAGE)["output"]
    assert output.splitlines() == ["pip exit 0 ", "True", "42", "data folders written"], output


@pytest.mark.usefixtures("installed")
def test_kernels_keep_the_machines_devices_for_gpus(container: Container) -> None:
    # This machine has no GPU. The stand-in: a node named like the first NVIDIA GPU, world-usable as
    # NVIDIA's are, for a device (FUSE) outside the few every service may open. A kernel opens it as
    # CUDA opens the real one, which PrivateDevices= would prevent. A device allow-list (DeviceAllow=)
    # is not enforced inside this container, so the unit is checked to have none.
    container.run("mknod", "--mode=666", "/dev/nvidia0", "c", "10", "229")
    code = "import os\nos.close(os.open('/dev/nvidia0', os.O_RDWR))\nprint('opened')\n"
    assert container.client("kernel", code)["output"] == "opened\n"
    devices = container.show("PrivateDevices", "DevicePolicy", "DeviceAllow")
    assert (devices["PrivateDevices"], devices["DevicePolicy"], devices.get("DeviceAllow", "")) == ("no", "auto", "")


# What a user types in a notebook once [dask] is on: no address, no certificate, no port.
DASK_NOTEBOOK = (
    "from dask.distributed import Client\n"
    "client = Client()\n"
    "print(client.submit(sum, [1, 2, 3]).result(), client.scheduler_info()['address'])\n"
    "print(client.dashboard_link)\n"
)
DASK_CLUSTER_UP = "jupyter-remote: local Dask cluster up"


@pytest.mark.usefixtures("installed")
def test_dask_client_in_a_notebook_reaches_the_local_cluster_and_its_dashboard_behind_the_login(
        container: Container) -> None:
    settings = container.path("/etc/jupyter-remote/settings.toml")
    found = settings.read_text()
    started_before = _journal(container).count(DASK_CLUSTER_UP)
    settings.write_text(f"{found}\n[dask]\nenabled = true\n")
    try:
        # [dask] restarts Jupyter (its environment changes); the reload answers once it serves again.
        container.run("systemctl", "reload", UNIT, timeout=120)
        assert container.is_active() == "active" and container.logs_in()
        # The unit's sandbox lets the cluster's scheduler and worker processes start.
        wait_until(lambda: _journal(container).count(DASK_CLUSTER_UP) > started_before, 90,
                   f"the local Dask cluster to start:\n{_journal(container)[-3000:]}", interval=1)
        result = container.client("dashboard", DASK_NOTEBOOK)
        ports = json.loads(container.path("/run/jupyter-remote/dask-ports.json").read_text())
        assert f"6 tls://127.0.0.1:{ports['scheduler']}" in result["output"].splitlines(), result["output"]
        # On the server's URL, through Jupyter's proxy; the dashboard answers the logged-in browser alone.
        url = urllib.parse.urlsplit(container.daemon_status()["url"])
        assert result["link"] == f"{url.scheme}://{url.netloc}/proxy/127.0.0.1:{ports['dashboard']}/status", result
        assert result["logged_in"] == {"status": 200, "location": "", "dask_page": True}, result
        stranger = result["stranger"]
        assert stranger["status"] == 302 and "/login?next=" in stranger["location"], result
        assert not stranger["dask_page"], result
    finally:
        settings.write_text(found)
        container.run("systemctl", "reload", UNIT, timeout=120)
    # Off again: Jupyter restarted without the cluster, and none of its processes is left behind.
    wait_until(lambda: not [p for p in container.account_processes() if "local_cluster.py" in p
                            or "multiprocessing" in p], 30, "the local Dask cluster to end")
    assert container.logs_in()


@pytest.mark.usefixtures("installed")
def test_reload_keeps_jupyter_and_its_kernels_serving(container: Container) -> None:
    before = container.daemon_status()
    container.run("systemctl", "reload", UNIT, timeout=120)
    assert container.is_active() == "active"
    assert container.daemon_status()["jupyter_pid"] == before["jupyter_pid"]
    assert container.logs_in()


@pytest.mark.usefixtures("installed")
def test_upgrade_over_edited_settings_asks_nothing_keeps_them_and_the_running_server(
        container: Container, next_release: Path) -> None:
    settings = container.path("/etc/jupyter-remote/settings.toml")
    edited = settings.read_text() + "\n[auth]\nrate_limit_per_minute = 20  # mine\n"
    settings.write_text(edited)
    container.run("systemctl", "reload", UNIT, timeout=120)
    before = container.show("MainPID")["MainPID"], container.daemon_status()["jupyter_pid"]

    # As unattended upgrades run it: no terminal, nothing on stdin to answer a question.
    upgrade = container.run("apt-get", "install", "--yes", "--no-install-recommends",
                            f"/mnt/dist/{next_release.name}", check=False, timeout=300)
    said = upgrade.stdout + upgrade.stderr
    assert upgrade.returncode == 0, said
    assert "conffile" not in said and "Configuration file" not in said, said
    assert settings.read_text() == edited
    assert not list(settings.parent.glob("settings.toml.dpkg-*"))
    # The new release's documentation reached the user all the same.
    assert NEXT_RELEASE_LINES in container.path(f"/{REFERENCE}").read_text()

    # Not restarted: Jupyter, hence its kernels, kept; a restart is pending, and says so.
    assert (container.show("MainPID")["MainPID"], container.daemon_status()["jupyter_pid"]) == before
    version = container.run("dpkg-query", "--show", "--showformat=${Version}",
                            "jupyter-remote").stdout
    assert version.endswith("+next")
    # The daemon notices the upgrade at its next health probe (every health_interval, 10 s).
    wait_until(lambda: container.daemon_status()["restart_pending"] == version, 60,
               "status --json to say a restart is pending")
    # `jupyter-remote status`, as the README prints it: any user may run it, no sudo.
    status = container.run("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           "jupyter-remote", "status")
    assert f"restart pending: upgraded to {version}" in status.stdout, status.stdout
    assert container.logs_in()


@pytest.mark.usefixtures("installed")
def test_new_port_and_reload_moves_the_server(container: Container) -> None:
    # The shipped file sets no port: a user adds the line.
    _write_settings(container, lambda text: f"{text}\n[server]\nport = {SECOND_PORT}\n")
    container.run("systemctl", "reload", UNIT, timeout=120)
    container.port = SECOND_PORT
    wait_until(container.logs_in, 60, f"a login on port {SECOND_PORT}", interval=0.5)
    assert not container.logs_in(port=FIRST_PORT)
    assert container.is_active() == "active"


@pytest.mark.usefixtures("installed")
def test_settings_typo_is_rejected_by_reload_and_fails_restart_without_retries(container: Container) -> None:
    _write_settings(container, lambda text: re.sub(r"(?m)^port = ", "prot = ", text))

    reload = container.run("systemctl", "reload", UNIT, check=False, timeout=120)
    assert reload.returncode != 0
    assert container.is_active() == "active" and container.logs_in()  # still on the old settings

    restart = container.run("systemctl", "restart", UNIT, check=False, timeout=120)
    assert restart.returncode != 0
    status = container.run("systemctl", "status", "--no-pager", "--lines=20", UNIT, check=False).stdout
    assert "prot" in status or "prot" in _journal(container), status
    # Restart=on-failure would show "activating (auto-restart)"; exit 78 leaves it failed, for good.
    state = container.show("ActiveState", "SubState", "ExecMainStatus", "NRestarts")
    assert state == {"ActiveState": "failed", "SubState": "failed", "ExecMainStatus": "78", "NRestarts": "0"}

    _write_settings(container, lambda text: re.sub(r"(?m)^prot = ", "port = ", text))
    container.run("systemctl", "start", UNIT, timeout=300)
    assert container.logs_in()


@pytest.mark.usefixtures("installed")
def test_stop_leaves_no_process_of_the_account(container: Container) -> None:
    container.client("kernel", "print('kernel running')")
    # A detached process of its own session: what a user starts with nohup or setsid in a terminal.
    output = container.client("terminal", "setsid sleep 1000 < /dev/null > /dev/null 2>&1 & echo END-OF-OUTPUT")
    assert "END-OF-OUTPUT" in output["output"]
    assert len(container.account_processes()) >= 3  # Jupyter, the kernel, the terminal's shell

    container.run("systemctl", "stop", UNIT, timeout=120)
    assert container.is_active() == "inactive"
    assert container.account_processes() == []
    assert not container.path("/run/jupyter-remote/restart-pending").exists()


@pytest.mark.usefixtures("installed")
def test_purge_removes_configuration_and_certificates_but_keeps_notebooks_and_account(
        container: Container) -> None:
    # A notebook of the user's own, made as the account (not only kept.ipynb, which another test
    # writes through a kernel).
    container.run("setpriv", f"--reuid={ACCOUNT}", f"--regid={ACCOUNT}", "--init-groups", "--",
                  "touch", f"{NOTEBOOKS}/mine.ipynb")
    container.run("dpkg", "--purge", "jupyter-remote", timeout=300)
    for gone in ("/etc/jupyter-remote", "/var/lib/jupyter-remote/tls", "/lib/systemd/system/jupyter-remote.service",
                 "/usr/lib/jupyter-remote", "/usr/bin/jupyter-remote"):
        assert not container.path(gone).exists(), gone
    assert container.path(f"{NOTEBOOKS}/mine.ipynb").exists()
    assert container.run("getent", "passwd", ACCOUNT).stdout.split(":")[5] == HOME


def test_idle_poweroff_powers_the_container_off(container: Container, package: Path) -> None:
    """Last: it ends the container. The unit's sandbox lets the daemon ask systemd to power off."""
    container.run("apt-get", "install", "--yes", "--no-install-recommends", f"/mnt/dist/{package.name}",
                  timeout=300)  # again, after the purge above
    # The shipped file sets nothing: a user adds the section.
    _write_settings(container, lambda text: f'{text}\n[idle]\nstop_after_minutes = 0.2\n'
                    'action = "poweroff"\nwarn_minutes = 0.1\n')
    container.run("systemctl", "reload", UNIT, timeout=120)  # [idle] applies without a restart
    assert "power the machine off after 0.2 minutes" in container.run("jupyter-remote", "check").stdout
    wait_until(lambda: "unless something is active" in _journal(container), 60, "the idle warning")
    try:
        container.nspawn.wait(timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the container did not power off:\n{container.boot_log()}") from None
    assert container.nspawn.returncode == 0, container.boot_log()
