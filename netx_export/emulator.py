"""A batched fixed-point emulator of an exported network, bit-exact to Lava's Loihi2SimCfg.

It reads only the integers in the HDF5 file (8-bit weights, biases, 12-bit decays, threshold
mantissas) and applies ``chip_kernel``'s neuron step in int64 on all samples at once; the
synaptic sums are a = W s, dense or conv (first layer: on graded payloads p = round(64 x));
convolutions run in float64, exact for integers below 2^53.
Each sample starts from zero state, which is what the Lava runner's per-layer resets give.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch
import torch.nn.functional as F

from loihi_stable import chip_kernel as kernel
from netx_export.lava_runner import ChipRun
from netx_export.netx_file import LayerSpec, NetSpec, encode_inputs


@contextlib.contextmanager
def one_thread():
    """Its matmuls are small: one thread is as fast as two on an idle machine, and a second
    thread halves the rate (or worse) once another process competes for the cores."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def emulate(spec: NetSpec, x: np.ndarray, probe_layers: bool = False, batch_size: int = 4096) -> ChipRun:
    """Run samples ``x`` (N, features) in [0, 1]; same outputs as ``lava_runner.run_network``."""
    payload = encode_inputs(spec, x)
    with one_thread():
        runs = [_emulate_batch(spec, payload[i:i + batch_size], probe_layers)
                for i in range(0, len(payload), batch_size)]
    readout = np.concatenate([r.readout for r in runs]) if runs else np.zeros((0, spec.layers[-1].weight.shape[0]))
    run = ChipRun(readout.astype(np.int64))
    if probe_layers:
        run.spikes = [np.concatenate([r.spikes[i] for r in runs]) for i in range(len(spec.layers) - 1)]
        run.voltage = [np.concatenate([r.voltage[i] for r in runs]) for i in range(len(spec.layers) - 1)]
    return run


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
            else torch.full((spec.timesteps,), int(layer.neuron["vDecay"]), dtype=torch.int64)
            for layer in spec.layers]


@torch.no_grad()
def _emulate_batch(spec: NetSpec, payload: np.ndarray, probe_layers: bool) -> ChipRun:
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
            if probe_layers and i < len(spec.layers) - 1:
                spikes_out[i].append(signal.flatten(1))
                volts_out[i].append(voltages[i].flatten(1))
    run = ChipRun(voltages[-1].numpy())
    if probe_layers:
        run.spikes = [torch.stack(s, -1).numpy() for s in spikes_out]
        run.voltage = [torch.stack(v, -1).numpy() for v in volts_out]
    return run
