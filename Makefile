# The two commands of the README: `make demo` and `make test`.
# The venv is built from uv.lock by scripts/install.sh (fast once uv's cache is warm).
MEMSTREAM_VENV ?= $(CURDIR)/.venv
export MEMSTREAM_VENV
PY := $(MEMSTREAM_VENV)/bin/python
# Run this clone's code even when MEMSTREAM_VENV was installed from another clone.
RUN := PYTHONPATH=$(CURDIR) $(PY)

.PHONY: install lock lock-upgrade demo test unit up down status lint typecheck

install:
	@scripts/install.sh

demo: install
	$(RUN) -m streams demo

# ruff and mypy first (0 errors each), then the suite.
test: install lint typecheck
	$(RUN) -m pytest $(PYTEST_ARGS)

unit: install
	$(RUN) -m pytest tests/unit $(PYTEST_ARGS)

up: install
	$(RUN) -m streams dev up

down: install
	$(RUN) -m streams dev down

status: install
	$(RUN) -m streams dev status

# uv.lock after a change to pyproject.toml (lock), or every package at its newest
# version within pyproject.toml's ranges (lock-upgrade). Commit the result.
lock:
	@scripts/install.sh lock
lock-upgrade:
	@scripts/install.sh lock --upgrade

lint: install
	$(PY) -m ruff check streams agents tests bench

typecheck: install
	$(PY) -m mypy streams agents
