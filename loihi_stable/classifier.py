"""What every spiking classifier shares: its config (stored in checkpoints) and its interface.

Direct encoding: the image is repeated T times.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field

import torch

from . import fixed_point as fx


MAX_FEATURES = 1 << 20
MAX_TIMESTEPS = 1024
MAX_PARAMETERS = 5 * 10**8


@dataclass
class ModelConfig:
    """Everything needed to rebuild a model; stored in every checkpoint."""

    in_features: int = 64
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    classes: int = 10
    neuron: str = "dlif"
    dlif_form: str = "leak"                 # DLIF's a[t] scales the leak (paper) or p[t] the input (authors' code)
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
        """The config a checkpoint holds, validated (a ValueError names what is wrong)."""
        if not isinstance(data, dict):
            raise ValueError("model_config is not a mapping")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown model_config key '{unknown[0]}'")
        config = cls(**data)
        config.validate()
        return config

    def validate(self) -> None:
        """Types and bounds that keep a (possibly hostile) config from building something absurd."""
        def whole(name, value, low, high):
            if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
                raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")

        def real(name, value, low, high, low_open=False):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            if not ok or value > high or (value <= low if low_open else value < low):
                raise ValueError(f"{name} must be a finite number in {'(' if low_open else '['}{low:g}, {high:g}], "
                                 f"got {value!r}")

        whole("in_features", self.in_features, 1, MAX_FEATURES)
        if not isinstance(self.hidden, list) or not self.hidden:
            raise ValueError("hidden must be a non-empty list of layer sizes")
        for size in self.hidden:
            whole("hidden layer size", size, 1, MAX_FEATURES)
        whole("classes", self.classes, 2, MAX_FEATURES)
        whole("timesteps", self.timesteps, 1, MAX_TIMESTEPS)
        real("leak", self.leak, 0.0, 1.0, low_open=True)
        real("threshold", self.threshold, 0.0, 1e6, low_open=True)
        real("weight_scale", self.weight_scale, 0.0, 1e6, low_open=True)
        if not isinstance(self.neuron, str) or not isinstance(self.arch, str):
            raise ValueError("neuron and arch must be names")
        if self.dlif_form not in ("leak", "input") or (self.dlif_form == "input" and self.neuron != "dlif"):
            raise ValueError(f"dlif_form must be 'leak' or 'input' (and 'input' only for a DLIF), got {self.dlif_form!r}")
        sizes = [self.in_features, *self.hidden, self.classes]
        if sum(a * b for a, b in zip(sizes, sizes[1:])) > MAX_PARAMETERS and self.arch == "mlp":
            raise ValueError(f"the layer sizes ask for more than {MAX_PARAMETERS:.0e} weights")
        if self.input_shape is not None:
            if not isinstance(self.input_shape, list) or len(self.input_shape) != 3:
                raise ValueError("input_shape must be [C, H, W]")
            whole("input channels", self.input_shape[0], 1, 16)
            for side in self.input_shape[1:]:
                whole("input side", side, 1, 512)
            for name, values in (("mean", self.mean), ("std", self.std)):
                if values is not None:
                    if not isinstance(values, list) or len(values) != self.input_shape[0]:
                        raise ValueError(f"{name} must hold one number per input channel")
                    for value in values:
                        real(name, value, -1e3 if name == "mean" else 0.0, 1e3, low_open=name == "std")


class SpikingClassifier(torch.nn.Module):
    """What attacks, metrics and training use of every architecture: ``forward_time`` and the neurons."""

    spiking_neurons: list

    def forward_time(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-step logits (B, K, T) and the last spiking layer's input current (B, ..., T)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits averaged over time: f(x) in the paper, what attacks differentiate."""
        return self.forward_time(x)[0].mean(-1)

    @property
    def widest_layer(self) -> int | None:
        """Neurons per sample in the widest layer, where the config says (dense); None for conv nets."""
        return max([*self.config.hidden, self.config.classes]) if self.config.arch == "mlp" else None

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
