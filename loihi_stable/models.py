"""The dense SNN and the factory of every architecture (conv ones live in ``convnets``)."""
from __future__ import annotations

import torch

from . import fixed_point as fx
from .blocks import Readout, SpikingDense, make_neuron
from .classifier import ModelConfig, SpikingClassifier
from .convnets import ARCHS, SpikingVGG, SpikingWRN


class SpikingMLP(SpikingClassifier):
    """Dense SNN: analog pixels -> spiking layers -> non-spiking readout (mean over time)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        sizes = [config.in_features, *config.hidden]
        self.blocks = torch.nn.ModuleList(
            SpikingDense(make_neuron(config),
                         n_in, n_out, analog_input=(i == 0), weight_scale=config.weight_scale)
            for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])))
        self.readout = Readout(sizes[-1], config.classes, weight_scale=config.weight_scale)

    @property
    def spiking_neurons(self):
        return [block.neuron for block in self.blocks]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """(B, features) in [0, 1] -> (B, features, T) on the chip's input grid."""
        x = fx.quantize_input(x.flatten(1), enabled=self.blocks[0].neuron.arithmetic != "float")
        return x.unsqueeze(-1).expand(*x.shape, self.config.timesteps)

    def forward_time(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.encode(x)
        current = None
        for block in self.blocks:
            current = block.current(h)
            h = block.neuron(current)
        return self.readout(h), current


def build_model(config: ModelConfig) -> SpikingClassifier:
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
