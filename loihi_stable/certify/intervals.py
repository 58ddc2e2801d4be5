"""Interval arithmetic through the non-spiking layers: dense, conv, batch norm, pooling.

Affine maps go through center/radius (tight for one affine layer); monotone maps
(pooling, the chip's rounding and truncation) map the two ends.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class Box:
    """Elementwise bounds lo <= z <= hi of a tensor z."""

    lo: torch.Tensor
    hi: torch.Tensor

    @classmethod
    def point(cls, z: torch.Tensor) -> "Box":
        return cls(z, z)

    @classmethod
    def linf_ball(cls, x: torch.Tensor, eps: float, low: float = 0.0, high: float = 1.0) -> "Box":
        """The L-inf ball of radius eps around x, intersected with the valid input range."""
        return cls((x - eps).clamp(low, high), (x + eps).clamp(low, high))

    @property
    def center(self) -> torch.Tensor:
        return (self.hi + self.lo) / 2

    @property
    def radius(self) -> torch.Tensor:
        return (self.hi - self.lo) / 2

    def map(self, monotone) -> "Box":
        """Image under a nondecreasing elementwise function."""
        return Box(monotone(self.lo), monotone(self.hi))

    def contains(self, z: torch.Tensor, tol: float = 0.0) -> bool:
        return bool(((z >= self.lo - tol) & (z <= self.hi + tol)).all())


def affine(box: Box, linear, abs_linear) -> Box:
    """Bounds of ``linear(z)`` for z in box; ``abs_linear`` is the same map with |weights| and no bias."""
    mid, rad = linear(box.center), abs_linear(box.radius)
    return Box(mid - rad, mid + rad)


def dense(box: Box, weight: torch.Tensor, bias: torch.Tensor | None = None, dim: int = 1) -> Box:
    """y = W z (+ b) acting on dimension ``dim`` of z (slayer's (B, N, T) layout uses dim 1)."""
    def apply(w, b):
        def f(z):
            d = dim % z.dim()
            y = torch.movedim(torch.movedim(z, d, -1) @ w.T, -1, d)
            return y if b is None else y + b.reshape(-1, *([1] * (z.dim() - d - 1)))
        return f
    return affine(box, apply(weight, bias), apply(weight.abs(), None))


def module_bounds(module: torch.nn.Module, box: Box) -> Box:
    """Bounds through a standard torch layer (eval mode), or a Sequential of them."""
    if isinstance(module, torch.nn.Sequential):
        for layer in module:
            box = module_bounds(layer, box)
        return box
    if isinstance(module, torch.nn.Linear):
        return dense(box, module.weight, module.bias, dim=-1 if box.lo.dim() == 2 else 1)
    if isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        conv = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}[module.weight.dim() - 2]
        kw = dict(stride=module.stride, padding=module.padding, dilation=module.dilation, groups=module.groups)
        return affine(box, lambda z: conv(z, module.weight, module.bias, **kw),
                      lambda z: conv(z, module.weight.abs(), None, **kw))
    if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
        if module.training:
            raise ValueError("batch norm must be in eval mode to bound it (call model.eval())")
        scale = module.weight / torch.sqrt(module.running_var + module.eps)
        shift = module.bias - module.running_mean * scale
        view = (1, -1) + (1,) * (box.lo.dim() - 2)
        return affine(box, lambda z: z * scale.view(view) + shift.view(view),
                      lambda z: z * scale.abs().view(view))
    if isinstance(module, (torch.nn.AvgPool1d, torch.nn.AvgPool2d, torch.nn.AvgPool3d,
                           torch.nn.AdaptiveAvgPool2d, torch.nn.MaxPool2d, torch.nn.ReLU,
                           torch.nn.Flatten, torch.nn.Identity)):
        return box.map(module)  # nonnegative averages, max, ReLU, reshapes: all monotone
    raise TypeError(f"no interval bounds for {type(module).__name__}")


def margin_rows(values: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, K, ...) the differences values[y] - values[j] for every class j: the readout's weight rows
    (or biases) of the margins logit[y] - logit[j], which S-IBP, S-CROWN and the chip certificate bound."""
    return values[y].unsqueeze(1) - values.unsqueeze(0)
