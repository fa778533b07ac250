# The two commands of the README: `make demo` and `make test`.
MEMSTREAM_VENV ?= $(HOME)/.cache/memstream/venv
export MEMSTREAM_VENV
PY := $(MEMSTREAM_VENV)/bin/python
# Run this clone's code whatever clone the shared venv was installed from.
RUN := PYTHONPATH=$(CURDIR) $(PY)

.PHONY: install demo test unit up down status lint

install:
	@scripts/install.sh

demo: install
	$(RUN) -m streams demo

test: install
	$(RUN) -m pytest $(PYTEST_ARGS)

unit: install
	$(RUN) -m pytest tests/unit $(PYTEST_ARGS)

up: install
	$(RUN) -m streams dev up

down: install
	$(RUN) -m streams dev down

status: install
	$(RUN) -m streams dev status

lint: install
	$(PY) -m ruff check streams agents tests bench
