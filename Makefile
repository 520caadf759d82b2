# Both targets build their own virtualenv (.venv) from pyproject.toml, so a fresh machine needs only python3.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/rufus-gateway demo $(ARGS)

# Two workers: most tests wait on sockets, subprocesses and fsync, not the CPU (a serial run keeps one core a
# third busy), so the suite takes about half as long. Ports are per worker (tests/fixtures/ports.py).
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist worksteal $(ARGS)

# Style checks live here, not in pytest: they judge the source, not what the gateway does, and a test run
# should not fail (or take a minute longer) over a line length. .ci/run calls this after `make test`.
lint: $(STAMP)
	$(BIN)/ruff check gateway tests benchmarks
	$(BIN)/ruff format --check gateway tests benchmarks
	$(BIN)/mypy --strict -p gateway -p tests.chaos.harness  # the harness stays as strictly typed as the package it checks

clean:
	rm -rf $(VENV)
