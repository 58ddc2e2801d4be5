"""An exported file as a differentiable torch model: the "grid" version of a network.

Values are the chip's, bit for bit (``chip_kernel`` on float64 integers, the emulator's
arithmetic); gradients flow straight through the integer maps into the smooth dynamics
they round (v = (1 - dv/4096) v + current + bias, triangle surrogate spikes), so white-box
attacks on it are chip-aware. For dense networks it equals the QAT model; for conv
networks, quantized only at export, it is the quantized twin the QAT model would be.
Logits are the readout voltage over T steps in units of one input spike (4096 per 1.0).
"""
from __future__ import annotations

import numpy as np
import torch

from loihi_stable import chip_kernel as kernel
from loihi_stable import fixed_point as fx, surrogates
from loihi_stable.neurons import FusedDynamics, triangle_spike
from netx_export.runtime.chip_unroll import (Arithmetic, can_wrap, layer_schedules, pooled_kernel, sum_dtype, synaptic_sum,
                                             unroll)
from netx_export.fileformat.netx_file import NetSpec


class GridArithmetic(Arithmetic):
    """Chip values with smooth gradients: each integer map is straight-through to the float
    dynamics it rounds; the spike's backward is the triangle (width: the threshold) or the
    attacker's choice (``surrogates``)."""

    def __init__(self, model: "ChipModel"):
        self.model, self.chosen = model, model.spike_backward
        self.schedules = [s.tolist() for s in model.schedules]  # once, as numbers, not per step and layer
        self.biases, self.wraps = model.biases, model.wraps

    def synaptic_sum(self, index, layer, signal):
        weight, pooled = getattr(self.model, f"weight{index}"), getattr(self.model, f"pooled{index}")
        total = synaptic_sum(layer, signal, weight, pooled).double()  # exact integers (chip_unroll.sum_dtype)
        if self.wraps[index]:  # Lava's conv synapse wraps its sum to 24 bits
            return fx.ste(kernel.wrap_conv_activation(torch.round(total.detach())), total)
        return total

    def whole_layer(self, index, layer, a, batch):
        """A hidden layer whose current does not persist (iDecay = 4096: every exported file) as one fused
        autograd node (neurons.FusedDynamics in chip units): the per-step path's values and gradients with
        a fraction of its graph. The readout (its voltage is the output) and the rate backward step."""
        spec = self.model.spec
        if index == len(spec.layers) - 1 or layer.i_decay != kernel.DECAY_UNITY or \
                (self.chosen is not None and self.chosen.shape == "rate"):
            return None
        steps = spec.timesteps
        current = kernel.activation_current(a)
        current = current.expand(steps, *current.shape) if index == 0 else current.view(steps, batch, *current.shape[1:])
        dv = torch.tensor(self.schedules[index], dtype=torch.float64, device=current.device)
        bias = None if layer.bias is None else self.biases[index] * (1 << kernel.BIAS_SHIFT)
        threshold = float(layer.threshold)
        spikes, _ = FusedDynamics.apply(current.movedim(0, -1), 1 - dv / kernel.DECAY_UNITY, threshold, threshold, dv,
                                        1, self.chosen, bias, 1)
        return spikes.movedim(-1, 0).reshape(steps * batch, *spikes.shape[1:-1])

    def initial_state(self, index, layer, drive):
        zero = torch.zeros_like(drive)
        return zero, zero, None  # current, voltage after reset, input current summed so far (rate backward)

    def step(self, index, layer, state, a, t):
        current_prev, v_prev, summed = state
        dv, bias = self.schedules[index][t], self.biases[index]
        current_smooth = (1 - layer.i_decay / kernel.DECAY_UNITY) * current_prev + kernel.activation_current(a)
        current = fx.ste(kernel.current_step(current_prev.detach(), a.detach(), layer.i_decay), current_smooth)
        v_smooth = (1 - dv / kernel.DECAY_UNITY) * v_prev + current + bias * (1 << kernel.BIAS_SHIFT)
        v = fx.ste(kernel.voltage_step(v_prev.detach(), current.detach(), dv, bias), v_smooth)
        threshold = float(layer.threshold)
        if self.chosen is None:
            spikes = triangle_spike(v, threshold, threshold)
            return (current, v * (1 - spikes), None), spikes, None
        drive = current + bias * (1 << kernel.BIAS_SHIFT)
        summed = drive if summed is None else summed + drive
        spikes, v = surrogates.step_spike(v, threshold, threshold, self.chosen, summed / (t + 1))
        return (current, v, summed), spikes, None


class ChipModel(torch.nn.Module):
    spike_backward = None  # an attack's surrogates.Backward (surrogates.backward_through); None: the triangle

    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        self.wraps = [can_wrap(spec, i) for i in range(len(spec.layers))]  # once: a pass over every weight
        # buffers, so that .to(device) moves the integers with the module (certify/run/check --device);
        # weights in float32 where the layer's sums are provably exact in it (chip_unroll.sum_dtype)
        for i, (layer, schedule) in enumerate(zip(spec.layers, layer_schedules(spec))):
            weight = torch.from_numpy(np.ascontiguousarray(layer.weight)).to(sum_dtype(spec, i))
            self.register_buffer(f"weight{i}", weight)
            pooled = pooled_kernel(layer)  # a folded 2x2 pool: a quarter of the MACs (chip_unroll.pooled_kernel)
            self.register_buffer(f"pooled{i}", None if pooled is None else torch.from_numpy(pooled).to(weight.dtype))
            self.register_buffer(f"bias{i}", torch.zeros((), dtype=torch.float64) if layer.bias is None else
                                 torch.from_numpy(layer.bias).double().view(*((-1, 1, 1) if layer.kind == "conv" else (-1,))))
            self.register_buffer(f"schedule{i}", schedule.double())

    def _apply(self, fn, *args, **kwargs):
        """float32 sums are exact on the CPU only: on another device every weight becomes float64."""
        module = super()._apply(fn, *args, **kwargs)
        for i in range(len(self.spec.layers)):
            weight = getattr(self, f"weight{i}")
            if weight.device.type not in ("cpu", "meta") and weight.dtype != torch.float64:
                setattr(self, f"weight{i}", weight.double())
        return module

    def _per_layer(self, name: str) -> list[torch.Tensor]:
        return [getattr(self, f"{name}{i}") for i in range(len(self.spec.layers))]

    @property
    def weights(self) -> list[torch.Tensor]:
        return self._per_layer("weight")

    @property
    def biases(self) -> list[torch.Tensor]:
        return self._per_layer("bias")

    @property
    def schedules(self) -> list[torch.Tensor]:
        return self._per_layer("schedule")

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Graded payloads round(64 x), straight-through, shaped for the first layer."""
        return self.spec.shape_payload(fx.graded_payload(x.reshape(len(x), -1).double(), self.spec.input_scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.readout(x) / (self.spec.timesteps * fx.STATE_SCALE)).float()

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """The readout voltage after T steps (chip units, float64), as the chip ends a sample."""
        return unroll(self.spec, GridArithmetic(self), self.encode(x)).state[1]


def grid_model(spec: NetSpec, model) -> torch.nn.Module:
    """The torch model whose values are the chip's: the QAT model itself for dense networks (trained
    on the chip's grids), the file's integers as a ``ChipModel`` for conv networks."""
    return model if spec.arch == "mlp" else ChipModel(spec)
