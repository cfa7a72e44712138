PYTHON ?= python3
export NO_MKDOCS_2_WARNING := 1
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-browser demo docs lint bench clean

# Create .venv when missing and (re)install the package with the extras the tests,
# the docs and the figures need, whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,docs,viz]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(wildcard rasplang interpreter backend tests benchmarks docs/hooks)

test: $(STAMP) lint
	$(VENV)/bin/pytest -q -m "not slow and not gpu"
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir site

# The docs tests with a real browser and Graphviz (Debian packages; needs root).
test-browser: $(STAMP)
	apt-get install -y --no-install-recommends chromium graphviz || \
		(apt-get update && apt-get install -y --no-install-recommends chromium graphviz)
	$(VENV)/bin/pytest tests/docs -q

demo: $(STAMP)
	$(PY) -m rasplang.demo

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(VENV)/bin/pytest benchmarks -q --benchmark-only

clean:
	rm -rf $(VENV) site .pytest_cache .ruff_cache .benchmarks
