# Every target creates .venv and installs what it needs, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: all venv demo test lint format typecheck bench clean

all: lint test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Re-install whenever the project's metadata or the compiled fast path changes (the editable
# install compiles src/buttress/ratelimit/_speedups.c in place).
$(VENV)/.installed-dev: pyproject.toml setup.py src/buttress/ratelimit/_speedups.c | $(VENV)/bin/python
	$(PIP) install -e '.[dev]'
	@touch $@

$(VENV)/.installed-bench: benchmarks/requirements.txt $(VENV)/.installed-dev
	$(PIP) install -r benchmarks/requirements.txt
	@touch $@

venv: $(VENV)/.installed-dev

demo: $(VENV)/.installed-dev
	$(PY) -m buttress demo

# The rate limiter's memory paths run twice: compiled (the first run) and pure Python, as
# they run where the C file did not compile (BUTTRESS_NO_EXTENSIONS=1).
PURE_TESTS := tests/ratelimit/test_limiter.py tests/ratelimit/test_limiter_model.py \
	tests/ratelimit/test_memory.py tests/ratelimit/test_waiting.py
test: $(VENV)/.installed-dev
	$(PY) -m pytest $(PYTEST_ARGS)
	BUTTRESS_NO_EXTENSIONS=1 $(PY) -m pytest -q -p no:cacheprovider $(PURE_TESTS)

lint: $(VENV)/.installed-dev
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	$(PY) tools/gen_events_doc.py --check
	$(PY) tools/async_to_sync.py --check
	$(PY) tools/gen_metrics_doc.py --check

typecheck: lint

format: $(VENV)/.installed-dev
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

# `make bench` runs every benchmark; `make bench BENCH=breaker` runs benchmarks/breaker.py only.
BENCH ?= *
bench: $(VENV)/.installed-bench
	@for b in benchmarks/$(BENCH).py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f src/buttress/ratelimit/_speedups.*.so
