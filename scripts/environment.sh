# Sourced by scripts/test, scripts/run and scripts/bench: makes (or reuses) the Python environment
# from the hash-locked requirements with Debian's python3, and installs this checkout into it.
#
# As root the environment lives in /var/tmp, where the unprivileged account Jupyter runs as can
# read it whatever folder this checkout is in (root's home is closed to others). The project is
# installed, not linked, so tests and `run` use the package as the .deb ships it.

if [ "$(id -u)" = 0 ]; then
    VENV=${VENV:-/var/tmp/jupyter-remote-venv}
else
    VENV=${VENV:-$PWD/.venv}
fi
PYTHON=${PYTHON:-/usr/bin/python3}
# python3-venv: venv and pip; util-linux: setpriv. The tests also build the .deb, boot it in a
# Debian container with systemd-nspawn and check the fail2ban filter (scripts/test adds those).
DEBIAN_PACKAGES=${DEBIAN_PACKAGES:-"python3 python3-venv util-linux"}
TEST_PACKAGES="systemd-container debootstrap dpkg-dev debhelper fakeroot build-essential fail2ban lintian"

install_debian_packages() {
    missing=""
    for package in $DEBIAN_PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" \
            || missing="$missing $package"
    done
    [ -z "$missing" ] && return 0
    if [ "$(id -u)" != 0 ]; then
        echo "missing Debian packages:$missing (install them: sudo apt install$missing)" >&2
        "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null || exit 1
        return 0
    fi
    echo "installing Debian packages:$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
}

ensure_environment() {
    stamp="$VENV/.requirements-test.lock"
    if ! cmp -s requirements-test.lock "$stamp" 2>/dev/null; then
        install_debian_packages
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip setuptools
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps \
            -r requirements-test.lock
        cp requirements-test.lock "$stamp"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall \
        --no-build-isolation .
    chmod -R go+rX "$VENV"
}
