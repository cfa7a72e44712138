PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test demo docs lint bench fuzz clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,docs,viz]"
	touch $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check rasplang interpreter backend tests benchmarks

test: $(STAMP) lint
	$(PY) -m pytest -q -m "not slow and not gpu"

demo: $(STAMP)
	$(PY) -m rasplang.demo

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q --benchmark-only

clean:
	rm -rf $(VENV) site .pytest_cache .ruff_cache .benchmarks
