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
from loihi_stable.certify.intervals import margin_rows
from netx_export.runtime.chip_unroll import Arithmetic, layer_bias, layer_schedules, sum_dtype, synaptic_sum, unroll, weight_tensor
from netx_export.fileformat.netx_file import NetSpec, encode_inputs

UNVERIFIABLE = torch.iinfo(torch.int64).min // 2


@dataclass
class ChipCertificate:
    readout_lo: np.ndarray     # (B, K) bounds of the readout voltage (chip units)
    readout_hi: np.ndarray
    margin_lo: np.ndarray      # (B, K) lower bounds of readout[y] - readout[j]
    verified: np.ndarray       # (B,) bool
    readout_may_fire: np.ndarray   # (B,) bool: the readout may cross its threshold (margins from bounds)
    may_wrap: np.ndarray       # (B,) bool: some current may wrap (nothing is claimed)


class IntervalArithmetic(Arithmetic):
    """Both ends of every interval through the chip's monotone integer maps; wraps are reported."""

    def __init__(self, spec: NetSpec, batch: int):
        self.spec = spec
        dtypes = [sum_dtype(spec, i) for i in range(len(spec.layers))]
        self.weights = [(weight_tensor(layer, d, +1), weight_tensor(layer, d, -1)) for layer, d in zip(spec.layers, dtypes)]
        self.schedules = [s.tolist() for s in layer_schedules(spec)]
        self.may_wrap = torch.zeros(batch, dtype=torch.bool)

    def _wraps(self, rows: torch.Tensor) -> torch.Tensor:
        """Rows (T*B or B) -> per sample: does any row of the sample hold a possible wrap?"""
        return rows.flatten(1).any(1).view(-1, len(self.may_wrap)).any(0)

    def synaptic_sum(self, index, layer, signal):
        lo, hi = signal
        pos, neg = self.weights[index]
        a_lo, a_hi = (synaptic_sum(layer, s, pos).double() + synaptic_sum(layer, t, neg).double()
                      for s, t in ((lo, hi), (hi, lo)))
        if layer.kind == "conv":  # a conv synapse's 24-bit wrap
            self.may_wrap |= self._wraps((a_hi >= kernel.WRAP) | (a_lo < -kernel.WRAP))
        return a_lo, a_hi

    def initial_state(self, index, layer, drive):
        zero = torch.zeros_like(drive[0])
        return (zero, zero), (zero, zero)

    def step(self, index, layer, state, drive, t):
        (u_lo, u_hi), voltage = state
        u_lo, u_hi, wraps = kernel.current_step_interval(u_lo, u_hi, *drive, layer.i_decay)
        self.may_wrap |= self._wraps(wraps)
        v_lo, v_hi = kernel.voltage_step_interval(*voltage, u_lo, u_hi, self.schedules[index][t], layer_bias(layer))
        s_lo, s_hi, after_lo, after_hi = kernel.fire_interval(v_lo, v_hi, layer.threshold)
        last = len(self.spec.layers) - 1
        record = None
        if index == last:  # the readout fired or saturated somewhere: its margins come from its bounds
            record = (s_hi > 0).any(1) | (v_lo <= -kernel.VOLTAGE_LIMIT).any(1) | (v_hi >= kernel.VOLTAGE_LIMIT).any(1)
        elif index == last - 1:  # what the readout integrates
            record = (s_lo.flatten(1).long(), s_hi.flatten(1).long())
        return ((u_lo, u_hi), (after_lo, after_hi)), (s_lo, s_hi), record


def readout_margins(spec: NetSpec, y: torch.Tensor, last_spikes: list) -> torch.Tensor:
    """Lower bounds of readout[y] - readout[j] while the readout neither fires nor saturates: it then
    integrates (W_y - W_j) s[t] << 6 exactly, plus (b_y - b_j) << 6 per step."""
    w = torch.from_numpy(spec.layers[-1].weight.astype(np.int64))
    diff = margin_rows(w, y)                                        # (B, K, N)
    margin = torch.zeros(len(y), w.shape[0], dtype=torch.int64)
    for s_lo, s_hi in last_spikes:
        margin += kernel.activation_current(
            (diff.clamp(min=0) @ s_lo.unsqueeze(-1) + diff.clamp(max=0) @ s_hi.unsqueeze(-1)).squeeze(-1))
    if spec.layers[-1].bias is not None:
        b = torch.from_numpy(spec.layers[-1].bias.astype(np.int64))
        margin += spec.timesteps * (margin_rows(b, y) << kernel.BIAS_SHIFT)
    return margin


@torch.no_grad()
def chip_bounds(spec, x: np.ndarray, y: np.ndarray, eps: float) -> ChipCertificate:
    """Integer S-IBP over the L-inf ball of radius eps around each sample of x (N, features)."""
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    n = len(x)
    payload = tuple(torch.from_numpy(encode_inputs(spec, x + sign * eps)).double() for sign in (-1, 1))
    arithmetic = IntervalArithmetic(spec, n)
    run = unroll(spec, arithmetic, payload)
    readout_lo, readout_hi = (v.long() for v in run.state[1])
    readout_fires = torch.stack(run.records[-1]).any(0)
    may_wrap = arithmetic.may_wrap
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.long)
    margin = readout_margins(spec, y_t, run.records[-2] if len(spec.layers) > 1 else [])
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
    from netx_export.runtime.emulator import Emulator

    inside, verified_broken = True, 0
    bounded = ~cert.may_wrap[:, None]  # where a current may wrap the certificate claims nothing
    chip = Emulator(spec)
    for sample in sample_ball(x, eps, points, seed):
        readout = chip(sample).readout
        inside &= bool((((readout >= cert.readout_lo) & (readout <= cert.readout_hi)) | ~bounded).all())
        verified_broken += int((cert.verified & (readout.argmax(1) != np.asarray(y))).sum())
    return {"points_per_sample": points, "readouts_inside_bounds": inside,
            "verified_samples_broken": verified_broken}


def certifier(spec: NetSpec, check_points: int = 8):
    """The chip's certificate as ``loihi_stable.certify.certify`` takes it: (x, y, eps) -> (verified per
    sample, the check of the bounds on ``check_points`` random points per ball, or None for 0)."""
    def certify_chip(x: np.ndarray, y: np.ndarray, eps: float):
        cert = chip_bounds(spec, x, y, eps)
        check = check_chip_certificate(spec, cert, x, y, eps, check_points) if check_points else None
        return cert.verified, check
    return certify_chip
