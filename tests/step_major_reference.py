"""The chip-side loop as it was before the layer-major unroll (step-major, int64, one conv per step):
the reference every fast path is checked against, bit for bit. Kept verbatim, test-only."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from loihi_stable import chip_kernel as kernel
from loihi_stable import surrogates
from loihi_stable.neurons import triangle_spike
from netx_export.fileformat.netx_file import LayerSpec, NetSpec, encode_inputs

def unwrapped_sum(layer: LayerSpec, signal: torch.Tensor, weight: np.ndarray | None = None) -> torch.Tensor:
    """W s (int64) for one layer, a matmul or a convolution, before any wrap."""
    weight = torch.from_numpy(np.ascontiguousarray(layer.weight if weight is None else weight))
    if layer.kind == "conv":
        total = F.conv2d(signal.double(), weight.double(), stride=layer.stride, padding=layer.padding)
        return total.round().long()
    return signal.reshape(len(signal), -1) @ weight.T


def synaptic_sum(layer: LayerSpec, signal: torch.Tensor) -> torch.Tensor:
    """a = W s as Lava's synapse sends it: a conv synapse wraps it to 24 bits, a dense one does not."""
    total = unwrapped_sum(layer, signal)
    return kernel.wrap_conv_activation(total) if layer.kind == "conv" else total


def layer_bias(layer: LayerSpec) -> torch.Tensor | int:
    """bias_mant broadcastable over a layer's state (per channel for conv)."""
    if layer.bias is None:
        return 0
    bias = torch.from_numpy(layer.bias.astype(np.int64))
    return bias.view(-1, 1, 1) if layer.kind == "conv" else bias


def layer_schedules(spec: NetSpec) -> list[torch.Tensor]:
    """Per-step integer voltage decay of every layer (constant vDecay for LIF and the readout)."""
    return [torch.from_numpy(np.asarray(layer.dv_schedule, dtype=np.int64)) if layer.dv_schedule is not None
            else torch.full((spec.timesteps,), layer.neuron.v_decay, dtype=torch.int64)
            for layer in spec.layers]


@torch.no_grad()
def emulate_batch(spec, payload: np.ndarray):
    """(readout, spikes per hidden layer (N, neurons, T), voltages after reset (N, neurons, T))."""
    steps = spec.timesteps
    schedules = layer_schedules(spec)
    biases = [layer_bias(layer) for layer in spec.layers]
    first_activation = synaptic_sum(spec.layers[0], torch.from_numpy(payload))  # direct encoding: constant
    currents = [None] * len(spec.layers)
    voltages = [None] * len(spec.layers)
    spikes_out = [[] for _ in spec.layers[:-1]]
    volts_out = [[] for _ in spec.layers[:-1]]
    for t in range(steps):
        signal = None
        for i, (layer, dv, bias) in enumerate(zip(spec.layers, schedules, biases)):
            activation = first_activation if i == 0 else synaptic_sum(layer, signal)
            if currents[i] is None:
                currents[i], voltages[i] = torch.zeros_like(activation), torch.zeros_like(activation)
            currents[i], voltages[i], spikes, _ = kernel.neuron_step(
                currents[i], voltages[i], activation, layer.i_decay, dv[t], layer.threshold, bias)
            signal = spikes.long()
            if i < len(spec.layers) - 1:
                spikes_out[i].append(signal.flatten(1))
                volts_out[i].append(voltages[i].flatten(1))
    return (voltages[-1].numpy(), [torch.stack(s, -1).numpy() for s in spikes_out],
            [torch.stack(v, -1).numpy() for v in volts_out])


def _ste(exact, smooth):
    return smooth + (exact - smooth).detach()


def grid_readout(self, x: torch.Tensor) -> torch.Tensor:
    """The readout voltage after T steps (chip units, float64), as the chip ends a sample."""
    spec = self.spec
    first = _grid_sum(self, 0, _grid_encode(self.spec, x))
    currents, voltages = [None] * len(spec.layers), [None] * len(spec.layers)
    sums = [None] * len(spec.layers)  # input current summed over steps (the rate backward's)
    schedules, biases = self.schedules, self.biases  # once, not per step and layer
    chosen = self.spike_backward
    for t in range(spec.timesteps):
        signal = None
        for i, layer in enumerate(spec.layers):
            a = first if i == 0 else _grid_sum(self, i, signal)
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


def _grid_encode(spec, x):
    """Graded payloads round(64 x), straight-through, shaped for the first layer."""
    x = x.reshape(len(x), -1).double().clamp(0.0, 1.0) * spec.input_scale
    payload = _ste(torch.round(x), x)
    if not spec.input_shape:
        return payload
    c, h, w = spec.input_shape
    payload = payload.view(len(x), c - int(spec.bias_channel), h, w)
    if spec.bias_channel:
        payload = torch.cat([payload, payload.new_full((len(x), 1, h, w), float(spec.input_scale))], 1)
    return payload

def _grid_sum(self, i, signal):
    layer, weight = self.spec.layers[i], torch.from_numpy(self.spec.layers[i].weight).double().to(signal.device)
    if layer.kind == "conv":
        total = F.conv2d(signal, weight, stride=layer.stride, padding=layer.padding)
        return _ste(kernel.wrap_conv_activation(torch.round(total.detach())), total)
    return signal.reshape(len(signal), -1) @ weight.T

UNVERIFIABLE = torch.iinfo(torch.int64).min // 2


def _interval_sum(layer: LayerSpec, lo: torch.Tensor, hi: torch.Tensor):
    """Bounds of a = W s for s in [lo, hi], and where a conv synapse's 24-bit wrap may fire."""
    pos, neg = np.clip(layer.weight, 0, None), np.clip(layer.weight, None, 0)
    a_lo = unwrapped_sum(layer, lo, pos) + unwrapped_sum(layer, hi, neg)
    a_hi = unwrapped_sum(layer, hi, pos) + unwrapped_sum(layer, lo, neg)
    may_wrap = ((a_hi >= kernel.WRAP) | (a_lo < -kernel.WRAP)).flatten(1).any(1)
    return a_lo, a_hi, may_wrap if layer.kind == "conv" else torch.zeros_like(may_wrap)


@torch.no_grad()
def chip_bounds(spec, x: np.ndarray, y: np.ndarray, eps: float) -> dict:
    """Integer S-IBP over the L-inf ball of radius eps around each sample of x (N, features)."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    n = len(x)
    payload = [torch.from_numpy(encode_inputs(spec, x + sign * eps)) for sign in (-1, 1)]
    schedules = layer_schedules(spec)
    *first, may_wrap = _interval_sum(spec.layers[0], *payload)
    currents, voltages = [None] * len(spec.layers), [None] * len(spec.layers)
    readout_fires = torch.zeros(n, dtype=torch.bool)
    last_spikes = []
    for t in range(spec.timesteps):
        signal = None
        for i, (layer, dv) in enumerate(zip(spec.layers, schedules)):
            if i == 0:
                activation = first
            else:
                *activation, wraps = _interval_sum(layer, *signal)
                may_wrap |= wraps
            if currents[i] is None:
                zero = torch.zeros_like(activation[0])
                currents[i], voltages[i] = (zero, zero), (zero, zero)
            u_lo, u_hi, wraps = kernel.current_step_interval(*currents[i], *activation, layer.i_decay)
            may_wrap |= wraps.flatten(1).any(1)
            v_lo, v_hi = kernel.voltage_step_interval(*voltages[i], u_lo, u_hi, dv[t], layer_bias(layer))
            s_lo, s_hi, after_lo, after_hi = kernel.fire_interval(v_lo, v_hi, layer.threshold)
            currents[i], voltages[i], signal = (u_lo, u_hi), (after_lo, after_hi), (s_lo, s_hi)
            if i == len(spec.layers) - 1:
                readout_fires |= (s_hi > 0).any(1) | (v_lo <= -kernel.VOLTAGE_LIMIT).any(1) \
                    | (v_hi >= kernel.VOLTAGE_LIMIT).any(1)
            elif i == len(spec.layers) - 2:
                last_spikes.append((s_lo.flatten(1), s_hi.flatten(1)))
    readout_lo, readout_hi = voltages[-1]
    # while the readout neither fires nor saturates it integrates (W_y - W_j) s[t] << 6 (+ bias) exactly;
    # the bias term is the same for every class difference up to (b_y - b_j) << 6 per step
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    w = torch.from_numpy(spec.layers[-1].weight.astype(np.int64))
    diff = w[y_t].unsqueeze(1) - w.unsqueeze(0)                       # (B, K, N)
    margin = torch.zeros(n, w.shape[0], dtype=torch.int64)
    for s_lo, s_hi in last_spikes:
        margin += kernel.activation_current(
            (diff.clamp(min=0) @ s_lo.unsqueeze(-1) + diff.clamp(max=0) @ s_hi.unsqueeze(-1)).squeeze(-1))
    if spec.layers[-1].bias is not None:
        b = torch.from_numpy(spec.layers[-1].bias.astype(np.int64))
        margin += spec.timesteps * ((b[y_t].unsqueeze(1) - b.unsqueeze(0)) << kernel.BIAS_SHIFT)
    fallback = readout_lo.gather(1, y_t[:, None]) - readout_hi     # sound whatever the readout does
    margin = torch.where(readout_fires[:, None], fallback, margin)
    margin = torch.where(may_wrap[:, None], torch.full_like(margin, UNVERIFIABLE), margin)
    margin[torch.arange(n), y_t] = 0
    others = margin.clone()
    others[torch.arange(n), y_t] = torch.iinfo(torch.int64).max
    return dict(readout_lo=readout_lo.numpy(), readout_hi=readout_hi.numpy(), margin_lo=margin.numpy(),
                verified=(others > 0).all(1).numpy(), readout_may_fire=readout_fires.numpy(), may_wrap=may_wrap.numpy())

