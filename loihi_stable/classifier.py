"""What every spiking classifier shares: its config (stored in checkpoints) and its interface.

Direct encoding: the image is repeated T times.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field

import torch

from . import fixed_point as fx


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

    @contextlib.contextmanager
    def arithmetic(self, mode: str):
        """Compute in ``mode`` (fixed_point.ARITHMETIC) inside the block, e.g. "float" for the float twin."""
        fx.check_arithmetic(mode)
        parts = [m for m in self.modules() if hasattr(m, "arithmetic") and isinstance(m.arithmetic, str)]
        previous = [m.arithmetic for m in parts]
        for m in parts:
            m.arithmetic = mode
        try:
            yield self
        finally:
            for m, mode_before in zip(parts, previous):
                m.arithmetic = mode_before

    def set_recording(self, enabled: bool) -> None:
        for neuron in self.spiking_neurons:
            neuron.record = enabled
            neuron.recording = {}
