# Sourced by scripts/test, scripts/run and scripts/bench: makes (or reuses) this checkout's Python
# environment from a hash-locked requirements file with Debian's python3, and installs the checkout
# into it. The caller sets LOCK (requirements.lock to run, requirements-test.lock to test) and
# DEBIAN_PACKAGES, then calls ensure_environment; VENV is where the environment is.
#
# Each checkout has its own environments, one to run and one to test, so two checkouts (or a test
# run beside a running try-it server) never swap code under each other.
#
# As root they live under /var/lib/jupyter-remote-dev/<checkout>: the unprivileged account Jupyter
# runs as must read them (root's home is closed to others), and root must never run code from a
# folder another user could have made first (as anyone can in /var/tmp). As a user, in the checkout.

PYTHON=${PYTHON:-/usr/bin/python3}
# python3-venv: venv and pip; util-linux: setpriv.
DEBIAN_PACKAGES="python3 python3-venv util-linux"
# The tests also build the .deb, boot it in a Debian container with systemd-nspawn, check the
# fail2ban filter and drive a real browser (the benchmarks: chromium over a link made with iproute2).
TEST_PACKAGES="systemd-container debootstrap dpkg-dev debhelper fakeroot build-essential fail2ban lintian
    chromium chromium-driver iproute2"
LOCK=requirements.lock

checkout_key() {
    pwd -P | sha256sum | cut -c1-12
}

# Root acts only on folders that no other user can write, nor any folder above them.
require_root_owned() {
    folder=$1
    while :; do
        if [ -e "$folder" ]; then
            if [ -L "$folder" ] || [ "$(stat -c %u "$folder")" != 0 ] \
                || [ -n "$(find "$folder" -maxdepth 0 -perm /022)" ]; then
                echo "refusing $folder: it must be root's and writable by root alone" >&2
                exit 1
            fi
        fi
        [ "$folder" = / ] && return 0
        folder=$(dirname "$folder")
    done
}

development_home() {
    if [ "$(id -u)" = 0 ]; then
        home=/var/lib/jupyter-remote-dev/$(checkout_key)
        require_root_owned "$home"
        mkdir -p -m 755 /var/lib/jupyter-remote-dev "$home"
        require_root_owned "$home"
        echo "$home"
    else
        echo "$PWD"
    fi
}

# name: "run" or "test"
choose_environment() {
    if [ "$(id -u)" = 0 ]; then
        VENV=$(development_home)/venv-$1
    elif [ "$1" = test ]; then
        VENV=$PWD/.venv
    else
        VENV=$PWD/.venv-run
    fi
}

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
    # Every time, not only when the lock changed: another command may have made the environment.
    install_debian_packages
    stamp="$VENV/.$(basename "$LOCK")"
    if ! cmp -s "$LOCK" "$stamp" 2>/dev/null; then
        rm -rf "$VENV"
        "$PYTHON" -m venv "$VENV"
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip setuptools
        "$VENV/bin/pip" install --quiet --disable-pip-version-check --require-hashes --no-deps \
            -r "$LOCK"
        cp "$LOCK" "$stamp"
    fi
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall \
        --no-build-isolation .
    chmod -R go+rX "$VENV"
}
