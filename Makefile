PYTHON ?= python3
export NO_MKDOCS_2_WARNING := 1
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: test test-browser test-interop fuzz demo docs lint bench clean

# Create .venv when missing and (re)install the package with the extras the tests,
# the docs and the figures need, whenever pyproject.toml changes.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test,docs,viz,datasets,distributed,loaders]"
	touch $(STAMP)

lint: $(STAMP)
	$(VENV)/bin/ruff check $(wildcard rasplang interpreter backend tests benchmarks docs/hooks)

# Two pytest worker processes (pytest-xdist): the suite takes about a third less time on
# two cores than one process does.
test: $(STAMP) lint
	$(VENV)/bin/pytest -q -n 2 -m "not slow and not gpu"
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir site

# The docs tests with a real browser and Graphviz (Debian packages; needs root). Each
# page's full screenshot is left in build/screenshots/ for a look.
test-browser: $(STAMP)
	apt-get install -y --no-install-recommends chromium graphviz || \
		(apt-get update && apt-get install -y --no-install-recommends chromium graphviz)
	RASPLANG_SCREENSHOTS=$(CURDIR)/build/screenshots $(VENV)/bin/pytest tests/docs -q

# Hugging Face, TransformerLens and nnsight export tests. CPU torch first: a plain
# `torch` requirement pulls a multi-GB CUDA build on Linux. Here torch==2.13.0 is a local
# CPU wheel; elsewhere run
# make test-interop TORCH_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
test-interop: $(STAMP)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)" $(TORCH_INDEX)
	$(PY) -m pip install --quiet -e ".[hf,transformer-lens,nnsight]" "torch==$(TORCH_VERSION)" \
		$(TORCH_INDEX)
	$(VENV)/bin/pytest tests/interop tests/differential/test_norm_library.py -q

# A longer fuzz campaign: COUNT random programs per masking, then CORNER_COUNT
# adversarial corner cases, FLOAT32_COUNT numerical programs aimed at float32, FOLD_COUNT
# pairs of optimizer folds (rasplang/fold_cases.py) and EXPORT_COUNT float32 cases
# whose Hugging Face export is checked too (skipped, with a message, without torch and
# transformers), all seeded by SEED, in WORKERS processes
# (tests/differential/test_fuzz_corners.py). Every model is checked in float32 too
# unless it is exact in float64 only. All campaigns run; the target fails if any finds
# a problem.
COUNT         ?= 2000
CORNER_COUNT  ?= 300
FLOAT32_COUNT ?= 300
FOLD_COUNT    ?= 200
EXPORT_COUNT  ?= 50
WORKERS       ?= 1
SEED          ?= 0
CORNERS       := $(PY) tests/differential/test_fuzz_corners.py --seed $(SEED) --workers $(WORKERS)
fuzz: $(STAMP)
	status=0; \
	$(PY) tests/differential/test_fuzz.py --count $(COUNT) --seed $(SEED) || status=1; \
	$(CORNERS) --count $(CORNER_COUNT) || status=1; \
	$(CORNERS) --campaign float32 --count $(FLOAT32_COUNT) || status=1; \
	$(CORNERS) --campaign folds --count $(FOLD_COUNT) || status=1; \
	$(CORNERS) --campaign float32 --count $(EXPORT_COUNT) --start $(FLOAT32_COUNT) \
		--exports || status=1; \
	exit $$status

demo: $(STAMP)
	$(PY) -m rasplang.demo

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict --site-dir site

bench: $(STAMP)
	$(VENV)/bin/pytest benchmarks -q --benchmark-only

clean:
	rm -rf $(VENV) site .pytest_cache .ruff_cache .benchmarks
