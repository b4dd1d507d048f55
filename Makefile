# Every target sets up .venv first (creating it if missing), so a fresh clone needs only
# `make demo` or `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.eocausal-installed
OUT    ?= runs/demo
# Test processes (pytest-xdist); a file's tests stay in one process, sharing its fixtures.
TEST_WORKERS ?= 2

.PHONY: setup demo test test-all bench lint clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/eocausal demo --out $(OUT)

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile

test-all: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile -m ''

bench: $(STAMP)
	$(PY) -m benchmarks

lint: $(STAMP)
	$(VENV)/bin/ruff check eocausal pipeline simulator models workflows tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
