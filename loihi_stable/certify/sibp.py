"""S-IBP: interval bounds through LIF/DLIF dynamics over time (Liang et al., 2022).

Every map of the chip's neuron is monotone in its inputs: the leak (with Loihi's
truncation), the input grid, the saturation, the threshold test; only the current's 24-bit
wrap is not, so where it may fire the voltage is bounded by its saturation limits. So the lower bound of the voltage
comes from the lower bounds of the state and the current, spikes from the Heaviside
of each end, and the hard reset u = v * 1[v <= threshold] gives
  spikes surely:  u = 0;   surely not: u = v;   undecided: u in [min(v_lo, 0), threshold].
In the model's quantized mode the bounds use the chip's exact arithmetic, so they
hold for the network Loihi runs; in float arithmetic (``model.arithmetic("float")``) for the float twin.
Bounds stay differentiable (surrogate spikes, straight-through grids) for IBP training.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .. import chip_kernel as kernel
from .. import fixed_point as fx
from ..blocks import synapse_weight
from ..neurons import DLIF, triangle_spike
from .intervals import Box, dense, margin_rows, module_bounds


@dataclass
class SpikingBounds:
    """Bounds of every layer's voltage and spikes (B, N, T) and of the mean logits (B, K)."""

    voltage: list[Box] = field(default_factory=list)
    spikes: list[Box] = field(default_factory=list)
    logits: Box | None = None
    readout_weight: torch.Tensor | None = None
    readout_bias: torch.Tensor | None = None   # conv networks' readout has one; it shifts the margins


def input_bounds(model, x: torch.Tensor, eps: float) -> Box:
    """The L-inf ball in [0, 1], mapped onto the chip's input grid and repeated T times."""
    box = Box.linf_ball(x.flatten(1), eps).map(fx.quantize_input)
    steps = model.config.timesteps
    return Box(box.lo.unsqueeze(-1).expand(*box.lo.shape, steps), box.hi.unsqueeze(-1).expand(*box.hi.shape, steps))


def current_bounds(block, box: Box) -> Box:
    return dense(box, synapse_weight(block.synapse))


def _rounded(bound: torch.Tensor, dtype: torch.dtype, down: bool) -> torch.Tensor:
    """``bound`` in ``dtype``, rounded outwards (a float64 bound rounded to float32 may move inwards)."""
    near = bound.to(dtype)
    inward = near.to(bound.dtype) > bound if down else near.to(bound.dtype) < bound
    away = torch.full_like(near, -torch.inf if down else torch.inf)
    return torch.where(inward, torch.nextafter(near, away), near)


def neuron_bounds(neuron: DLIF, current: Box, clips: dict | None = None) -> tuple[Box, Box]:
    """Voltage and spike bounds of a LIF/DLIF layer driven by any current inside ``current``;
    ``clips`` maps time steps to voltage bounds known otherwise (S-CROWN's), intersected in."""
    decay = neuron.effective_decay()
    dv = fx.decay_to_dv(decay.detach())
    exact = neuron.arithmetic == "chip"
    th, width = neuron.threshold, neuron.surrogate_width
    u_lo = u_hi = torch.zeros_like(current.lo[..., 0])
    v_out, s_out = [], []
    for t in range(current.lo.shape[-1]):
        ends = []
        for u, i in ((u_lo, current.lo[..., t]), (u_hi, current.hi[..., t])):
            v = decay[t] * u + i
            if exact:
                v = fx.ste(fx.chip_voltage_step(u.detach(), dv[t], i.detach(), neuron.payload_scale), v)
            ends.append(v)
        v_lo, v_hi = ends
        if exact:  # where the current may wrap, only the voltage's saturation limits bound it
            scale = fx.state_scale(neuron.payload_scale)
            wraps = ((current.hi[..., t] * scale > kernel.WRAP) | (current.lo[..., t] * scale <= -kernel.WRAP)).detach()
            limit = kernel.VOLTAGE_LIMIT / scale
            v_lo, v_hi = torch.where(wraps, -limit, v_lo), torch.where(wraps, limit, v_hi)
        if clips and t in clips:
            v_lo = torch.maximum(v_lo, _rounded(clips[t].lo, v_lo.dtype, down=True))
            v_hi = torch.minimum(v_hi, _rounded(clips[t].hi, v_hi.dtype, down=False))
        s_lo, s_hi = triangle_spike(v_lo, th, width), triangle_spike(v_hi, th, width)
        u_lo, u_hi = kernel.reset_interval(v_lo, v_hi, s_lo, s_hi, th)
        v_out.append((v_lo, v_hi))
        s_out.append((s_lo, s_hi))
    stack = lambda pairs, k: torch.stack([p[k] for p in pairs], -1)  # noqa: E731
    return Box(stack(v_out, 0), stack(v_out, 1)), Box(stack(s_out, 0), stack(s_out, 1))


def _plain_layer(index: int, neuron: DLIF, current: Box, so_far: "SpikingBounds") -> tuple[Box, Box]:
    return neuron_bounds(neuron, current)


def propagate(model, first: Box, from_current: bool = False, layer_bounds=_plain_layer) -> SpikingBounds:
    """Bounds through all spiking layers, from the input (or the first layer's current) on.

    ``layer_bounds(index, neuron, current, bounds so far)`` bounds one spiking layer (S-CROWN
    passes one that tightens the voltages)."""
    bounds = SpikingBounds()
    box = first
    for i, block in enumerate(model.blocks):
        current = box if (from_current and i == 0) else current_bounds(block, box)
        voltage, box = layer_bounds(i, block.neuron, current, bounds)
        bounds.voltage.append(voltage)
        bounds.spikes.append(box)
    bounds.readout_weight = synapse_weight(model.readout.synapse)
    per_step = dense(box, bounds.readout_weight)
    bounds.logits = Box(per_step.lo.mean(-1), per_step.hi.mean(-1))
    return bounds


def batch_norm_bounds(bn: torch.nn.Module, box: Box) -> Box:
    """Batch norm as the affine map it is; in training mode with the batch statistics of the box's
    center (the clean pass's statistics, as CROWN-IBP trains), which the bounds then hold for."""
    if isinstance(bn, torch.nn.Identity) or not bn.training:
        return module_bounds(bn, box)
    center = box.center
    mean, var = center.mean((0, 2, 3)), center.var((0, 2, 3), unbiased=False)
    scale = bn.weight / torch.sqrt(var + bn.eps)
    shift = bn.bias - mean * scale
    view = (1, -1, 1, 1)
    return Box(*_ends(center * scale.view(view) + shift.view(view), box.radius * scale.abs().view(view)))


def _ends(mid: torch.Tensor, rad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return mid - rad, mid + rad


def conv_synapse_bounds(synapse, box: Box) -> Box:
    """Through ConvBN: zero padding and normalisation (both nondecreasing), the conv, batch norm."""
    if synapse.normalize is not None:
        box = box.map(lambda z: synapse.normalize(F.pad(z, (1, 1, 1, 1))))
    return batch_norm_bounds(synapse.bn, module_bounds(synapse.conv, box))


def _over_time(function, box: Box) -> Box:
    """Apply a per-image bound map to (B, C, H, W, T) boxes with time folded into the batch."""
    from ..convnets import fold, unfold

    steps = box.lo.shape[-1]
    out = function(Box(fold(box.lo), fold(box.hi)))
    return Box(unfold(out.lo, steps), unfold(out.hi, steps))


def propagate_vgg(model, first: Box, layer_bounds=_plain_layer) -> SpikingBounds:
    """S-IBP through a SpikingVGG (convnet-s, convnet, vgg5, vgg11): conv layers, 2x2 average
    pooling (nonnegative weights: the ends map to the ends), the dense classifier, the readout."""
    from ..convnets import avg_pool

    steps = model.config.timesteps
    bounds = SpikingBounds()
    box = first                                  # (B, C, H, W): the same image at every step
    for item in model.layout:
        if item == "A":
            box = box.map(avg_pool)
            continue
        block = model.features[item]
        if box.lo.dim() == 4:
            current = conv_synapse_bounds(block.synapse, box)
            current = Box(*(z.unsqueeze(-1).expand(*z.shape, steps) for z in (current.lo, current.hi)))
        else:
            current = _over_time(lambda b: conv_synapse_bounds(block.synapse, b), box)
        voltage, box = layer_bounds(len(bounds.voltage), block.neuron, current, bounds)
        bounds.voltage.append(voltage)
        bounds.spikes.append(box)
    box = Box(box.lo.flatten(1, 3), box.hi.flatten(1, 3))
    for block in model.classifier:
        current = dense(box, block.synapse.weight, block.synapse.bias)
        voltage, box = layer_bounds(len(bounds.voltage), block.neuron, current, bounds)
        bounds.voltage.append(voltage)
        bounds.spikes.append(box)
    bounds.readout_weight, bounds.readout_bias = model.readout.weight, model.readout.bias
    per_step = dense(box, bounds.readout_weight, bounds.readout_bias)
    bounds.logits = Box(per_step.lo.mean(-1), per_step.hi.mean(-1))
    return bounds


def ibp_bounds(model, x: torch.Tensor, eps: float, layer_bounds=_plain_layer) -> SpikingBounds:
    """S-IBP for analog (digital) inputs in the L-inf ball of radius eps around x."""
    if model.config.arch == "mlp":
        return propagate(model, input_bounds(model, x, eps), layer_bounds=layer_bounds)
    if not hasattr(model, "layout"):
        from ..errors import UserError
        raise UserError(f"S-IBP bounds MLPs and the VGG family (convnet-s, convnet, vgg5, vgg11); "
                        f"{model.config.arch}'s analog residual stream is not supported")
    return propagate_vgg(model, Box.linf_ball(x.reshape(-1, *model.config.input_shape), eps), layer_bounds)


def margin_lower_bound(bounds: SpikingBounds, y: torch.Tensor) -> torch.Tensor:
    """Lower bounds (B, K) of logit[y] - logit[j] (0 at j = y), via the readout's difference rows.

    Bounding the difference directly is tighter than subtracting logit bounds.
    """
    w = bounds.readout_weight                     # (K, N)
    diff = margin_rows(w, y)                      # (B, K, N)
    spikes = bounds.spikes[-1]                    # (B, N, T)
    lo = diff.clamp(min=0) @ spikes.lo + diff.clamp(max=0) @ spikes.hi  # (B, K, T)
    lo = lo.mean(-1)
    if bounds.readout_bias is not None:
        b = bounds.readout_bias
        lo = lo + margin_rows(b, y)
    return lo


def worst_case_logits(bounds: SpikingBounds, y: torch.Tensor) -> torch.Tensor:
    """Logits whose cross-entropy is IBP's robust loss: -margin lower bound per class."""
    return -margin_lower_bound(bounds, y)


def spike_input_bounds(model, spikes: torch.Tensor, flips: int) -> SpikingBounds:
    """S-IBP for spike inputs (B, F, T) when an adversary may flip up to ``flips`` spikes.

    Per neuron and step the first layer's current moves at most by the ``flips`` largest
    changes that flipping inputs of that step can cause; this holds for any flip pattern.
    """
    block = model.blocks[0]
    weight = synapse_weight(block.synapse)                          # (O, F)
    spikes = spikes.to(weight.dtype)
    base = torch.einsum("of,bft->bot", weight, spikes)
    k = min(int(flips), spikes.shape[1])
    if k <= 0:
        current = Box(base, base)
    else:
        # change of current o at step t if input f flips: W[o, f] * (1 - 2 s[f, t])
        delta = weight[None, :, :, None] * (1 - 2 * spikes)[:, None, :, :]  # (B, O, F, T)
        up = delta.clamp(min=0).topk(k, dim=2).values.sum(2)
        down = delta.clamp(max=0).neg().topk(k, dim=2).values.sum(2)
        current = Box(base - down, base + up)
    return propagate(model, current, from_current=True)


def forward_spikes(model, spikes: torch.Tensor) -> torch.Tensor:
    """Mean logits of the model fed spike inputs (B, F, T) instead of analog pixels."""
    h = spikes.to(torch.float32)
    for block in model.blocks:
        h = block(h)
    return model.readout(h).mean(-1)
