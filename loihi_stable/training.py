"""MS-MPPD training (Ding et al., ICML 2024): mixup cross-entropy + rho * MS-MPPD."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from .attacks import RFGSM, GaussianNoise
from .data import Split
from .errors import UserError
from .models import SpikingMLP
from .metrics.perturbation import ms_mppd

PERTURBATIONS = ("none", "gaussian", "rfgsm")


@dataclass
class TrainConfig:
    dataset: str = "digits"
    perturb: str = "rfgsm"
    rho: float = 1.0            # weight of MS-MPPD
    chi: float = 0.5            # mixup weight of the clean cross-entropy
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    train_eps: float | None = None  # default: 4/255 for rfgsm, 8/255 for gaussian
    seed: int = 0

    def __post_init__(self):
        if self.perturb not in PERTURBATIONS:
            raise UserError(f"unknown perturbation '{self.perturb}': choose one of {', '.join(PERTURBATIONS)}")
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.rho < 0 or not 0.0 <= self.chi <= 1.0:
            raise UserError("--rho must be >= 0 and --chi in [0, 1]")
        if self.train_eps is None:
            self.train_eps = {"rfgsm": 4 / 255, "gaussian": 8 / 255}.get(self.perturb, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


def make_perturbation(model, config: TrainConfig):
    if config.perturb == "rfgsm":
        return RFGSM(model, eps=config.train_eps, seed=None)
    if config.perturb == "gaussian":
        return GaussianNoise(model, eps=config.train_eps, clamp=False, seed=None)
    return None


def training_loss(model: SpikingMLP, x, y, perturbation, config: TrainConfig) -> tuple[torch.Tensor, dict]:
    """chi*CE(clean) + (1-chi)*CE(perturbed) + rho*MS-MPPD at the last spiking layer.

    Both passes run in train mode; the clean current is detached so the MS-MPPD
    gradient flows through the perturbed branch only (as the authors' code).
    """
    logits, current = model.forward_time(x)
    ce_clean = torch.nn.functional.cross_entropy(logits.mean(-1), y)
    if perturbation is None:
        return ce_clean, {"ce_clean": ce_clean.item()}
    x_pert = perturbation(x, y)
    logits_p, current_p = model.forward_time(x_pert)
    ce_pert = torch.nn.functional.cross_entropy(logits_p.mean(-1), y)
    mse = ms_mppd(current.detach(), current_p, model.config.leak)
    loss = config.chi * ce_clean + (1 - config.chi) * ce_pert + config.rho * mse
    return loss, {"ce_clean": ce_clean.item(), "ce_pert": ce_pert.item(), "ms_mppd": mse.item()}


@torch.no_grad()
def accuracy(model, split: Split, batch_size: int = 256) -> float:
    was_training = model.training
    model.eval()
    correct = sum((model(split.x[i:i + batch_size]).argmax(1) == split.y[i:i + batch_size]).sum().item()
                  for i in range(0, len(split), batch_size))
    model.train(was_training)
    return correct / max(len(split), 1)


def train(model: SpikingMLP, train_set: Split, config: TrainConfig, progress: bool = True) -> list[dict]:
    """SGD with momentum and cosine decay; returns per-epoch metrics."""
    torch.manual_seed(config.seed)
    leak_scales = [p for n, p in model.named_parameters() if n.endswith("leak_scale")]
    weights = [p for n, p in model.named_parameters() if not n.endswith("leak_scale")]
    optimizer = torch.optim.SGD([{"params": weights, "weight_decay": config.weight_decay},
                                 {"params": leak_scales, "weight_decay": 0.0}],
                                lr=config.lr, momentum=config.momentum)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * steps_per_epoch)
    perturbation = make_perturbation(model, config)
    history = []
    bar = tqdm(total=config.epochs * steps_per_epoch, desc="train", unit="batch", disable=not progress)
    for epoch in range(config.epochs):
        model.train()
        order = torch.randperm(len(train_set))
        sums: dict[str, float] = {}
        for i in range(0, len(train_set), config.batch_size):
            idx = order[i:i + config.batch_size]
            loss, parts = training_loss(model, train_set.x[idx], train_set.y[idx], perturbation, config)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            for neuron in model.spiking_neurons:
                neuron.clamp()
            for key, value in {"loss": loss.item(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}")
        history.append({"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()}})
    bar.close()
    return history
