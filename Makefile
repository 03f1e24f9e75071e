# The two set-up commands on a fresh machine:
#   make demo   the two-party demo as local processes on loopback (dealer, two parties, coordinator)
#   make test   the test suite
# Both create and fill the virtual environment by themselves.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist
FOOLBOX_WHEEL_DIR := $(VENV)/foolbox-wheel

.PHONY: venv demo test fashion-mnist chromium proto clean spu-env

venv: $(STAMP)

$(STAMP): pyproject.toml requirements.txt requirements-timm.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install torch==2.13.0
	$(PIP) install --no-deps crypten==0.4.1
	$(PIP) install -r requirements.txt
	@# timm (mpcvit import, its tests) with --no-deps, so that neither it nor torchvision can replace torch: requirements-timm.txt
	$(PIP) install --no-deps -r requirements-timm.txt
	$(PIP) install --no-deps --no-build-isolation -e .
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

test: $(STAMP) chromium
	$(PY) -m pytest -q

proto: $(STAMP)
	$(PY) parties/proto/generate.py

# SecretFlow SPU in its own environment, for benchmarks/spu (never the project's venv, never CI's required path).
SPU_VENV ?= .venv-spu
spu-env: $(SPU_VENV)/.installed

$(SPU_VENV)/.installed:
	test -x $(SPU_VENV)/bin/python || $(PYTHON) -m venv $(SPU_VENV)
	$(SPU_VENV)/bin/python -m pip --disable-pip-version-check -q install spu==0.9.5 'jax[cpu]<=0.4.34' 'numpy<2' safetensors
	touch $@

clean:
	rm -rf $(VENV) $(SPU_VENV) runs
