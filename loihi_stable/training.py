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

from . import guards
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
        guards.choice("perturbation", self.perturb, PERTURBATIONS)
        guards.choice("--mppd-grad", self.mppd_grad, MPPD_GRADIENTS)
        guards.choice("--stability-loss", self.stability_loss, STABILITY_LOSSES)
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


class MixupObjective:
    """Natural, Gaussian or adversarial training: a perturbed copy of each batch, then ``_mixup_loss``."""

    def __init__(self, model, config: TrainConfig):
        self.model, self.config = model, config
        self.perturbation = {"rfgsm": lambda: RFGSM(model, eps=config.train_eps, seed=None),
                             "gaussian": lambda: GaussianNoise(model, eps=config.train_eps, clamp=False, seed=None),
                             }.get(config.perturb, lambda: None)()

    def at(self, progress: float) -> None:
        """Fraction of training done (the mixup objective does not change with it)."""

    def perturb(self, x, y):
        return self.perturbation(x, y) if self.perturbation is not None else None

    def loss(self, x, y, x_pert):
        return _mixup_loss(self.model, x, y, x_pert, self.config)


class IBPObjective:
    """Certified training: no perturbed batch, the S-IBP worst case at the ramped eps instead."""

    def __init__(self, model, config: TrainConfig):
        self.model, self.schedule = model, IBPSchedule(config.train_eps, config.chi)

    def at(self, progress: float) -> None:
        self.schedule.progress = progress

    def perturb(self, x, y):
        return None

    def loss(self, x, y, x_pert):
        return ibp_loss(self.model, x, y, self.schedule)


def make_objective(model, config: TrainConfig):
    return (IBPObjective if config.perturb == "ibp" else MixupObjective)(model, config)


class TrainingLoss(torch.nn.Module):
    """The whole loss as one module, so that DistributedDataParallel sees one forward per step."""

    def __init__(self, model, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x, y, x_pert=None):
        return self.objective.loss(x, y, x_pert)


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


class Trainer:
    """One training run's state: optimizer, cosine schedule, AMP scaler, objective, history, files."""

    def __init__(self, model, train_set: Split, config: TrainConfig, out=None, extra: dict | None = None):
        self.rank, self.world = _distributed()
        self.model, self.config, self.extra = model, config, extra or {}
        self.device = next(model.parameters()).device
        torch.manual_seed(config.seed)
        self.train_set = train_set.head(config.limit)
        if config.rat_beta is None:
            from .regularizers import default_rat_beta
            config.rat_beta = default_rat_beta(config.dataset, model.config.arch)
        schedules = ("leak_scale", "input_scale")
        leak = [p for n, p in model.named_parameters() if n.endswith(schedules)]
        weights = [p for n, p in model.named_parameters() if not n.endswith(schedules)]
        self.optimizer = torch.optim.SGD([{"params": weights, "weight_decay": config.weight_decay},
                                          {"params": leak, "weight_decay": 0.0}],
                                         lr=config.lr, momentum=config.momentum)
        self.steps_per_epoch = math.ceil(len(self.train_set) / config.batch_size)
        self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, config.epochs * self.steps_per_epoch)
        self.use_amp = config.amp and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)
        self.objective = make_objective(model, config)
        self.loss = TrainingLoss(model, self.objective)
        if self.world > 1:
            self.loss = torch.nn.parallel.DistributedDataParallel(self.loss, find_unused_parameters=False)
        self.files = RunFiles(out) if out is not None else None
        self.history: list[dict] = []
        self.best, self.best_epoch, self.start_epoch = -1.0, 0, 0
        self.generator = torch.Generator().manual_seed(config.seed)

    def resume(self) -> None:
        """Continue from ``<out>.last.pt`` where there is one: weights, optimizer, schedule, RNG, history."""
        from .io import load_checkpoint

        if self.files is None or not self.files.last.exists():
            return
        state = load_checkpoint(self.files.last)
        try:
            self.model.load_state_dict(state["state_dict"])
        except (RuntimeError, KeyError):
            raise UserError(f"--resume: '{self.files.last}' holds another network (other --arch, --hidden, --neuron or "
                            "--timesteps): resume with the options it was trained with, or start without --resume") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.history, self.best, self.start_epoch = state["history"], state["best_accuracy"], state["epoch"]
        self.best_epoch = (state.get("metrics") or {}).get("best_epoch", 0)
        restore_rng_state(state.get("rng"))

    def progress_bar(self, progress: bool):
        return progress_bar(total=(self.config.epochs - self.start_epoch) * self.steps_per_epoch, desc="train",
                            unit="batch", disable=not progress or self.rank != 0)

    def batches(self, epoch: int):
        """This process's share of each batch of ``epoch``, in an order that a resume repeats."""
        self.generator.manual_seed(self.config.seed * 100003 + epoch)
        order = torch.randperm(len(self.train_set), generator=self.generator)
        for i in range(0, len(self.train_set), self.config.batch_size):
            idx = order[i:i + self.config.batch_size][self.rank::self.world]
            x, y = self.train_set.x[idx].to(self.device), self.train_set.y[idx].to(self.device)
            if self.config.augment:
                from .data import augment
                x = augment(x, self.generator)
            yield (epoch + i / len(self.train_set)) / self.config.epochs, x, y

    def step(self, x, y) -> tuple[torch.Tensor, dict]:
        """One optimizer step, then the RAT retraction and the neurons' clamps."""
        from .regularizers import rat_step

        x_pert = self.objective.perturb(x, y)
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
            loss, parts = self.loss(x, y, x_pert)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if self.config.rat:
            rat_step(self.model, self.config.rat_beta)
        for neuron in self.model.spiking_neurons:
            neuron.clamp()
        return loss, parts

    def train_epoch(self, epoch: int, bar) -> dict:
        started = time.perf_counter()
        self.model.train()
        sums: dict[str, float] = {}
        for progress, x, y in self.batches(epoch):
            self.objective.at(progress)
            loss, parts = self.step(x, y)
            for key, value in {"loss": loss.item(), **parts}.items():
                sums[key] = sums.get(key, 0.0) + value
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{loss.item():.3f}", refresh=False)
        return {"epoch": epoch + 1, **{k: v / self.steps_per_epoch for k, v in sums.items()},
                "lr": self.scheduler.get_last_lr()[0], "seconds": round(time.perf_counter() - started, 3),
                "world_size": self.world}

    def validate(self, row: dict, val_set: Split) -> None:
        """Clean and PGD-10 accuracy on the held-out samples (rank 0 only)."""
        if self.rank == 0:
            row["val_clean"] = accuracy(self.model, val_set)
            row["val_pgd"] = robust_accuracy(self.model, val_set, self.config.val_eps) if self.config.val_eps > 0 else None

    def end_epoch(self, row: dict) -> None:
        """Record the epoch; write the best and last checkpoints with the metrics (rank 0)."""
        row.update(learned_schedules(self.model))
        self.history.append(row)
        if self.files is not None and self.rank == 0:
            is_best = row.get("val_clean") is None or row["val_clean"] > self.best
            if is_best:
                self.best = row.get("val_clean", self.best)
                self.best_epoch = row["epoch"]
            config, model = self.config, self.model
            payload = {**self.extra, "model_config": model.config.to_dict(), "train_config": config.to_dict(),
                       "state_dict": model.state_dict(), "history": self.history,
                       "metrics": {"best_val_clean": self.best, "best_epoch": self.best_epoch}}
            resume_state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                            "scaler": self.scaler.state_dict(), "epoch": row["epoch"], "best_accuracy": self.best,
                            "rng": rng_state()}
            self.files.write_epoch(payload, resume_state, is_best,
                                   f"{model.config.neuron.upper()} {model.config.arch}, {config.perturb}, "
                                   f"rho={config.rho}{', RAT' if config.rat else ''}")
        if self.world > 1:
            torch.distributed.barrier()


def train(model, train_set: Split, config: TrainConfig, progress: bool = True, val_set: Split | None = None,
          out: str | os.PathLike | None = None, resume: bool = False, extra: dict | None = None) -> list[dict]:
    """SGD with momentum and cosine decay; returns per-epoch metrics.

    With ``out`` the best checkpoint (by clean accuracy on ``val_set``, samples held out of the
    training data; without one, the last epoch) goes to ``out``, the last one (with optimizer,
    scheduler and RNG state, for ``resume``) beside it, with the metrics.
    Under torchrun each process trains on its share of every batch (DistributedDataParallel).
    """
    trainer = Trainer(model, train_set, config, out, extra)
    if resume:
        trainer.resume()
    if val_set is not None and len(val_set) == 0:
        val_set = None  # no hold-out: the best checkpoint is the last one
    with trainer.progress_bar(progress) as bar:  # closed (its line ended) also when Ctrl-C or an error ends the loop
        for epoch in range(trainer.start_epoch, config.epochs):
            row = trainer.train_epoch(epoch, bar)
            if val_set is not None:
                trainer.validate(row, val_set)
            trainer.end_epoch(row)
    return trainer.history
