"""Certificates for what Loihi runs: S-IBP in the chip's integer domain, read from the NetX file.

It uses only the exported integers (8-bit weights, per-step 12-bit decays, threshold
mantissa) and ``chip_kernel``'s interval step, the emulator's arithmetic: each end of every
interval goes through the same monotone integer maps (graded payloads round(64 x), the
truncating leak, 24-bit saturation, strict >, reset). Where the current may wrap, nothing is
claimed. The readout is a neuron too: its threshold (vThMant << 6 = 8,388,544) lies below the
24-bit limit, so a wide last hidden layer can make it fire; then only the interval bounds of
the readout, which follow the reset, are used.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from loihi_stable import chip_kernel as kernel
from netx_export.emulator import layer_bias, layer_schedules, unwrapped_sum
from netx_export.netx_file import LayerSpec, encode_inputs

UNVERIFIABLE = torch.iinfo(torch.int64).min // 2


@dataclass
class ChipCertificate:
    readout_lo: np.ndarray     # (B, K) bounds of the readout voltage (chip units)
    readout_hi: np.ndarray
    margin_lo: np.ndarray      # (B, K) lower bounds of readout[y] - readout[j]
    verified: np.ndarray       # (B,) bool
    readout_may_fire: np.ndarray   # (B,) bool: the readout may cross its threshold (margins from bounds)
    may_wrap: np.ndarray       # (B,) bool: some current may wrap (nothing is claimed)


def _interval_sum(layer: LayerSpec, lo: torch.Tensor, hi: torch.Tensor):
    """Bounds of a = W s for s in [lo, hi], and where a conv synapse's 24-bit wrap may fire."""
    pos, neg = np.clip(layer.weight, 0, None), np.clip(layer.weight, None, 0)
    a_lo = unwrapped_sum(layer, lo, pos) + unwrapped_sum(layer, hi, neg)
    a_hi = unwrapped_sum(layer, hi, pos) + unwrapped_sum(layer, lo, neg)
    may_wrap = ((a_hi >= kernel.WRAP) | (a_lo < -kernel.WRAP)).flatten(1).any(1)
    return a_lo, a_hi, may_wrap if layer.kind == "conv" else torch.zeros_like(may_wrap)


@torch.no_grad()
def chip_bounds(spec, x: np.ndarray, y: np.ndarray, eps: float) -> ChipCertificate:
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
    return ChipCertificate(readout_lo.numpy(), readout_hi.numpy(), margin.numpy(), (others > 0).all(1).numpy(),
                           readout_fires.numpy(), may_wrap.numpy())


def sample_ball(x: np.ndarray, eps: float, points: int, seed: int = 0) -> np.ndarray:
    """Random points of the L-inf ball in [0, 1]: corners and uniform draws, (points, N, features)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(x, dtype=np.float32)
    draws = []
    for k in range(points):
        noise = rng.choice([-1.0, 1.0], size=x.shape) if k % 2 == 0 else rng.uniform(-1.0, 1.0, size=x.shape)
        draws.append(np.clip(x + eps * noise.astype(np.float32), 0.0, 1.0))
    return np.stack(draws)


def check_chip_certificate(spec, cert: ChipCertificate, x: np.ndarray, y: np.ndarray, eps: float,
                           points: int = 16, seed: int = 0) -> dict:
    """Run random points of each ball on the emulator: do readouts stay in the bounds?"""
    from netx_export.emulator import emulate

    inside, verified_broken = True, 0
    bounded = ~cert.may_wrap[:, None]  # where a current may wrap the certificate claims nothing
    for sample in sample_ball(x, eps, points, seed):
        readout = emulate(spec, sample).readout
        inside &= bool((((readout >= cert.readout_lo) & (readout <= cert.readout_hi)) | ~bounded).all())
        verified_broken += int((cert.verified & (readout.argmax(1) != np.asarray(y))).sum())
    return {"points_per_sample": points, "readouts_inside_bounds": inside,
            "verified_samples_broken": verified_broken}
