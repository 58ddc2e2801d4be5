"""A batched fixed-point emulator of an exported network, bit-exact to Lava's Loihi2SimCfg.

It reads only the integers in the HDF5 file (8-bit weights, biases, 12-bit decays, threshold
mantissas) and runs ``chip_unroll``'s layer-major loop with exact integer arithmetic
(``chip_kernel``'s step on float64 integers, sums in float32 where a bound proves them exact)
on all samples at once. Each sample starts from zero state, which is what the Lava runner's
per-layer resets give.
"""
from __future__ import annotations

import numpy as np
import torch

from loihi_stable import chip_kernel as kernel
from netx_export.runtime.chip_unroll import (Arithmetic, can_wrap, layer_bias, layer_schedules, per_sample, pooled_kernel,
                                             sum_dtype, synaptic_sum, unroll, weight_tensor)
from netx_export.fileformat.netx_file import ChipRun, NetSpec, encode_inputs

MEMORY_BUDGET = 1 << 30   # bytes of layer state per batch: VGG11 at 32x32 runs in well under 4 GB


class ExactArithmetic(Arithmetic):
    """The chip's integers: what Lava computes, on float64 values that hold integers."""

    def __init__(self, spec: NetSpec, probe_voltage: bool = False):
        self.spec, self.probe_voltage = spec, probe_voltage
        self.weights = [weight_tensor(layer, sum_dtype(spec, i)) for i, layer in enumerate(spec.layers)]
        self.pooled = [None if (k := pooled_kernel(layer)) is None else torch.from_numpy(k).to(w.dtype)
                       for layer, w in zip(spec.layers, self.weights)]
        self.biases = [layer_bias(layer) for layer in spec.layers]
        self.schedules = [s.tolist() for s in layer_schedules(spec)]
        self.wraps = [can_wrap(spec, i) for i in range(len(spec.layers))]

    def synaptic_sum(self, index, layer, signal):
        total = synaptic_sum(layer, signal, self.weights[index], self.pooled[index]).double()
        return kernel.wrap_conv_activation(total) if self.wraps[index] else total  # Lava's conv synapse wraps

    def whole_layer(self, index, layer, activation, batch):
        """A hidden layer whose current does not persist (iDecay = 4096: every exported file), unprobed:
        its T currents in one pass, then per step only the voltage and the spike test, the spikes written
        straight into the next layer's input in the dtype it sums in (no per-step concatenation or copy)."""
        if self.probe_voltage or index == len(self.spec.layers) - 1 or layer.i_decay != kernel.DECAY_UNITY:
            return None
        steps = self.spec.timesteps
        current = kernel.wrap_current(kernel.activation_current(activation))
        rows = current.shape[0] * (steps if index == 0 else 1)  # the first layer's input is held for T steps
        spikes = torch.empty((rows, *current.shape[1:]), dtype=self.weights[index + 1].dtype)
        v = torch.zeros((batch, *current.shape[1:]), dtype=current.dtype)
        for t in range(steps):
            step = current if index == 0 else current[t * batch:(t + 1) * batch]
            fired, v = kernel.fire(kernel.voltage_step(v, step, self.schedules[index][t], self.biases[index]),
                                   layer.threshold)
            spikes[t * batch:(t + 1) * batch] = fired
        return spikes

    def initial_state(self, index, layer, drive):
        return torch.zeros_like(drive), torch.zeros_like(drive)

    def step(self, index, layer, state, drive, t):
        current, v, spikes, _ = kernel.neuron_step(*state, drive, layer.i_decay, self.schedules[index][t],
                                                   layer.threshold, self.biases[index])
        return (current, v), spikes, v.flatten(1) if self.probe_voltage and index < len(self.spec.layers) - 1 else None


def default_batch(spec: NetSpec) -> int:
    """Samples per batch whose layer state (drive, spikes, voltages over T steps) fits MEMORY_BUDGET."""
    widest = max(layer.neurons for layer in spec.layers)
    per_sample_bytes = spec.timesteps * widest * 8 * 4
    return int(min(4096, max(1, MEMORY_BUDGET // per_sample_bytes)))


class Emulator:
    """An exported network ready to run: its integers converted once, not per call (VGG11's dense weights
    alone are 50M values; Square against the chip calls it thousands of times)."""

    def __init__(self, spec: NetSpec):
        self.spec, self.arithmetic = spec, ExactArithmetic(spec)

    @torch.no_grad()
    def __call__(self, x: np.ndarray, probe_layers: bool = False, batch_size: int | None = None) -> ChipRun:
        """Run samples ``x`` (N, features) in [0, 1]; same outputs as ``lava_runner.run_network``."""
        spec = self.spec
        payload = encode_inputs(spec, x)
        batch_size = batch_size or default_batch(spec)
        self.arithmetic.probe_voltage = probe_layers
        readouts, spikes, voltages = [], [], []
        for start in range(0, len(payload), batch_size):
            run = unroll(spec, self.arithmetic, torch.from_numpy(payload[start:start + batch_size]),
                         keep_signals=probe_layers)
            readouts.append(run.state[1].numpy().astype(np.int64))
            if probe_layers:
                hidden = range(len(spec.layers) - 1)
                spikes.append([per_sample(run.signals[i], spec.timesteps).numpy().astype(np.int64) for i in hidden])
                voltages.append([torch.stack(run.records[i], -1).numpy().astype(np.int64) for i in hidden])
        classes = spec.layers[-1].weight.shape[0]
        result = ChipRun(np.concatenate(readouts) if readouts else np.zeros((0, classes), np.int64))
        if probe_layers:
            result.spikes = [np.concatenate(layer) for layer in zip(*spikes)]
            result.voltage = [np.concatenate(layer) for layer in zip(*voltages)]
        return result


def emulate(spec: NetSpec, x: np.ndarray, probe_layers: bool = False, batch_size: int | None = None) -> ChipRun:
    """Run samples ``x`` (N, features) in [0, 1] once; same outputs as ``lava_runner.run_network``."""
    return Emulator(spec)(x, probe_layers, batch_size)
