# Everything a fresh machine needs: `make demo` and `make test` create the virtual
# environment and install the pinned dependency set (constraints.txt) on first use.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
RUN    ?= runs/demo
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install demo test test-fast test-runtimes web-deps bench-demo clean

install: $(STAMP)

# torch first, pinned: a looser requirement would pull the CUDA build and its packages.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet -c constraints.txt torch==2.13.0
	$(PIP) install --quiet -c constraints.txt -e ".[dev,ct2]"
	touch $@

# the npm packages the web export copies into its bundle (no browser needed to export)
demo: install
	$(PY) -m ekd_edge.bench.browser ensure --npm-only
	$(VENV)/bin/ekd-edge demo --run-dir $(RUN)

# The Android app's onnxruntime + onnxruntime-extensions (an x86 virtual environment and an arm64
# Debian root run by qemu; apt-get installs qemu-user-static and debootstrap where missing), for
# the tests that run the app's model with them. Built once, cached under ~/.cache/ekd-edge; with
# CI set a failure stops here, elsewhere those tests are skipped.
test-runtimes: install
	$(PY) -m ekd_edge.bench.arm ensure

# The web bundles' JavaScript and the browser tests: the npm packages pinned in package-lock.json
# (`npm ci`) and Debian's chromium (apt-get), each installed where missing; as for the app
# runtimes, with CI set a failure stops here, elsewhere the tests that need them are skipped.
web-deps: install
	$(PY) -m ekd_edge.bench.browser ensure

# -rfEsxXp: the log names every test and its outcome (the aarch64 and app-runtime checks among them)
test: install test-runtimes web-deps
	$(PY) -m pytest -q -rfEsxXp

test-fast: install
	$(PY) -m pytest -q -m "not slow"

clean:
	rm -rf $(VENV) runs .pytest_cache node_modules
