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

PERTURBATIONS = ("none", "gaussian", "rfgsm", "ibp")


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
    train_eps: float | None = None  # default: 4/255 for rfgsm, 8/255 for gaussian and ibp
    seed: int = 0

    def __post_init__(self):
        if self.perturb not in PERTURBATIONS:
            raise UserError(f"unknown perturbation '{self.perturb}': choose one of {', '.join(PERTURBATIONS)}")
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.rho < 0 or not 0.0 <= self.chi <= 1.0:
            raise UserError("--rho must be >= 0 and --chi in [0, 1]")
        if self.train_eps is None:
            self.train_eps = {"rfgsm": 4 / 255, "gaussian": 8 / 255, "ibp": 8 / 255}.get(self.perturb, 0.0)

    def to_dict(self) -> dict:
        return asdict(self)


class IBPSchedule:
    """Certified (IBP) training's ramp: eps grows from 0 and the clean weight kappa from 1 to chi.

    Warm-up (clean only) for the first ``warmup`` of training, a linear ramp over the
    next ``ramp``, then the full eps (Gowal et al., 2018), as S-IBP training does for SNNs.
    """

    def __init__(self, eps: float, chi: float, warmup: float = 0.1, ramp: float = 0.4):
        self.target_eps, self.chi, self.warmup, self.ramp = eps, chi, warmup, ramp
        self.progress = 0.0  # fraction of training done, set by the training loop

    @property
    def fraction(self) -> float:
        return min(1.0, max(0.0, (self.progress - self.warmup) / self.ramp))

    @property
    def eps(self) -> float:
        return self.target_eps * self.fraction

    @property
    def kappa(self) -> float:
        return 1.0 - (1.0 - self.chi) * self.fraction


def ibp_loss(model: SpikingMLP, x, y, schedule: IBPSchedule) -> tuple[torch.Tensor, dict]:
    """kappa*CE(clean) + (1-kappa)*CE(worst-case logits from S-IBP at the scheduled eps)."""
    from .certify.sibp import ibp_bounds, worst_case_logits

    ce_clean = torch.nn.functional.cross_entropy(model(x), y)
    bounds = ibp_bounds(model, x, schedule.eps)
    ce_robust = torch.nn.functional.cross_entropy(worst_case_logits(bounds, y), y)
    loss = schedule.kappa * ce_clean + (1 - schedule.kappa) * ce_robust
    return loss, {"ce_clean": ce_clean.item(), "ce_ibp": ce_robust.item(), "eps_255": schedule.eps * 255}


def make_perturbation(model, config: TrainConfig):
    if config.perturb == "ibp":
        return IBPSchedule(config.train_eps, config.chi)
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
    if isinstance(perturbation, IBPSchedule):
        return ibp_loss(model, x, y, perturbation)
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
            if isinstance(perturbation, IBPSchedule):
                perturbation.progress = (epoch + i / len(train_set)) / config.epochs
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
