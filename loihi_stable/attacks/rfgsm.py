"""RFGSM as the stable-snn training recipe uses it: tiny Gaussian start, one full signed step.

The start is clamped into [0, 1] before the gradient is taken: the models clamp their input,
so a pixel pushed outside (29% of the digits' pixels, which sit at 0) would get no gradient
and never move.
"""
from __future__ import annotations

import torch

from .base import Attack


class RFGSM(Attack):
    """x' = clip(x0 + eps*sign(grad(x0)), 0, 1), x0 = clip(x + start*N(0,1), 0, 1); no projection (as the reference)."""

    name = "rfgsm"

    def __init__(self, model, eps: float = 4 / 255, start: float = 0.001, seed: int | None = None):
        super().__init__(model, eps, seed)
        self.start = float(start)

    def perturb(self, images, labels, generator):
        noise = torch.randn(images.shape, generator=generator, device=images.device)
        start = (images + self.start * noise).clamp(0.0, 1.0)
        _, grad, _ = self.loss_and_grad(start, labels)
        return (start + self.eps * grad.sign()).clamp(0.0, 1.0)
