"""The chip's time loop, written once, for each way of computing it.

A NetX network is feedforward: layer i at step t sees only layer i-1's spikes of step t. So the
loop runs layer by layer, and inside a layer over the T steps: a layer's synaptic sums for all T
steps are one matmul or convolution over T*B rows (time folded into the batch; the first layer's
input is constant over time, so its sum is computed once), and only the elementwise neuron step
runs T times. What a step computes is passed in as an ``Arithmetic``: exact integers (the
emulator), straight-through floats (the grid model, differentiable) or interval ends (the
certificate), all over ``chip_kernel``. A new layer type is a change to ``synaptic_sum`` alone.

Exactness: every value is an integer. Sums run in float32 where a per-layer bound proves them
exact (every partial sum of integers below 2^24 is exact in float32, whatever the summation
order: |W| summed over the fan-in times the largest input stays below 2^24 for 8-bit weights, binary
spikes and fan-ins up to 65,536), else in float64 (exact below 2^53); the neuron state is float64.
float32 is used on the CPU only: CUDA may pick TF32, Winograd or FFT convolutions, which round.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from loihi_stable import chip_kernel as kernel
from netx_export.fileformat.netx_file import LayerSpec, NetSpec

FLOAT32_EXACT = 1 << 24


def sum_bound(layer: LayerSpec, max_input: int) -> int:
    """The largest |W s| a layer can produce for inputs in [-max_input, max_input]."""
    magnitude = np.abs(layer.weight).reshape(len(layer.weight), -1).sum(1)
    return int(magnitude.max(initial=0)) * int(max_input)


def max_input(spec: NetSpec, index: int) -> int:
    """The largest input a layer sees: a graded payload (round(64 x)) for the first, a spike (1) after."""
    return int(spec.input_scale) if index == 0 else 1


def sum_dtype(spec: NetSpec, index: int, device: torch.device | str = "cpu") -> torch.dtype:
    """float32 where the layer's bound proves its sums exact (CPU only), float64 otherwise."""
    exact32 = sum_bound(spec.layers[index], max_input(spec, index)) < FLOAT32_EXACT
    return torch.float32 if exact32 and torch.device(device).type == "cpu" else torch.float64


def synaptic_sum(layer: LayerSpec, signal: torch.Tensor, weight: torch.Tensor,
                 pooled: torch.Tensor | None = None) -> torch.Tensor:
    """W s for a batch of rows (a matmul or a convolution), in the dtype of ``weight``, before any wrap.
    ``pooled``: the layer's ``pooled_kernel``, run on the 2x2 sum-pooled input (same integers, fewer MACs)."""
    signal = signal.to(weight.dtype)
    if layer.kind == "conv":
        if pooled is not None and signal.shape[-1] % 2 == 0 and signal.shape[-2] % 2 == 0:
            summed = F.avg_pool2d(signal, 2, divisor_override=1)  # sums of 4 integers: exact
            return F.conv2d(summed, pooled.to(weight.dtype), padding=layer.padding // 2)
        return F.conv2d(signal, weight, stride=layer.stride, padding=layer.padding)
    return signal.reshape(len(signal), -1) @ weight.T


def pooled_kernel(layer: LayerSpec) -> np.ndarray | None:
    """The kernel a stride-2 convolution came from, where export folded a 2x2 average pool into it.

    Folding turns pool-then-conv (k x k) into one 2k x 2k convolution of stride 2 whose integer
    kernel is constant on aligned 2x2 blocks. Such a layer equals the k x k kernel run with stride 1
    and half the padding on the 2x2 sum-pooled input (for even input sizes): the same integer sums
    with a quarter of the multiply-adds (3 of VGG11's 8 conv layers, 44% of its conv work). Every
    partial sum stays within the layer's ``sum_bound``, so ``sum_dtype`` holds for it too. None for any
    other layer."""
    w = layer.weight
    if layer.kind != "conv" or layer.stride != 2 or layer.padding % 2 or w.shape[2] % 2 or w.shape[3] % 2:
        return None
    blocks = w.reshape(w.shape[0], w.shape[1], w.shape[2] // 2, 2, w.shape[3] // 2, 2)
    if not np.array_equal(blocks, np.broadcast_to(blocks[:, :, :, :1, :, :1], blocks.shape)):
        return None
    return np.ascontiguousarray(blocks[:, :, :, 0, :, 0])


def can_wrap(spec: NetSpec, index: int) -> bool:
    """Can a conv layer's sum reach Lava's 24-bit synapse wrap? (Its bound says; dense sums never wrap.)"""
    layer = spec.layers[index]
    return layer.kind == "conv" and sum_bound(layer, max_input(spec, index)) >= kernel.WRAP


def weight_tensor(layer: LayerSpec, dtype: torch.dtype, sign: int = 0) -> torch.Tensor:
    """A layer's integer weights as floats; sign +1 / -1 keeps only the positive / negative ones."""
    weight = layer.weight if sign == 0 else np.clip(layer.weight, 0, None) if sign > 0 else np.clip(layer.weight, None, 0)
    return torch.from_numpy(np.ascontiguousarray(weight)).to(dtype)


def layer_bias(layer: LayerSpec) -> torch.Tensor | int:
    """bias_mant (float64) broadcastable over a layer's state (per channel for conv); 0 without one."""
    if layer.bias is None:
        return 0
    bias = torch.from_numpy(layer.bias.astype(np.float64))
    return bias.view(-1, 1, 1) if layer.kind == "conv" else bias


def layer_schedules(spec: NetSpec) -> list[torch.Tensor]:
    """Per-step integer voltage decay of every layer (constant vDecay for LIF and the readout)."""
    return [torch.from_numpy(np.asarray(layer.dv_schedule, dtype=np.int64)) if layer.dv_schedule is not None
            else torch.full((spec.timesteps,), layer.neuron.v_decay, dtype=torch.int64)
            for layer in spec.layers]


class Arithmetic:
    """How one layer's sums and one neuron step are computed. Values may be tensors or tuples of
    tensors (interval ends); the loop only slices and stacks them along the rows."""

    def synaptic_sum(self, index: int, layer: LayerSpec, signal):
        raise NotImplementedError

    def initial_state(self, index: int, layer: LayerSpec, drive):
        raise NotImplementedError

    def step(self, index: int, layer: LayerSpec, state, drive, t: int):
        """-> (state, spikes, record); the record (or None) is kept per step for the caller."""
        raise NotImplementedError

    def whole_layer(self, index: int, layer: LayerSpec, drive, batch: int):
        """All T steps of a layer at once, where an arithmetic has a fused form for it: its spikes as
        (T*B, ...) rows; None to run ``step`` T times."""
        return None


@dataclass
class Unrolled:
    state: object                                  # the last layer's state after the last step
    records: list = field(default_factory=list)    # per layer: the steps' records (empty where None)
    signals: list = field(default_factory=list)    # per layer: its spikes, (T*B, ...) time-major, if kept


def _map(fn, *values):
    if isinstance(values[0], tuple):
        return tuple(fn(*parts) for parts in zip(*values))
    return fn(*values)


def unroll(spec: NetSpec, arithmetic: Arithmetic, inputs, keep_signals: bool = False) -> Unrolled:
    """Run ``inputs`` (the first layer's input, (B, ...), held for T steps) through every layer."""
    steps = spec.timesteps
    batch = len(inputs[0] if isinstance(inputs, tuple) else inputs)
    result = Unrolled(None)
    signal = inputs
    for index, layer in enumerate(spec.layers):
        drive = arithmetic.synaptic_sum(index, layer, signal)
        fused = arithmetic.whole_layer(index, layer, drive, batch)
        if fused is not None:
            signal = fused
            result.records.append([])
            if keep_signals:
                result.signals.append(signal)
            continue

        def at(t, drive=drive, constant=index == 0):
            return drive if constant else _map(lambda d: d[t * batch:(t + 1) * batch], drive)

        state = arithmetic.initial_state(index, layer, at(0))
        spikes, records = [], []
        for t in range(steps):
            state, fired, record = arithmetic.step(index, layer, state, at(t), t)
            spikes.append(fired)
            if record is not None:
                records.append(record)
        signal = _map(lambda *s: torch.cat(s), *spikes)
        result.records.append(records)
        if keep_signals:
            result.signals.append(signal)
        result.state = state
    return result


def per_sample(signal: torch.Tensor, timesteps: int) -> torch.Tensor:
    """(T*B, ...) time-major rows -> (B, neurons, T), the probes' layout."""
    return signal.reshape(timesteps, -1, *signal.shape[1:]).flatten(2).permute(1, 2, 0)
