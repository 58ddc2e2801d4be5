"""SLAYER blocks built on the project's LIF/DLIF neurons.

They reuse slayer's block machinery (synapse with the 8-bit quantizing
``pre_hook_fx``) but switch off slayer's in-model step delay:
the float model computes the paper's T-step dynamics and the Lava runner
accounts for the one-step-per-layer delay instead.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from lava.lib.dl.slayer.block import base
from lava.lib.dl.slayer.synapse import layer as synapse

from . import chip_kernel as kernel, fixed_point as fx, guards
from .neurons import NEURONS, DLIF

READOUT_NEURON = kernel.CubaNeuron(vth_mant=fx.MAX_VTH_MANT, v_decay=0)  # a perfect integrator that never fires


def synapse_weight(synapse) -> torch.Tensor:
    """The weight a slayer Dense synapse multiplies by (8-bit grid in quantized mode), as (out, in)."""
    hook = synapse.pre_hook_fx
    weight = synapse.weight if hook is None else hook(synapse.weight)
    return weight.reshape(weight.shape[0], -1)


def dense_sum(synapse, x: torch.Tensor) -> torch.Tensor:
    """W s[t] for all t of (B, in, T) spikes as one time-major matrix product: slayer runs a Dense
    synapse as a 1x1x1 conv3d, several times slower on small layers (op dispatch and layout
    reorders), and the neuron works time-major anyway. An input constant over time (the encoder's
    expand) is multiplied once. The same sums as slayer's (exact on the chip's grid)."""
    if synapse.weight_norm_enabled:  # weight norm recomputes the weight in a forward pre-hook
        return synapse(x)
    weight = synapse_weight(synapse)
    if x.shape[-1] > 1 and x.stride(-1) == 0:
        return F.linear(x[..., 0], weight).unsqueeze(-1).expand(-1, -1, x.shape[-1])
    return F.linear(x.permute(2, 0, 1), weight).permute(1, 2, 0)


class SpikingDense(base.AbstractDense):
    """Dense synapse -> LIF/DLIF. ``analog_input`` marks the first layer, fed graded pixels."""

    def __init__(self, neuron: DLIF, in_neurons: int, out_neurons: int,
                 analog_input: bool = False, weight_scale: float = 1.0):
        super().__init__(None, in_neurons, out_neurons, weight_scale=weight_scale,
                         pre_hook_fx=neuron.quantize_8bit, delay_shift=False)
        self.neuron = neuron
        self.neuron.shape = torch.Size([out_neurons])
        self.synapse = synapse.Dense(**self.synapse_params)
        del self.synapse_params
        self.analog_input = analog_input
        if analog_input:  # graded pixels round(64 x): the chip's sum W p is exact on a finer grid
            self.neuron.payload_scale = fx.INPUT_SCALE

    def current(self, x: torch.Tensor) -> torch.Tensor:
        """Synaptic input current I[t] = W s[t] (exact on the chip's grid)."""
        return dense_sum(self.synapse, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(self.current(x))


class Readout(torch.nn.Module):
    """Non-spiking dense readout; on the chip a perfect integrator that never fires.

    logits[t] = W_q s[t]; the prediction is argmax of their sum (the mean over time).
    """

    def __init__(self, in_neurons: int, out_neurons: int, weight_scale: float = 1.0):
        super().__init__()
        self.arithmetic = "chip"
        self.synapse = synapse.Dense(in_neurons, out_neurons, weight_scale=weight_scale,
                                     pre_hook_fx=self.quantize_8bit)

    def quantize_8bit(self, weight, descale=False):
        return fx.quantize_weight(weight, descale, enabled=self.arithmetic != "float")

    def forward(self, spikes: torch.Tensor) -> torch.Tensor:
        return dense_sum(self.synapse, spikes)


def make_neuron(config) -> DLIF:
    """The spiking neuron a ModelConfig asks for (DLIF in its leak or input form, or LIF)."""
    guards.choice("neuron", config.neuron, sorted(NEURONS), error=ValueError)
    options = {"form": config.dlif_form} if config.neuron == "dlif" else {}
    return NEURONS[config.neuron](threshold=config.threshold, leak=config.leak, timesteps=config.timesteps, **options)
