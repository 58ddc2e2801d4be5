"""A batched fixed-point emulator of an exported network, bit-exact to Lava's Loihi2SimCfg.

It reads only the integers in the HDF5 file (8-bit weights, 12-bit decays, threshold
mantissa) and applies ``chip_kernel``'s neuron step in int64 on all samples at once; the
synaptic sums are a = W s (first layer: a = W p on graded payloads p = round(64 x)).
Each sample starts from zero state, which is what the Lava runner's per-layer resets give.
"""
from __future__ import annotations

import contextlib

import numpy as np
import torch

from loihi_stable import chip_kernel as kernel
from netx_export.lava_runner import ChipRun, NetSpec, input_payload


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
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    with one_thread():
        runs = [_emulate_batch(spec, x[i:i + batch_size], probe_layers) for i in range(0, len(x), batch_size)]
    readout = np.concatenate([r.readout for r in runs]) if runs else np.zeros((0, spec.layers[-1].weight.shape[0]))
    run = ChipRun(readout.astype(np.int64))
    if probe_layers:
        run.spikes = [np.concatenate([r.spikes[i] for r in runs]) for i in range(len(spec.layers) - 1)]
        run.voltage = [np.concatenate([r.voltage[i] for r in runs]) for i in range(len(spec.layers) - 1)]
    return run


def first_layer_activation(spec: NetSpec, payload: torch.Tensor) -> torch.Tensor:
    """Synaptic sum a = W p of the first layer for graded input payloads (B, features)."""
    return payload @ torch.from_numpy(spec.layers[0].weight.astype(np.int64)).T


def layer_schedules(spec: NetSpec) -> list[torch.Tensor]:
    """Per-step integer voltage decay of every layer (constant vDecay for LIF and the readout)."""
    return [torch.from_numpy(np.asarray(layer.dv_schedule, dtype=np.int64)) if layer.dv_schedule is not None
            else torch.full((spec.timesteps,), int(layer.neuron["vDecay"]), dtype=torch.int64)
            for layer in spec.layers]


@torch.no_grad()
def _emulate_batch(spec: NetSpec, x: np.ndarray, probe_layers: bool) -> ChipRun:
    steps, n = spec.timesteps, len(x)
    payload = torch.from_numpy(input_payload(x, spec.input_scale)).long()
    weights = [torch.from_numpy(layer.weight.astype(np.int64)) for layer in spec.layers]
    schedules = layer_schedules(spec)
    currents = [torch.zeros(n, w.shape[0], dtype=torch.int64) for w in weights]
    voltages = [torch.zeros_like(c) for c in currents]
    spikes_out = [[] for _ in spec.layers[:-1]]
    volts_out = [[] for _ in spec.layers[:-1]]
    first_activation = first_layer_activation(spec, payload)  # constant over time: direct encoding
    for t in range(steps):
        signal = None
        for i, (layer, w, dv) in enumerate(zip(spec.layers, weights, schedules)):
            activation = first_activation if i == 0 else signal @ w.T
            currents[i], voltages[i], spikes, _ = kernel.neuron_step(
                currents[i], voltages[i], activation, layer.i_decay, dv[t], layer.threshold)
            signal = spikes.long()
            if probe_layers and i < len(weights) - 1:
                spikes_out[i].append(signal)
                volts_out[i].append(voltages[i])
    run = ChipRun(voltages[-1].numpy())
    if probe_layers:
        run.spikes = [torch.stack(s, -1).numpy() for s in spikes_out]
        run.voltage = [torch.stack(v, -1).numpy() for v in volts_out]
    return run
