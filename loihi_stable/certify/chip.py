"""Certificates for what Loihi runs: S-IBP in the chip's integer domain, read from the NetX file.

It uses only the exported integers (8-bit weights, per-step 12-bit decays, threshold
mantissa) and the emulator's arithmetic (bit-exact to Loihi2SimCfg), with each end of
every interval pushed through the same monotone integer maps: graded input payloads
round(64 x), the first synapse's >> 6, the truncating leak, 24-bit saturation, strict >.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .. import fixed_point as fx


@dataclass
class ChipCertificate:
    readout_lo: np.ndarray     # (B, K) bounds of the readout voltage (chip units)
    readout_hi: np.ndarray
    margin_lo: np.ndarray      # (B, K) lower bounds of readout[y] - readout[j]
    verified: np.ndarray       # (B,) bool


@torch.no_grad()
def chip_bounds(spec, x: np.ndarray, y: np.ndarray, eps: float) -> ChipCertificate:
    """Integer S-IBP over the L-inf ball of radius eps around each sample of x (N, features)."""
    from netx_export.emulator import _arith_shift, chip_leak, layer_schedules
    from netx_export.lava_runner import input_payload

    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    payload = [torch.from_numpy(input_payload(x + sign * eps, spec.input_scale)).long() for sign in (-1, 1)]
    weights = [torch.from_numpy(layer.weight.astype(np.int64)) for layer in spec.layers]
    schedules = layer_schedules(spec)
    thresholds = [int(layer.neuron["vThMant"]) << 6 for layer in spec.layers]

    def interval_matmul(lo, hi, w):
        pos, neg = w.clamp(min=0), w.clamp(max=0)
        return lo @ pos.T + hi @ neg.T, hi @ pos.T + lo @ neg.T

    first = [(_arith_shift(c, spec.input_weight_exp) << 6) for c in interval_matmul(*payload, weights[0])]
    state = [(torch.zeros(len(x), w.shape[0], dtype=torch.int64),) * 2 for w in weights]
    last_spikes = []
    for t in range(spec.timesteps):
        signal = None
        for i, (w, dv) in enumerate(zip(weights, schedules)):
            current = first if i == 0 else [c << 6 for c in interval_matmul(*signal, w)]
            v_lo, v_hi = ((chip_leak(u, dv[t]) + c).clamp(-fx.STATE_LIMIT, fx.STATE_LIMIT)
                          for u, c in zip(state[i], current))
            s_lo, s_hi = (v_lo > thresholds[i]).long(), (v_hi > thresholds[i]).long()
            undecided = s_hi - s_lo
            zero = torch.zeros_like(v_lo)
            state[i] = ((1 - s_hi) * v_lo + undecided * torch.minimum(v_lo, zero),
                        (1 - s_hi) * v_hi + undecided * max(thresholds[i], 0))
            signal = (s_lo, s_hi)
            if i == len(weights) - 2:
                last_spikes.append(signal)
    readout_lo, readout_hi = state[-1]
    # margins: the readout integrates (W_y - W_j) s[t] << 6 exactly unless it saturates
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    w = weights[-1]
    diff = w[y_t].unsqueeze(1) - w.unsqueeze(0)                       # (B, K, N)
    margin = torch.zeros(len(x), w.shape[0], dtype=torch.int64)
    for s_lo, s_hi in last_spikes:
        margin += ((diff.clamp(min=0) @ s_lo.unsqueeze(-1) + diff.clamp(max=0) @ s_hi.unsqueeze(-1)).squeeze(-1) << 6)
    saturated = (readout_hi.abs() >= fx.STATE_LIMIT) | (readout_lo.abs() >= fx.STATE_LIMIT)
    fallback = readout_lo.gather(1, y_t[:, None]) - readout_hi     # sound with saturation, looser
    margin = torch.where(saturated.any(1, keepdim=True), fallback, margin)
    margin[torch.arange(len(x)), y_t] = 0
    others = margin.clone()
    others[torch.arange(len(x)), y_t] = torch.iinfo(torch.int64).max
    return ChipCertificate(readout_lo.numpy(), readout_hi.numpy(), margin.numpy(), (others > 0).all(1).numpy())


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
    for sample in sample_ball(x, eps, points, seed):
        readout = emulate(spec, sample).readout
        inside &= bool(((readout >= cert.readout_lo) & (readout <= cert.readout_hi)).all())
        verified_broken += int((cert.verified & (readout.argmax(1) != np.asarray(y))).sum())
    return {"points_per_sample": points, "readouts_inside_bounds": inside,
            "verified_samples_broken": verified_broken}
