# One entry point for a newcomer on a fresh Debian machine:
#   make run    the supervised HTTPS JupyterLab, in the foreground, state in ./.run
#   make test   the whole test suite
#   make deb    the Debian package, into dist/
#   make bench  the benchmarks, into bench/RESULTS.md
#
# As root the environment lives in /var/tmp, where the unprivileged account Jupyter runs as can
# read it whatever folder this checkout is in (root's home is closed to others).
VENV ?= $(shell if [ "$$(id -u)" = 0 ]; then echo /var/tmp/jupyter-remote-venv; else echo .venv; fi)
PYTHON ?= /usr/bin/python3

.PHONY: run test deb bench install clean

$(VENV)/.locked: requirements-test.lock scripts/bootstrap
	VENV=$(VENV) PYTHON=$(PYTHON) scripts/bootstrap
	touch $@

# Installed, not linked: tests and `run` use the package as the .deb ships it.
install: $(VENV)/.locked
	$(VENV)/bin/pip install --quiet --no-deps --force-reinstall --no-build-isolation .

test: install
	$(VENV)/bin/pytest

run: install
	VENV=$(VENV) scripts/run-here

deb:
	scripts/build-deb

bench: install
	$(VENV)/bin/python bench/run.py

clean:
	rm -rf .venv build dist *.egg-info .run
