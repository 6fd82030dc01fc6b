# Every target creates .venv and installs what it needs, so a fresh clone needs nothing but python3.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q

.PHONY: all venv demo dist test lint format typecheck bench clean dashboard-image

all: lint test

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip

# Re-install whenever the project's metadata, its version or the compiled fast path changes (the
# editable install compiles src/buttress/ratelimit/_speedups.c in place).
INSTALL_INPUTS := pyproject.toml setup.py src/buttress/_version.py src/buttress/ratelimit/_speedups.c

$(VENV)/.installed-dev: $(INSTALL_INPUTS) | $(VENV)/bin/python
	$(PIP) install -e '.[dev]'
	@touch $@

# The demo needs the package and its extras (rich's progress bar; psutil where /proc is
# missing), not the dev toolchain. Editable like the dev install, so both run the source.
$(VENV)/.installed-demo: $(INSTALL_INPUTS) | $(VENV)/bin/python
	$(PIP) install -e '.[cli,memory]'
	@touch $@

$(VENV)/.installed-bench: benchmarks/requirements.txt $(VENV)/.installed-dev
	$(PIP) install -r benchmarks/requirements.txt
	@touch $@

venv: $(VENV)/.installed-dev

demo: $(VENV)/.installed-demo
	$(PY) -m buttress demo

# The sdist and the wheel (built from the sdist, as pip builds it) into dist/; then the wheel
# is installed into a fresh venv, away from the source tree, and must import and run there.
DIST_CHECK := build/dist-check
dist: $(VENV)/.installed-dev
	rm -rf dist $(DIST_CHECK)
	$(PY) -m build --quiet --outdir dist .
	$(PYTHON) -m venv $(DIST_CHECK)
	$(DIST_CHECK)/bin/python -m pip --disable-pip-version-check -q install dist/*.whl
	cd $(DIST_CHECK) && bin/python -c "import buttress, importlib.metadata as m; \
		assert m.version('buttress') == buttress.__version__; \
		assert 'site-packages' in buttress.__file__, buttress.__file__; \
		print('dist: buttress', buttress.__version__, 'installs and imports')"
	$(DIST_CHECK)/bin/buttress config check /dev/null >/dev/null
	@ls -1 dist

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

# The documentation's picture of the dashboard: the browser test's screenshot of a busy service,
# forced open), copied from build/artefacts/ to docs/images/.
dashboard-image: $(VENV)/.installed-dev
	$(PY) -m pytest -q -p no:cacheprovider tests/dashboard/test_browser.py -k busy
	mkdir -p docs/images
	cp build/artefacts/dashboard.png docs/images/dashboard.png

# `make bench` runs every benchmark; `make bench BENCH=breaker` runs benchmarks/breaker.py only.
BENCH ?= *
bench: $(VENV)/.installed-bench
	@for b in benchmarks/$(BENCH).py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
	rm -f src/buttress/ratelimit/_speedups.*.so
