# medswitch — the two commands a newcomer needs are `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TSTAMP := $(VENV)/.installed-test
# setuptools' notice on every editable install (folders named like the packages may shadow
# them: here they are the packages); its other warnings still show.
QUIET  := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: run test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(QUIET) $(PY) -m pip install --quiet -e .
	touch $@

$(TSTAMP): pyproject.toml | $(PY)
	$(QUIET) $(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(STAMP)

run: $(STAMP)
	$(VENV)/bin/medswitch run

lint: $(TSTAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy --strict messages hsm routing ledger switch simulators tests/support

test: lint
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(TSTAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
