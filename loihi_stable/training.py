"""MS-MPPD training (Ding et al., ICML 2024): mixup cross-entropy + rho * MS-MPPD.

The paper's protocol: SGD (momentum 0.9, lr 0.1, cosine), weight decay 5e-4 (0 with RAT),
batch 64, the SNN-RAT step after each optimizer step, mixed precision on a GPU; per-epoch
metrics, the best-clean-accuracy and the last checkpoint written atomically, resume after an
interruption, and DistributedDataParallel under torchrun (any number of processes/nodes).
"""
from __future__ import annotations

import csv
import io
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from .progress import progress_bar

from .attacks import RFGSM, GaussianNoise
from .data import Split
from .errors import UserError
from .models import SpikingMLP
from .metrics.perturbation import ms_mppd
from .metrics.spike_distance import std as spike_train_distance
from .metrics.spike_distance import tasad

PERTURBATIONS = ("none", "gaussian", "rfgsm", "ibp")
MPPD_GRADIENTS = ("perturbed", "both")
STABILITY_LOSSES = ("ms-mppd", "tasad", "std")  # the paper's term, and the two spike distances of its Table 2


@dataclass
class TrainConfig:
    dataset: str = "digits"
    perturb: str = "rfgsm"
    rho: float = 1.0            # weight of MS-MPPD
    chi: float = 0.5            # mixup weight of the clean cross-entropy
    mppd_grad: str = "both"     # MS-MPPD differentiated as written, or through the perturbed branch only (authors')
    stability_loss: str = "ms-mppd"  # the term rho weighs: MS-MPPD, or TASAD / STD of the last spiking layer's spikes
    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    train_eps: float | None = None  # default: 4/255 for rfgsm, 8/255 for gaussian and ibp
    seed: int = 0
    rat: bool = False               # SNN-RAT orthogonal retraction after each step
    rat_beta: float | None = None   # None: the paper's value for the data set and architecture (default_rat_beta)
    augment: bool = False           # random crop 4, flip, Cutout 16 (CIFAR)
    amp: bool = True                # fp16 autocast + grad scaling, on CUDA only
    val_size: int | None = None     # validation samples held out of the training data (None: 10%, at most 5,000)
    val_eps: float = 8 / 255        # PGD-10 budget of the per-epoch robust accuracy
    limit: int | None = None        # train on the first N samples (smoke runs)
    data_root: str | None = None    # folder of fashion-mnist / CIFAR files

    def __post_init__(self):
        if self.perturb not in PERTURBATIONS:
            raise UserError(f"unknown perturbation '{self.perturb}': choose one of {', '.join(PERTURBATIONS)}")
        if self.mppd_grad not in MPPD_GRADIENTS:
            raise UserError(f"unknown --mppd-grad '{self.mppd_grad}': choose one of {', '.join(MPPD_GRADIENTS)}")
        if self.stability_loss not in STABILITY_LOSSES:
            raise UserError(f"unknown --stability-loss '{self.stability_loss}': choose one of {', '.join(STABILITY_LOSSES)}")
        if self.epochs < 1:
            raise UserError(f"--epochs must be at least 1, got {self.epochs}")
        if self.rho < 0 or not 0.0 <= self.chi <= 1.0:
            raise UserError("--rho must be >= 0 and --chi in [0, 1]")
        if self.rat:
            self.weight_decay = 0.0  # as the authors: the retraction replaces weight decay
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
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


class TrainingLoss(torch.nn.Module):
    """The whole loss as one module, so that DistributedDataParallel sees one forward per step."""

    def __init__(self, model, perturbation, config: TrainConfig):
        super().__init__()
        self.model, self.perturbation, self.config = model, perturbation, config

    def forward(self, x, y, x_pert=None):
        if isinstance(self.perturbation, IBPSchedule):
            loss, parts = ibp_loss(self.model, x, y, self.perturbation)
        else:
            loss, parts = _mixup_loss(self.model, x, y, x_pert, self.config)
        return loss, parts


def _forward_with_spikes(model, x, want_spikes: bool):
    """(per-step logits, last spiking layer's input current, its spikes or None)."""
    if not want_spikes:
        return (*model.forward_time(x), None)
    last = model.spiking_neurons[-1]
    last.record = True
    try:
        logits, current = model.forward_time(x)
        spikes = last.recording["spike"]
    finally:
        last.record, last.recording = False, {}
    return logits, current, spikes


def _mixup_loss(model, x, y, x_pert, config: TrainConfig) -> tuple[torch.Tensor, dict]:
    """chi*CE(clean) + (1-chi)*CE(perturbed) + rho*(MS-MPPD, TASAD or STD) at the last spiking layer.

    Both passes run in train mode. ``mppd_grad="both"`` differentiates the term as written;
    ``"perturbed"`` detaches the clean branch as the authors' code does, and then the weights
    chase a target that moves with them: in our ablation MS-MPPD rose during training and
    clean accuracy fell 7-9 points, where "both" lowered MS-MPPD and raised PGD accuracy.
    TASAD and STD compare spikes, so their gradient is the surrogate's.
    """
    spikes_wanted = config.stability_loss != "ms-mppd"
    logits, current, spikes = _forward_with_spikes(model, x, spikes_wanted and x_pert is not None)
    ce_clean = torch.nn.functional.cross_entropy(logits.mean(-1).float(), y)
    if x_pert is None:
        return ce_clean, {"ce_clean": ce_clean.item()}
    logits_p, current_p, spikes_p = _forward_with_spikes(model, x_pert, spikes_wanted)
    ce_pert = torch.nn.functional.cross_entropy(logits_p.mean(-1).float(), y)
    detach = config.mppd_grad != "both"
    if config.stability_loss == "ms-mppd":
        term = ms_mppd((current.detach() if detach else current).float(), current_p.float(), model.config.leak)
    else:
        distance = tasad if config.stability_loss == "tasad" else spike_train_distance
        term = distance((spikes.detach() if detach else spikes).float(), spikes_p.float())
    loss = config.chi * ce_clean + (1 - config.chi) * ce_pert + config.rho * term
    return loss, {"ce_clean": ce_clean.item(), "ce_pert": ce_pert.item(),
                  config.stability_loss.replace("-", "_"): term.item()}


@torch.no_grad()
def accuracy(model, split: Split, batch_size: int = 256) -> float:
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = sum((model(split.x[i:i + batch_size].to(device)).argmax(1).cpu() == split.y[i:i + batch_size]).sum().item()
                  for i in range(0, len(split), batch_size))
    model.train(was_training)
    return correct / max(len(split), 1)


def robust_accuracy(model, split: Split, eps: float, steps: int = 10, batch_size: int = 256) -> float:
    """PGD-k accuracy (the per-epoch robustness signal)."""
    from .attacks import PGD

    device = next(model.parameters()).device
    attack = PGD(model, eps=eps, steps=steps, seed=0)
    correct = 0
    for i in range(0, len(split), batch_size):
        x, y = split.x[i:i + batch_size].to(device), split.y[i:i + batch_size].to(device)
        with torch.no_grad():
            correct += (model(attack(x, y)).argmax(1) == y).sum().item()
    return correct / max(len(split), 1)


def learned_schedules(model) -> dict[str, list[list[float]]]:
    """Per spiking layer, what a DLIF learns per step: {"leak_scale": a[t]} (all ones for LIF) or,
    in the input form, {"input_scale": p[t]}."""
    rows: dict[str, list[list[float]]] = {}
    for neuron in model.spiking_neurons:
        symbol, values = neuron.learned_schedule()
        key = "input_scale" if symbol == "p" else "leak_scale"
        rows.setdefault(key, []).append([round(float(a), 5) for a in values.detach().cpu()])
    return rows


def describe_schedules(row: dict, leak: float) -> str:
    """What the DLIF layers learned, for a person: a[t] (or p[t]) per layer, and the steps whose leak
    sits at the clamp floor 1/4096 (where the neuron forgets its past completely)."""
    from .fixed_point import DECAY_UNITY

    symbol, key = ("p", "input_scale") if "input_scale" in row else ("a", "leak_scale")
    lines = [f"learned DLIF {symbol}[t] per layer ({'input' if symbol == 'p' else 'leak'} form):"]
    for layer, values in enumerate(row.get(key, []), 1):
        note = ""
        if symbol == "a":
            floor = sum(1 for a in values[1:] if leak * a <= 1.5 / DECAY_UNITY)
            note = f"  ({floor} of {len(values) - 1} steps at the floor)" if floor else ""
        lines.append(f"  layer {layer}: " + " ".join(f"{v:.3f}" if abs(v) >= 0.001 or v == 0 else f"{v:.1e}"
                                                     for v in values) + note)
    return "\n".join(lines)


def rng_state() -> dict:
    """Every global RNG a training step draws from (RFGSM's start, Gaussian noise, RAT's rows), so that
    ``--resume`` continues the same random stream; tensors and ints only (``weights_only`` loads them)."""
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.stack(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: dict | None) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(list(state["cuda"])[: torch.cuda.device_count()])


def _distributed() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class RunFiles:
    """Where a run keeps its state: <out>.last.pt, <out> (best), <out>.metrics.{json,csv,png}."""

    def __init__(self, out: str | os.PathLike):
        self.best = Path(out)
        stem = self.best.with_suffix("")
        self.last = Path(f"{stem}.last.pt")
        self.json, self.csv, self.png = (Path(f"{stem}.metrics.{ext}") for ext in ("json", "csv", "png"))

    def interrupted_message(self, resumed: bool) -> str:
        """What an interrupted run leaves, said as it is (an epoch's files are written together)."""
        from . import interrupts

        if str(self.last) in interrupts.written() or (resumed and self.last.exists()):
            return f"interrupted; the epochs finished so far are saved in {self.last}: add --resume to continue"
        return interrupts.message().replace("interrupted;", "interrupted before the first epoch ended;")

    def write_epoch(self, payload: dict, resume_state: dict, is_best: bool, title: str) -> None:
        """The best and last checkpoints and the metrics of one epoch, all or none: a Ctrl-C waits for them."""
        from . import interrupts
        from .io import save_checkpoint

        with interrupts.deferred():
            if is_best:
                save_checkpoint(self.best, payload)
            save_checkpoint(self.last, {**payload, **resume_state})
            self.write_metrics(payload["history"], title)

    def write_metrics(self, history: list[dict], title: str) -> None:
        from .io import atomic_path, write_json
        from .plots import plot_training

        write_json(self.json, {"epochs": history})
        flat = [{k: (" ".join(map(str, v)) if isinstance(v, list) else v) for k, v in row.items()} for row in history]
        keys = list(dict.fromkeys(k for row in flat for k in row))
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=keys)
        writer.writeheader()
        writer.writerows(flat)
        with atomic_path(self.csv) as tmp:
            tmp.write_text(buffer.getvalue())
        plot_training(history, self.png, title)


def train(model, train_set: Split, config: TrainConfig, progress: bool = True, val_set: Split | None = None,
          out: str | os.PathLike | None = None, resume: bool = False, extra: dict | None = None) -> list[dict]:
    """SGD with momentum and cosine decay; returns per-epoch metrics.

    With ``out`` the best checkpoint (by clean accuracy on ``val_set``, samples held out of the
    training data; without one, the last epoch) goes to ``out``, the last one (with optimizer,
    scheduler and RNG state, for ``resume``) beside it, with the metrics.
    Under torchrun each process trains on its share of every batch (DistributedDataParallel).
    """
    from .io import load_checkpoint
    from .regularizers import rat_step

    rank, world = _distributed()
    device = next(model.parameters()).device
    torch.manual_seed(config.seed)
    train_set = train_set.head(config.limit)
    if config.rat_beta is None:
        from .regularizers import default_rat_beta
        config.rat_beta = default_rat_beta(config.dataset, model.config.arch)
    schedules = ("leak_scale", "input_scale")
    leak = [p for n, p in model.named_parameters() if n.endswith(schedules)]
    weights = [p for n, p in model.named_parameters() if not n.endswith(schedules)]
    optimizer = torch.optim.SGD([{"params": weights, "weight_decay": config.weight_decay},
                                 {"params": leak, "weight_decay": 0.0}],
                                lr=config.lr, momentum=config.momentum)
    steps_per_epoch = math.ceil(len(train_set) / config.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, config.epochs * steps_per_epoch)
    use_amp = config.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    perturbation = make_perturbation(model, config)
    loss_module = TrainingLoss(model, perturbation, config)
    if world > 1:
        loss_module = torch.nn.parallel.DistributedDataParallel(loss_module, find_unused_parameters=False)
    files = RunFiles(out) if out is not None else None
    history: list[dict] = []
    best, best_epoch, start_epoch = -1.0, 0, 0
    if resume and files is not None and files.last.exists():
        state = load_checkpoint(files.last)
        try:
            model.load_state_dict(state["state_dict"])
        except (RuntimeError, KeyError):
            raise UserError(f"--resume: '{files.last}' holds another network (other --arch, --hidden, --neuron or "
                            "--timesteps): resume with the options it was trained with, or start without --resume") from None
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        history, best, start_epoch = state["history"], state["best_accuracy"], state["epoch"]
        best_epoch = (state.get("metrics") or {}).get("best_epoch", 0)
        restore_rng_state(state.get("rng"))
    if val_set is not None and len(val_set) == 0:
        val_set = None  # no hold-out: the best checkpoint is the last one
    generator = torch.Generator().manual_seed(config.seed)
    bar = progress_bar(total=(config.epochs - start_epoch) * steps_per_epoch, desc="train", unit="batch",
               disable=not progress or rank != 0)
    with bar:  # closed (its line ended) also when Ctrl-C or an error ends the loop
        for epoch in range(start_epoch, config.epochs):
            started = time.perf_counter()
            model.train()
            generator.manual_seed(config.seed * 100003 + epoch)  # the same order after a resume
            order = torch.randperm(len(train_set), generator=generator)
            sums: dict[str, float] = {}
            for i in range(0, len(train_set), config.batch_size):
                idx = order[i:i + config.batch_size][rank::world]
                x, y = train_set.x[idx].to(device), train_set.y[idx].to(device)
                if config.augment:
                    from .data import augment
                    x = augment(x, generator)
                if isinstance(perturbation, IBPSchedule):
                    perturbation.progress = (epoch + i / len(train_set)) / config.epochs
                x_pert = perturbation(x, y) if perturbation is not None and not isinstance(perturbation, IBPSchedule) else None
                with torch.autocast(device.type, dtype=torch.float16, enabled=use_amp):
                    loss, parts = loss_module(x, y, x_pert)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if config.rat:
                    rat_step(model, config.rat_beta)
                for neuron in model.spiking_neurons:
                    neuron.clamp()
                for key, value in {"loss": loss.item(), **parts}.items():
                    sums[key] = sums.get(key, 0.0) + value
                bar.update(1)
                bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
            row = {"epoch": epoch + 1, **{k: v / steps_per_epoch for k, v in sums.items()},
                   "lr": scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 3),
                   "world_size": world}
            if val_set is not None and rank == 0:
                row["val_clean"] = accuracy(model, val_set)
                row["val_pgd"] = robust_accuracy(model, val_set, config.val_eps) if config.val_eps > 0 else None
            row.update(learned_schedules(model))
            history.append(row)
            if files is not None and rank == 0:
                is_best = row.get("val_clean") is None or row["val_clean"] > best
                if is_best:
                    best = row.get("val_clean", best)
                    best_epoch = epoch + 1
                payload = {**(extra or {}), "model_config": model.config.to_dict(), "train_config": config.to_dict(),
                           "state_dict": model.state_dict(), "history": history,
                           "metrics": {"best_val_clean": best, "best_epoch": best_epoch}}
                files.write_epoch(payload, {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                                            "scaler": scaler.state_dict(), "epoch": epoch + 1, "best_accuracy": best,
                                            "rng": rng_state()}, is_best,
                                  f"{model.config.neuron.upper()} {model.config.arch}, {config.perturb}, "
                                  f"rho={config.rho}{', RAT' if config.rat else ''}")
            if world > 1:
                torch.distributed.barrier()
    return history
