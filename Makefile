# worldforge: `make demo` sets up and runs the quickstart; `make test` sets up and runs the tests.
# Both start from nothing but a clone: they create .venv and install into it.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# Where no GPU is present, the CPU build of torch goes in first so that the dependency resolver
# does not pull a multi-GB CUDA build. Elsewhere set TORCH_CPU_INDEX, e.g.
#   make demo TORCH_CPU_INDEX="--index-url https://download.pytorch.org/whl/cpu"
TORCH_CPU_SPEC ?= torch==2.13.0
TORCH_CPU_INDEX ?=
PYTEST_ARGS ?=
# Test processes (pytest-xdist). Each test runs on one torch thread, so two workers fill two cores;
# whole files go to one worker, so a module's fixtures are built once. TEST_WORKERS=0 runs in-process.
TEST_WORKERS ?= 2
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile
DEMO_CONFIG ?= quickstart

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180

.PHONY: install install-dev browser gl demo test test-fast test-all lint clean-demo

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(PY)
	@if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi >/dev/null 2>&1; then \
		echo "GPU found: torch comes from the dependency range in pyproject.toml"; \
	else \
		echo "no GPU: installing the CPU build of torch first ($(TORCH_CPU_SPEC))"; \
		$(PY) -m pip install --quiet "$(TORCH_CPU_SPEC)" $(TORCH_CPU_INDEX); \
	fi
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.torch
	$(PY) -m pip install --quiet -e ".[dev,video,atari,gymnasium,box2d,mujoco]"
	touch $@ $(VENV)/.installed

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

## demo: the quickstart pipeline on embedded defaults (project root: ./demo-project)
demo: install
	WORLDFORGE_ROOT=$(CURDIR)/demo-project $(VENV)/bin/worldforge pipeline run $(DEMO_CONFIG)

## browser: Debian's chromium and chromium-driver for the play page's browser tests (apt-get, as
## root); where they cannot be installed those tests are skipped, saying why.
browser:
	@if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing chromium and chromium-driver (apt-get) for the browser tests"; \
		apt-get install -y -qq chromium chromium-driver >/dev/null \
		|| (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
		|| echo "could not install chromium: the browser tests will be skipped"; \
	else echo "no chromium/chromedriver and no root apt-get: the browser tests will be skipped"; fi

## gl: Debian's EGL and OSMesa libraries, with which MuJoCo renders headless (MUJOCO_GL=egl, the
## gymnasium source's default, or osmesa); where they cannot be installed the MuJoCo tests are skipped.
gl:
	@if ldconfig -p 2>/dev/null | grep -q libEGL.so.1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing libegl1, libgl1-mesa-dri and libosmesa6 (apt-get) for headless MuJoCo"; \
		apt-get install -y -qq libegl1 libgl1-mesa-dri libosmesa6 >/dev/null \
		|| (apt-get update -qq && apt-get install -y -qq libegl1 libgl1-mesa-dri libosmesa6 >/dev/null) \
		|| echo "could not install EGL/OSMesa: the MuJoCo tests will be skipped"; \
	else echo "no libEGL and no root apt-get: the MuJoCo tests will be skipped"; fi

## test: the whole test suite, `slow` ones included (about 12 minutes on 2 cores after install)
test: install-dev browser gl
	$(PY) -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

## test-fast: without the tests marked `slow` (real MLflow server, Prefect server + worker, ...)
test-fast: install-dev browser gl
	$(PY) -m pytest -m "not slow" $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-all: test

lint: install-dev
	$(VENV)/bin/ruff check worldforge tests benchmarks
	$(VENV)/bin/lint-imports   # the one-way layers of docs/design.md (contracts in pyproject.toml)

clean-demo:
	rm -rf demo-project
