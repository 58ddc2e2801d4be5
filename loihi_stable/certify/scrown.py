"""S-CROWN: linear (CROWN-style) bounds of the margins, back-substituted through time.

The network is unrolled over T steps and the margin matrix C * mean_t(W_out s_L[t]) is
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

import copy
import math
from dataclasses import dataclass
from typing import Callable

import torch

from .. import chip_kernel as kernel
from .. import fixed_point as fx
from .intervals import Box, margin_rows
from .sibp import SpikingBounds, ibp_bounds, input_bounds, neuron_bounds, synapse_weight


def _area_slopes(v: Box, th: float) -> dict:
    """The smaller-area end of each relaxation family (0 or 1): the default slopes, and alpha-CROWN's start."""
    l, h = v.lo, v.hi
    return {"spike_hi": ((h - th) < (th - l)).to(l.dtype), "spike_lo": ((th - l) < (h - th)).to(l.dtype),
            "reset_hi": ((h**2 - th**2) / 2 < (th - l) ** 2 / 2 + th * (h - th)).to(l.dtype)}


def _spike_cases(v: Box, th: float):
    """(lo, hi, surely spiking, surely silent, undecided, zeros) of a voltage box against threshold th."""
    on, off = v.lo > th, v.hi <= th
    return v.lo, v.hi, on, off, ~(on | off), torch.zeros_like(v.lo)


def _spike_relaxation(v: Box, th: float, alpha_lo=None, alpha_hi=None):
    """(a_lo, b_lo, a_hi, b_hi) with a_lo v + b_lo <= H(v - th) <= a_hi v + b_hi on [l, h].

    For an undecided spike every upper line through (th, 1) with slope in [0, 1/(th - l)] and
    every lower line through (th, 0) with slope in [0, 1/(h - th)] is sound; ``alpha`` in [0, 1]
    picks the slope as a fraction of the largest (default: the smaller-area end, 0 or 1).
    """
    l, h, on, off, undecided, zero = _spike_cases(v, th)
    below, above = (th - l).clamp(min=1e-12), (h - th).clamp(min=1e-12)
    if alpha_hi is None or alpha_lo is None:
        area = _area_slopes(v, th)
        alpha_hi = area["spike_hi"] if alpha_hi is None else alpha_hi
        alpha_lo = area["spike_lo"] if alpha_lo is None else alpha_lo
    a_hi = torch.where(undecided, alpha_hi / below, zero)
    b_hi = torch.where(undecided, 1 - a_hi * th, torch.where(off, zero, zero + 1))
    a_lo = torch.where(undecided, alpha_lo / above, zero)
    b_lo = torch.where(undecided, -a_lo * th, torch.where(on, zero + 1, zero))
    return a_lo, b_lo, a_hi, b_hi


def _reset_relaxation(v: Box, th: float, alpha_hi=None):
    """Linear bounds of u = v * 1[v <= th] on [l, h] (th > 0).

    Lower: the chord from (l, l) to (h, 0) where l < 0, else 0. Upper, where undecided: any line
    through (th, th) with slope ``alpha_hi`` in [0, 1] (default: identity or the constant th,
    whichever encloses the smaller area).
    """
    l, h, on, off, undecided, zero = _spike_cases(v, th)
    span = (h - l).clamp(min=1e-12)
    line_lo = undecided & (l < 0)
    a_lo = torch.where(off, zero + 1, torch.where(line_lo, -l / span, zero))
    b_lo = torch.where(line_lo, l * h / span, zero)
    if alpha_hi is None:
        alpha_hi = _area_slopes(v, th)["reset_hi"]
    a_hi = torch.where(off, zero + 1, torch.where(undecided, alpha_hi, zero))
    b_hi = torch.where(undecided, th * (1 - alpha_hi), zero)
    return a_lo, b_lo, a_hi, b_hi


def _total(z: torch.Tensor) -> torch.Tensor:
    """Sum over everything but the (batch, margin) axes."""
    return z.flatten(2).sum(-1)


def _through(lam: torch.Tensor, relaxation) -> tuple[torch.Tensor, torch.Tensor]:
    """Coefficient on v and constant for the lower bound of lam . f(v)."""
    a_lo, b_lo, a_hi, b_hi = (r.unsqueeze(1) for r in relaxation)
    pos, neg = lam.clamp(min=0), lam.clamp(max=0)
    return pos * a_lo + neg * a_hi, _total(pos * b_lo + neg * b_hi)


def _error_term(lam: torch.Tensor, low: float, high: float) -> torch.Tensor:
    return _total(lam.clamp(min=0) * low + lam.clamp(max=0) * high)


@dataclass
class AffineMap:
    """A spiking layer's synapse as an affine map of the previous layer's spikes (or the input):
    current = L(s) + offset. ``adjoint`` maps coefficients on the current back onto s (L^T)."""

    adjoint: Callable[[torch.Tensor], torch.Tensor]
    offset: torch.Tensor | None      # (1, *current shape), None for no constant term


def _dense_maps(model, dtype) -> list[AffineMap]:
    weights = [synapse_weight(b.synapse).detach().to(dtype) for b in model.blocks]
    return [AffineMap(lambda lam, w=w: lam @ w, None) for w in weights]


def _module_adjoint(function, in_shape):
    """L^T of an affine torch function, by differentiating lam . f(z) in z (exact: f is affine)."""
    def adjoint(lam: torch.Tensor) -> torch.Tensor:
        flat = lam.reshape(-1, *lam.shape[2:])
        z = torch.zeros(flat.shape[0], *in_shape, dtype=lam.dtype, device=lam.device, requires_grad=True)
        with torch.enable_grad():
            (grad,) = torch.autograd.grad(function(z), z, grad_outputs=flat, create_graph=lam.requires_grad)
        return grad.reshape(*lam.shape[:2], *in_shape)
    return adjoint


def _vgg_maps(model, shapes: list[tuple], dtype, device) -> list[AffineMap]:
    """The VGG family's synapses (padding and normalisation, conv, batch norm; the 2x2 pooling and
    flattening before a layer) as affine maps, in float64, batch norm with its running statistics."""
    from ..convnets import avg_pool

    twin = copy.deepcopy(model).to(dtype).eval()
    functions, pending = [], []
    for item in twin.layout:
        if item == "A":
            pending.append(avg_pool)
            continue
        synapse = twin.features[item].synapse
        functions.append(lambda z, pre=tuple(pending), f=synapse: f(_chain(pre, z)))
        pending = []
    for i, block in enumerate(twin.classifier):
        pre = tuple(pending) + (lambda z: z.flatten(1),) if i == 0 else ()
        functions.append(lambda z, pre=pre, f=block.synapse: f(_chain(pre, z)))
        pending = []
    maps = []
    for function, in_shape in zip(functions, shapes):
        with torch.no_grad():
            offset = function(torch.zeros(1, *in_shape, dtype=dtype, device=device))
        maps.append(AffineMap(_module_adjoint(function, in_shape), offset))
    return maps


def _chain(functions, z):
    for f in functions:
        z = f(z)
    return z


class BackSubstitution:
    """Lower bounds of linear functions of a network's states over the eps-ball, by substituting each
    state by its relaxation and its layer's affine map, back through every layer and time step to the
    input; for one choice of relaxation slopes (``alphas``; None: the smaller-area defaults)."""

    def __init__(self, model, volts: list[Box], maps: list[AffineMap], alphas: list[dict] | None = None):
        neurons = model.spiking_neurons
        self.model, self.volts, self.maps, self.alphas = model, volts, maps, alphas
        self.exact = neurons[0].arithmetic == "chip"
        self.decays = [n.effective_decay().detach().to(torch.float64) for n in neurons]
        self.thresholds = [n.threshold for n in neurons]
        self.grids = [1 / fx.state_scale(n.payload_scale) for n in neurons]  # one chip unit per layer

    def lower_bound(self, x: torch.Tensor, eps: float, start: dict, bias: torch.Tensor) -> torch.Tensor:
        """Lower bounds (B, K) of ``bias + sum of lam . state`` for the coefficients in ``start``
        ({(layer, time step): ("s" or "v", lam (B, K, *layer shape))})."""
        last_layer, last_t = max(i for i, _ in start), max(t for _, t in start)
        on_spikes = [[None] * (last_t + 1) for _ in range(last_layer + 1)]
        on_reset = [[None] * (last_t + 1) for _ in range(last_layer + 1)]
        on_voltage = {}
        for (i, t), (kind, lam) in start.items():
            if kind == "s":
                on_spikes[i][t] = lam
            else:
                on_voltage[(i, t)] = lam
        on_input = None
        for t in reversed(range(last_t + 1)):
            for i in reversed(range(last_layer + 1)):
                lam_v, bias = self._onto_voltage(i, t, on_voltage.get((i, t), 0), on_spikes[i][t], on_reset[i][t], bias)
                if not torch.is_tensor(lam_v):
                    continue
                bias = self._through_synapse(i, t, lam_v, on_reset, bias)
                back = self.maps[i].adjoint(lam_v)
                if i > 0:
                    on_spikes[i - 1][t] = _add(on_spikes[i - 1][t], back)
                else:
                    on_input = _add(on_input, back)
        lo, hi = _input_box(self.model, x, eps)
        lower = bias + _total(on_input.clamp(min=0) * lo.unsqueeze(1) + on_input.clamp(max=0) * hi.unsqueeze(1))
        return self._unless_saturating(lower, last_layer)

    def _onto_voltage(self, i: int, t: int, lam_v, lam_s, lam_u, bias):
        """Coefficients on layer i's spikes and post-reset voltage at step t moved onto its voltage v[t]."""
        v = Box(self.volts[i].lo[..., t], self.volts[i].hi[..., t])
        slopes = {k: a[..., t] for k, a in self.alphas[i].items()} if self.alphas else {}
        if lam_s is not None:
            a_s, c_s = _through(lam_s, _spike_relaxation(v, self.thresholds[i], slopes.get("spike_lo"),
                                                         slopes.get("spike_hi")))
            lam_v, bias = lam_v + a_s, bias + c_s
        if lam_u is not None:
            a_u, c_u = _through(lam_u, _reset_relaxation(v, self.thresholds[i], slopes.get("reset_hi")))
            lam_v, bias = lam_v + a_u, bias + c_u
        return lam_v, bias

    def _through_synapse(self, i: int, t: int, lam_v, on_reset, bias):
        """v[t] = decay[t] * u[t-1] + I[t] (+ the leak's truncation): the u[t-1] share and I[t]'s offset."""
        offset = self.maps[i].offset
        if offset is not None:
            bias = bias + _total(lam_v * offset.unsqueeze(1))
        if t > 0:
            on_reset[i][t - 1] = _add(on_reset[i][t - 1], lam_v * self.decays[i][t])
            if self.exact:
                bias = bias + _error_term(lam_v, -self.grids[i], self.grids[i])
        return bias

    def _unless_saturating(self, lower: torch.Tensor, last_layer: int) -> torch.Tensor:
        """-inf for samples where a voltage box reaches the 24-bit limit (saturation, and the current's
        wrap that S-IBP bounds by it, are not modelled here)."""
        if not self.exact:
            return lower
        saturates = torch.stack([torch.maximum(v.lo.abs(), v.hi.abs()).flatten(1).amax(1) / (kernel.VOLTAGE_LIMIT * grid)
                                 for v, grid in zip(self.volts[:last_layer + 1], self.grids)], 1).amax(1)
        return torch.where((saturates >= 1)[:, None], torch.full_like(lower, -torch.inf), lower)


def _margin_start(model, y: torch.Tensor, ibp: SpikingBounds) -> tuple[dict, torch.Tensor]:
    """The margins logit[y] - logit[j] = sum_t (W_y - W_j) s_L[t] / T (+ b_y - b_j) as a start."""
    dtype = torch.float64
    timesteps, last = model.config.timesteps, len(model.spiking_neurons) - 1
    w_out = ibp.readout_weight.detach().to(dtype)
    margin_weights = margin_rows(w_out, y)                             # (B, K, N_L)
    bias = torch.zeros(margin_weights.shape[:2], dtype=dtype, device=margin_weights.device)
    if ibp.readout_bias is not None:
        b = ibp.readout_bias.detach().to(dtype)
        bias = bias + margin_rows(b, y)
    return {(last, t): ("s", margin_weights / timesteps) for t in range(timesteps)}, bias


def _voltages(ibp: SpikingBounds) -> list[Box]:
    return [Box(v.lo.detach().double(), v.hi.detach().double()) for v in ibp.voltage]


def tightened_bounds(model, x: torch.Tensor, eps: float, max_neurons: int = 256,
                     chunk_elements: int = 1 << 24, plain: SpikingBounds | None = None) -> SpikingBounds:
    """S-IBP with every voltage of a layer of at most ``max_neurons`` neurons intersected with its
    S-CROWN bound, layer by layer and step by step, so that each later relaxation (and S-IBP itself)
    starts from the tighter interval: never looser than S-IBP, neuron by neuron."""
    if plain is None:  # the untightened pass: layer shapes for the affine maps, and the widest layer
        with torch.no_grad():
            plain = ibp_bounds(model, x, eps)
    maps = affine_maps(model, plain)
    widest = max(math.prod(v.lo.shape[1:-1]) for v in plain.voltage)

    def layer(index, neuron, current, so_far):
        voltage, spikes = neuron_bounds(neuron, current)
        shape = tuple(voltage.lo.shape[1:-1])
        n = math.prod(shape)
        if n > max_neurons:
            return voltage, spikes
        eye = torch.eye(n, dtype=torch.float64, device=x.device).reshape(n, *shape)
        signs = torch.cat([eye, -eye])                               # lower bounds of v and of -v
        chunk = max(1, chunk_elements // (2 * n * widest))
        clips = {}
        earlier = _voltages(so_far)
        for t in range(model.config.timesteps):
            volts = earlier + _voltages(SpikingBounds(voltage=[voltage]))
            lows, highs = [], []
            for a in range(0, len(x), chunk):
                part = [Box(v.lo[a:a + chunk], v.hi[a:a + chunk]) for v in volts]
                lam = signs.unsqueeze(0).expand(len(x[a:a + chunk]), *signs.shape)
                bias = torch.zeros(lam.shape[:2], dtype=torch.float64, device=x.device)
                lower = BackSubstitution(model, part, maps).lower_bound(x[a:a + chunk], eps, {(index, t): ("v", lam)}, bias)
                lows.append(lower[:, :n].reshape(-1, *shape))
                highs.append(-lower[:, n:].reshape(-1, *shape))
            clips[t] = Box(torch.cat(lows), torch.cat(highs))
            voltage, spikes = neuron_bounds(neuron, current, clips)
        return voltage, spikes

    with torch.no_grad():
        return ibp_bounds(model, x, eps, layer_bounds=layer)


def _add(total, term):
    return term if total is None else total + term


def _input_box(model, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The input ball as the first synapse sees it: (B, features) on the chip's grid for dense
    networks, (B, C, H, W) pixels for conv ones (whose first synapse pads and normalises)."""
    if model.config.arch == "mlp":
        box = input_bounds(model, x, eps)
        return box.lo[..., 0].double(), box.hi[..., 0].double()
    box = Box.linf_ball(x.reshape(-1, *model.config.input_shape), eps)
    return box.lo.double(), box.hi.double()


def affine_maps(model, ibp: SpikingBounds) -> list[AffineMap]:
    """Every spiking layer's synapse as an affine map, for back-substitution."""
    if model.config.arch == "mlp":
        return _dense_maps(model, torch.float64)
    shapes = [tuple(model.config.input_shape)] + [tuple(s.lo.shape[1:-1]) for s in ibp.spikes[:-1]]
    return _vgg_maps(model, shapes, torch.float64, ibp.spikes[0].lo.device)


def _default_alphas(ibp: SpikingBounds, thresholds: list[float]) -> list[dict]:
    """The area heuristic's slopes, as the starting point of the optimisation."""
    return [_area_slopes(volt, th) for volt, th in zip(_voltages(ibp), thresholds)]


def crown_margin_lower_bound(model, x: torch.Tensor, y: torch.Tensor, eps: float,
                             ibp: SpikingBounds, iterations: int = 0, lr: float = 0.1) -> torch.Tensor:
    """Lower bounds (B, K) of logit[y] - logit[j] over the eps-ball (-inf where CROWN cannot say).

    With ``iterations`` > 0 the relaxation slopes are optimised per neuron and step (alpha-CROWN,
    Xu et al. 2021) by projected Adam on the sum of the margins; every iterate is a sound bound,
    so the best one seen per margin is returned.
    """
    alphas = _default_alphas(ibp, [n.threshold for n in model.spiking_neurons]) if iterations else None
    substitution = BackSubstitution(model, _voltages(ibp), affine_maps(model, ibp), alphas)
    start, bias = _margin_start(model, y, ibp)
    margins = lambda: substitution.lower_bound(x, eps, start, bias)  # noqa: E731
    with torch.no_grad():
        best = margins()
    if not iterations:
        best[torch.arange(len(y), device=y.device), y] = 0.0
        return best.to(x.dtype)
    leaves = [a.requires_grad_(True) for layer in alphas for a in layer.values()]
    optimizer = torch.optim.Adam(leaves, lr=lr)
    for _ in range(iterations):
        with torch.enable_grad():
            lower = margins()
            finite = torch.isfinite(lower)
            objective = -torch.where(finite, lower, torch.zeros_like(lower)).sum()
            optimizer.zero_grad()
            objective.backward()
        optimizer.step()
        with torch.no_grad():
            for leaf in leaves:
                leaf.clamp_(0.0, 1.0)
            best = torch.maximum(best, lower.detach())
    with torch.no_grad():
        best = torch.maximum(best, margins())
    best[torch.arange(len(y), device=y.device), y] = 0.0
    return best.to(x.dtype)
