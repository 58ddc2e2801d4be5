"""Spiking classifiers with direct encoding: the image is repeated T times."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch

from . import fixed_point as fx
from .blocks import Readout, SpikingDense, make_neuron


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint."""

    in_features: int = 64
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    classes: int = 10
    neuron: str = "dlif"
    timesteps: int = 8
    leak: float = 0.99
    threshold: float = 1.0
    weight_scale: float = 2.0
    arch: str = "mlp"                       # mlp, convnet, convnet-s, vgg5, vgg11, wrn16-4
    input_shape: list[int] | None = None    # (C, H, W) for conv architectures
    mean: list[float] | None = None         # normalisation inside conv models
    std: list[float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelConfig":
        return cls(**data)


class SpikingClassifier(torch.nn.Module):
    """What attacks, metrics and training use of every architecture: ``forward_time`` and the neurons."""

    spiking_neurons: list

    def forward_time(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step logits (B, K, T) and the last spiking layer's input current (B, ..., T)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits averaged over time: f(x) in the paper, what attacks differentiate."""
        return self.forward_time(x)[0].mean(-1)

    def set_recording(self, enabled: bool) -> None:
        for neuron in self.spiking_neurons:
            neuron.record = enabled
            neuron.recording = {}


class SpikingMLP(SpikingClassifier):
    """Dense SNN: analog pixels -> spiking layers -> non-spiking readout (mean over time)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        sizes = [config.in_features, *config.hidden]
        self.blocks = torch.nn.ModuleList(
            SpikingDense(make_neuron(config.neuron, config.timesteps, config.leak, config.threshold),
                         n_in, n_out, analog_input=(i == 0), weight_scale=config.weight_scale)
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])))
        self.readout = Readout(sizes[-1], config.classes, weight_scale=config.weight_scale)

    @property
    def spiking_neurons(self):
        return [block.neuron for block in self.blocks]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, features) in [0, 1] -> (B, features, T) on the chip's input grid."""
        x = fx.quantize_input(x.flatten(1))
        return x.unsqueeze(-1).expand(*x.shape, self.config.timesteps)

    def forward_time(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        current = None
        for block in self.blocks:
            current = block.current(h)
            h = block.neuron(current)
        return self.readout(h), current


def build_model(config: ModelConfig) -> torch.nn.Module:
    from .convnets import ARCHS, SpikingVGG, SpikingWRN

    if config.arch == "mlp":
        return SpikingMLP(config)
    if config.arch not in ARCHS:
        from .errors import UserError
        raise UserError(f"unknown architecture '{config.arch}': choose one of {', '.join(ARCHS)}")
    if config.input_shape is None:
        raise ValueError("conv architectures need ModelConfig.input_shape (C, H, W)")
    config.mean = config.mean or [0.0] * config.input_shape[0]
    config.std = config.std or [1.0] * config.input_shape[0]
    return SpikingWRN(config) if config.arch == "wrn16-4" else SpikingVGG(config)
