# Both targets build their own virtualenv (.venv) from pyproject.toml, so a fresh machine needs only python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean wheelhouse chromium

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rufus-gateway demo $(ARGS)

# Two workers: most tests wait on sockets, subprocesses and fsync, not the CPU (a serial run keeps one core a
# third busy), so the suite takes about half as long. Ports are per worker (tests/fixtures/ports.py).
# The phone page is tested in a real browser (tests/e2e/test_status_browser.py): Debian's chromium, installed
# here when it is missing (apt-get, as root or through sudo); Playwright drives it, no browser download.
test: $(STAMP) chromium
	$(BIN)/python -m pytest -q -n 2 --dist worksteal $(ARGS)

chromium:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test (apt-get)"; \
	  SUDO=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# Offline install: every wheel the Pi needs, built on a laptop that reaches PyPI, for the Pi's Python and
# architecture (not the laptop's). Defaults: Raspberry Pi OS bookworm 64-bit = CPython 3.11 on aarch64, glibc
# 2.36 (pip also takes the older manylinux wheels that fit it). For another target, e.g. a 32-bit Pi OS:
#   make wheelhouse PI_PLATFORM=manylinux_2_36_armv7l     or an x86 box: PI_PLATFORM=manylinux_2_36_x86_64
# Copy the folder to the Pi and install with: pip install --no-index --find-links wheelhouse rufus-gateway
WHEELHOUSE ?= wheelhouse
PI_PYTHON ?= 3.11
PI_PLATFORM ?= manylinux_2_36_aarch64

wheelhouse: $(STAMP)
	rm -rf $(WHEELHOUSE)
	$(BIN)/pip wheel -q --no-deps --wheel-dir $(WHEELHOUSE) .
	$(BIN)/pip download -q --dest $(WHEELHOUSE) --only-binary=:all: --python-version $(PI_PYTHON) \
	  --implementation cp --platform $(PI_PLATFORM) $(WHEELHOUSE)/rufus_gateway-*.whl
	@echo "$(WHEELHOUSE): $$(ls $(WHEELHOUSE) | wc -l) wheels for CPython $(PI_PYTHON) on $(PI_PLATFORM)"

# Style checks live here, not in pytest: they judge the source, not what the gateway does, and a test run
# should not fail (or take a minute longer) over a line length. .ci/run calls this after `make test`.
lint: $(STAMP)
	$(BIN)/ruff check gateway tests benchmarks
	$(BIN)/ruff format --check gateway tests benchmarks
	$(BIN)/mypy --strict -p gateway -p tests.chaos.harness  # the harness stays as strictly typed as the package it checks

clean:
	rm -rf $(VENV)
