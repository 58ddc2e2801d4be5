"""The logits a query-only attack asks for, at the speed of the arithmetic.

Square asks a dense SNN for logits thousands of times with the same weights. On small nets each
forward is bound by op dispatch, and most of its ops redo what does not change between queries:
the 8-bit weights re-quantized, the decay schedule rebuilt, autograd's bookkeeping, slayer's
(B, C, T) layout permuted to the neuron's time-major one and back. ``frozen_logits`` takes the
weights and schedules once and runs the layers time-major, in the model's own dynamics
(``neurons.spike_dynamics``, chip integers included): the same logits bit for bit (tested).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from .. import fixed_point as fx
from ..blocks import synapse_weight
from ..models import SpikingMLP
from ..neurons import spike_dynamics


def frozen_logits(model: torch.nn.Module) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """A logits function of ``model`` with its current parameters and arithmetic, or None where there is
    no such shortcut (conv nets, which are GEMM-bound; weight norm; any other module): use the model."""
    if type(model) is not SpikingMLP or any(m.synapse.weight_norm_enabled for m in (*model.blocks, model.readout)):
        return None
    steps = model.config.timesteps
    with torch.no_grad():
        layers = []
        for block in model.blocks:
            neuron = block.neuron
            decay = neuron.effective_decay()[:steps].float()
            chip = neuron.arithmetic == "chip" and neuron.form == "leak"
            gain = neuron.input_scale[:steps].float()[:, None, None] if neuron.form == "input" else None
            layers.append((synapse_weight(block.synapse), decay, neuron.threshold, neuron.payload_scale,
                           fx.decay_to_dv(decay) if chip else None, gain))
        readout = synapse_weight(model.readout.synapse)

    def logits(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            h = model.encode(x)[..., 0]  # the same image at every step: its sums once
            for i, (weight, decay, threshold, payload_scale, dv, gain) in enumerate(layers):
                current = F.linear(h, weight)
                if i == 0:
                    current = current.expand(steps, *current.shape)  # one view: its drive converted once
                if gain is not None:
                    current = current * gain
                _, h, _ = spike_dynamics(current, decay, threshold, dv, payload_scale, voltages=False)
            return F.linear(h, readout).mean(0)

    return logits

