"""S-CROWN: linear (CROWN-style) bounds of the margins, back-substituted through time.

The network is unrolled over T steps and the margin spec C * mean_t(W_out s_L[t]) is
propagated backwards to the input with linear relaxations of the two spiking
non-linearities, using S-IBP's voltage bounds [l, h] as intermediate bounds
(CROWN-IBP, Zhang et al. 2020):
  spike  s = H(v - th):      upper (v - l)/(th - l) or 1, lower (v - th)/(h - th) or 0
  reset  u = v * 1[v <= th]: upper v or th,              lower l (h - v)/(h - l) or 0
(the line or the constant with the smaller area, per neuron). Quantized models add
the chip's rounding as bounded error terms: the input grid is part of the input box and
each truncated leak costs one unit of its layer's grid, [-1/scale, 1/scale].
Why not auto_LiRPA: it has no Heaviside/reset relaxations, traces one static graph
(not slayer's time loop), and does not install beside torch 2.13 here.
"""
from __future__ import annotations

import torch

from .. import chip_kernel as kernel
from .. import fixed_point as fx
from .intervals import Box
from .sibp import SpikingBounds, input_bounds, synapse_weight


def _spike_relaxation(v: Box, th: float):
    """(a_lo, b_lo, a_hi, b_hi) with a_lo v + b_lo <= H(v - th) <= a_hi v + b_hi on [l, h]."""
    l, h = v.lo, v.hi
    on, off = l > th, h <= th
    undecided = ~(on | off)
    zero = torch.zeros_like(l)
    below, above = (th - l).clamp(min=1e-12), (h - th).clamp(min=1e-12)
    upper_line = undecided & (above < below)
    lower_line = undecided & (below < above)
    a_hi = torch.where(upper_line, 1 / below, zero)
    b_hi = torch.where(upper_line, -l / below, torch.where(off, zero, zero + 1))
    a_lo = torch.where(lower_line, 1 / above, zero)
    b_lo = torch.where(lower_line, -th / above, torch.where(on, zero + 1, zero))
    return a_lo, b_lo, a_hi, b_hi


def _reset_relaxation(v: Box, th: float):
    """Linear bounds of u = v * 1[v <= th] on [l, h] (th > 0)."""
    l, h = v.lo, v.hi
    on, off = l > th, h <= th
    undecided = ~(on | off)
    zero = torch.zeros_like(l)
    span = (h - l).clamp(min=1e-12)
    line_lo = undecided & (l < 0)
    a_lo = torch.where(off, zero + 1, torch.where(line_lo, -l / span, zero))
    b_lo = torch.where(line_lo, l * h / span, zero)
    identity_hi = undecided & ((h**2 - th**2) / 2 < (th - l) ** 2 / 2 + th * (h - th))
    a_hi = torch.where(off | identity_hi, zero + 1, zero)
    b_hi = torch.where(undecided & ~identity_hi, zero + th, zero)
    return a_lo, b_lo, a_hi, b_hi


def _through(lam: torch.Tensor, relaxation) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficient on v and constant for the lower bound of lam . f(v)."""
    a_lo, b_lo, a_hi, b_hi = (r.unsqueeze(1) for r in relaxation)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    return pos * a_lo + neg * a_hi, (pos * b_lo + neg * b_hi).sum(-1)


def _error_term(lam: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return (lam.clamp(min=0) * low + lam.clamp(max=0) * high).sum(-1)


@torch.no_grad()
def crown_margin_lower_bound(model, x: torch.Tensor, y: torch.Tensor, eps: float,
                             ibp: SpikingBounds) -> torch.Tensor:
    """Lower bounds (B, K) of logit[y] - logit[j] over the eps-ball (-inf where CROWN cannot say)."""
    dtype = torch.float64
    exact = model.blocks[0].neuron.arithmetic == "chip"
    steps, layers = model.config.timesteps, len(model.blocks)
    weights = [synapse_weight(b.synapse).to(dtype) for b in model.blocks]
    decays = [b.neuron.effective_decay().detach().to(dtype) for b in model.blocks]
    thresholds = [b.neuron.threshold for b in model.blocks]
    grids = [1 / fx.state_scale(b.neuron.payload_scale) for b in model.blocks]  # one chip unit per layer
    volts = [Box(v.lo.detach().to(dtype), v.hi.detach().to(dtype)) for v in ibp.voltage]
    w_out = synapse_weight(model.readout.synapse).detach().to(dtype)
    spec = w_out[y].unsqueeze(1) - w_out.unsqueeze(0)                  # (B, K, N_L)
    batch, classes = spec.shape[:2]
    bias = torch.zeros(batch, classes, dtype=dtype)
    lam_s = [[torch.zeros(batch, classes, w.shape[0], dtype=dtype) for _ in range(steps)] for w in weights]
    lam_u = [[torch.zeros_like(lam_s[i][0]) for _ in range(steps)] for i in range(layers)]
    for t in range(steps):
        lam_s[-1][t] = spec / steps
    lam_x = torch.zeros(batch, classes, weights[0].shape[1], dtype=dtype)
    for t in reversed(range(steps)):
        for i in reversed(range(layers)):
            v = Box(volts[i].lo[..., t], volts[i].hi[..., t])
            a_s, c_s = _through(lam_s[i][t], _spike_relaxation(v, thresholds[i]))
            a_u, c_u = _through(lam_u[i][t], _reset_relaxation(v, thresholds[i]))
            lam_v = a_s + a_u
            bias += c_s + c_u
            if t > 0:  # v[t] = decay[t] * u[t-1] + I[t] (+ the leak's truncation)
                lam_u[i][t - 1] += lam_v * decays[i][t]
                if exact:
                    bias += _error_term(lam_v, -grids[i], grids[i])
            if i > 0:
                lam_s[i - 1][t] += lam_v @ weights[i]
            else:
                lam_x += lam_v @ weights[0]
    box = input_bounds(model, x, eps)
    lo, hi = box.lo[..., 0].to(dtype).unsqueeze(1), box.hi[..., 0].to(dtype).unsqueeze(1)
    lower = bias + (lam_x.clamp(min=0) * lo + lam_x.clamp(max=0) * hi).sum(-1)
    # 24-bit saturation (and the current's wrap, which S-IBP bounds by it) is not modelled here
    saturates = torch.stack([torch.maximum(v.lo.abs(), v.hi.abs()).amax((1, 2)) / (kernel.VOLTAGE_LIMIT * grid)
                             for v, grid in zip(volts, grids)], 1).amax(1)
    lower[saturates >= 1] = -torch.inf
    lower[torch.arange(batch), y] = 0.0
    return lower.to(x.dtype)
