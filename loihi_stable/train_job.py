"""A training run as ``loihi-stable train`` asks for it: every setting checked before any work, then
data, network, training and the summary a person reads. The command only parses.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import guards, interrupts, sharding
from .errors import UserError
from .training import RunFiles, TrainConfig


@dataclass
class NetworkSettings:
    """The network to build; the data set fills in input size, classes and normalisation."""
    arch: str = "mlp"
    neuron: str = "dlif"
    dlif_form: str = "leak"
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    timesteps: int = 8
    leak: float = 0.99

    def check(self, perturb: str) -> None:
        from .convnets import ARCHS
        from .neurons import NEURONS

        guards.choice("neuron", self.neuron, sorted(NEURONS))
        guards.choice("--arch", self.arch, ARCHS)
        if not self.hidden or min(self.hidden) < 1:
            raise UserError("--hidden needs at least one positive layer size, e.g. 128,64")
        for size in self.hidden:
            guards.integer("--hidden layer size", size, 1, 1 << 20)
        guards.integer("--timesteps", self.timesteps, 1, 1024)
        guards.number("--leak", self.leak, 0.0, 1.0, low_open=True, fix="the leak lambda of LIF/DLIF, e.g. 0.99")
        if self.dlif_form not in ("leak", "input"):
            raise UserError(f"unknown --dlif-form '{self.dlif_form}': choose leak or input")
        if self.dlif_form == "input" and self.neuron != "dlif":
            raise UserError("--dlif-form input is a DLIF form: add --neuron dlif or drop --dlif-form")
        if self.dlif_form == "input" and perturb == "ibp":
            raise UserError("--perturb ibp bounds the leak-form neuron only: use --dlif-form leak")
        if perturb == "ibp" and self.arch == "wrn16-4":
            raise UserError("--perturb ibp bounds MLPs and the VGG family; wrn16-4's analog residual stream is not "
                            "supported: choose --arch mlp, convnet-s, convnet, vgg5 or vgg11")

    def model_config(self, info, in_features: int):
        from .models import ModelConfig

        conv = self.arch != "mlp"
        config = ModelConfig(in_features=in_features, hidden=self.hidden, classes=info.classes, neuron=self.neuron,
                             dlif_form=self.dlif_form, timesteps=self.timesteps, leak=self.leak, arch=self.arch,
                             input_shape=list(info.input_shape) if conv else None,
                             mean=list(info.mean) if conv else None, std=list(info.std) if conv else None)
        try:
            config.validate()
        except ValueError as err:
            raise UserError(f"cannot build this network: {err}") from None
        return config


def parse_hidden(text: str) -> list[int]:
    """'128,64' -> [128, 64]."""
    try:
        return [int(h) for h in text.split(",") if h.strip()]
    except ValueError:
        raise UserError(f"cannot read --hidden '{text}': give sizes like 128,64") from None


def check_training(*, batch_size: int, epochs: int, seed: int, val_size: Optional[int], limit: Optional[int],
                   rho: float, chi: float, lr: float, rat_beta: Optional[float]) -> None:
    """The training numbers in range, named as the flags that set them (before TrainConfig is built)."""
    guards.integer("--batch-size", batch_size, 1, 1 << 20)
    guards.integer("--epochs", epochs, 1, 100_000)
    if val_size is not None:
        guards.integer("--val-size", val_size, 0, 10**7)
    guards.integer("--seed", seed, 0, guards.MAX_SEED)
    guards.integer("--limit", limit, 1)
    guards.number("--rho", rho, 0.0, 1e6, fix="the weight of the MS-MPPD term, e.g. 1.0")
    guards.number("--chi", chi, 0.0, 1.0, fix="the mixup weight of the clean cross-entropy, e.g. 0.5")
    guards.number("--lr", lr, 0.0, 100.0, low_open=True, fix="e.g. 0.1")
    if rat_beta is not None:
        guards.number("--rat-beta", rat_beta, 0.0, 1.0, fix="e.g. 0.001")


def train_to_files(out: Path, network: NetworkSettings, config: TrainConfig, device, resume: bool = False,
                   progress: bool = True) -> list[str]:
    """Train (under torchrun: this process's share) and write ``out`` and its companions; the summary lines."""
    import torch

    from .data import dataset_info, default_validation_size, load_dataset, split_validation
    from .models import build_model
    from .training import accuracy, describe_schedules, train

    files = RunFiles(out)
    guards.check_outputs({"--out": out, "--out (last checkpoint)": files.last, "--out (metrics)": files.json},
                         [Path(config.data_root)] if config.data_root else [])
    if resume and not files.last.exists():
        raise UserError(f"--resume: no '{files.last}' to continue from: start without --resume")
    info = dataset_info(config.dataset)
    config.augment = info.augment
    rank, world = sharding.init(device.type == "cuda")
    target = torch.device("cuda", sharding.local_rank()) if device.type == "cuda" else torch.device("cpu")
    train_set, test_set = load_dataset(config.dataset, config.data_root)
    train_set, val_set = split_validation(train_set, default_validation_size(len(train_set))
                                          if config.val_size is None else config.val_size)
    config.val_size = len(val_set)
    torch.manual_seed(config.seed)
    model_config = network.model_config(info, int(train_set.x[0].numel()))
    model = build_model(model_config).to(target)
    start = time.perf_counter()
    try:
        history = train(model, train_set, config, progress=progress, val_set=val_set, out=out, resume=resume,
                        extra={"metrics": {}})
    except BaseException as err:  # noqa: BLE001  (after a Ctrl-C, whatever a library raised is the interrupt)
        if isinstance(err, KeyboardInterrupt) or interrupts.received():
            raise interrupts.Interrupted(files.interrupted_message(resume)) from None
        raise
    seconds = time.perf_counter() - start
    lines = []
    if rank == 0:
        if not history:
            lines.append(f"nothing to do: {files.last} already has {config.epochs} epochs")
        else:
            clean = accuracy(model, test_set)
            shape = (f"{model_config.in_features}-{'-'.join(map(str, network.hidden))}-{model_config.classes}"
                     if network.arch == "mlp" else network.arch)
            lines.append(
                f"trained {network.neuron.upper()} {shape}, T={network.timesteps}, perturb={config.perturb}, "
                f"rho={config.rho}{', RAT' if config.rat else ''} on {config.dataset} "
                f"({len(train_set.head(config.limit))} samples{f', {world} processes' if world > 1 else ''}) in "
                f"{seconds:.1f}s: last-epoch test accuracy {clean:.4f} ({len(test_set)} samples); best validation "
                f"{max(r.get('val_clean') or 0 for r in history):.4f} ({len(val_set)} held-out training samples) "
                f"-> {out} (best), {files.last}, {out.with_suffix('')}.metrics.{{json,csv,png}}")
            if network.neuron == "dlif":
                lines.append(describe_schedules(history[-1], network.leak))
    return lines
