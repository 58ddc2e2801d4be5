"""An exported file as a differentiable torch model: the "grid" version of a network.

Values are the chip's, bit for bit (``chip_kernel`` on float64 integers, the emulator's
arithmetic); gradients flow straight through the integer maps into the smooth dynamics
they round (v = (1 - dv/4096) v + u + bias, triangle surrogate spikes), so white-box
attacks on it are chip-aware. For dense networks it equals the QAT model; for conv
networks, quantized only at export, it is the quantized twin the QAT model would be.
Logits are the readout voltage over T steps in units of one input spike (4096 per 1.0).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from loihi_stable import chip_kernel as kernel
from loihi_stable import fixed_point as fx, surrogates
from loihi_stable.neurons import triangle_spike
from netx_export.emulator import layer_schedules
from netx_export.netx_file import NetSpec


def _ste(exact: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    return smooth + (exact - smooth).detach()


class ChipModel(torch.nn.Module):
    spike_backward = None  # an attack's surrogates.Backward (surrogates.backward_through); None: the triangle

    def __init__(self, spec: NetSpec):
        super().__init__()
        self.spec = spec
        # buffers, so that .to(device) moves the integers with the module (certify/run/check --device)
        for i, (layer, schedule) in enumerate(zip(spec.layers, layer_schedules(spec))):
            self.register_buffer(f"weight{i}", torch.from_numpy(np.ascontiguousarray(layer.weight)).double())
            self.register_buffer(f"bias{i}", torch.zeros((), dtype=torch.float64) if layer.bias is None else
                                 torch.from_numpy(layer.bias).double().view(*((-1, 1, 1) if layer.kind == "conv" else (-1,))))
            self.register_buffer(f"schedule{i}", schedule.double())

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
        spec = self.spec
        x = x.reshape(len(x), -1).double().clamp(0.0, 1.0) * spec.input_scale
        payload = _ste(torch.round(x), x)
        if not spec.input_shape:
            return payload
        c, h, w = spec.input_shape
        payload = payload.view(len(x), c - int(spec.bias_channel), h, w)
        if spec.bias_channel:
            payload = torch.cat([payload, payload.new_full((len(x), 1, h, w), float(spec.input_scale))], 1)
        return payload

    def _synaptic_sum(self, i: int, signal: torch.Tensor) -> torch.Tensor:
        layer, weight = self.spec.layers[i], getattr(self, f"weight{i}")
        if layer.kind == "conv":
            total = F.conv2d(signal, weight, stride=layer.stride, padding=layer.padding)
            return _ste(kernel.wrap_conv_activation(torch.round(total.detach())), total)
        return signal.reshape(len(signal), -1) @ weight.T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.readout(x) / (self.spec.timesteps * fx.STATE_SCALE)).float()

    def readout(self, x: torch.Tensor) -> torch.Tensor:
        """The readout voltage after T steps (chip units, float64), as the chip ends a sample."""
        spec = self.spec
        first = self._synaptic_sum(0, self.encode(x))
        currents, voltages = [None] * len(spec.layers), [None] * len(spec.layers)
        sums = [None] * len(spec.layers)  # input current summed over steps (the rate backward's)
        schedules, biases = self.schedules, self.biases  # once, not per step and layer
        chosen = self.spike_backward
        for t in range(spec.timesteps):
            signal = None
            for i, layer in enumerate(spec.layers):
                a = first if i == 0 else self._synaptic_sum(i, signal)
                if currents[i] is None:
                    currents[i], voltages[i] = torch.zeros_like(a), torch.zeros_like(a)
                u_prev, v_prev, dv, bias = currents[i], voltages[i], schedules[i][t], biases[i]
                u_smooth = (1 - layer.i_decay / kernel.DECAY_UNITY) * u_prev + kernel.activation_current(a)
                u = _ste(kernel.current_step(u_prev.detach(), a.detach(), layer.i_decay), u_smooth)
                v_smooth = (1 - dv / kernel.DECAY_UNITY) * v_prev + u + bias * (1 << kernel.BIAS_SHIFT)
                v = _ste(kernel.voltage_step(v_prev.detach(), u.detach(), dv, bias), v_smooth)
                threshold = float(layer.threshold)
                if chosen is None:
                    spikes = triangle_spike(v, threshold, threshold)
                    currents[i], voltages[i] = u, v * (1 - spikes)
                else:
                    drive = u + bias * (1 << kernel.BIAS_SHIFT)
                    sums[i] = drive if sums[i] is None else sums[i] + drive
                    spikes, voltages[i] = surrogates.step_spike(v, threshold, threshold, chosen, sums[i] / (t + 1))
                    currents[i] = u
                signal = spikes
        return voltages[-1]


def grid_model(spec: NetSpec, model) -> torch.nn.Module:
    """The torch model whose values are the chip's: the QAT model itself for dense networks (trained
    on the chip's grids), the file's integers as a ``ChipModel`` for conv networks."""
    return model if spec.arch == "mlp" else ChipModel(spec)
