"""RFGSM as the stable-snn training recipe uses it: tiny Gaussian start, one full signed step."""
from __future__ import annotations

import torch

from .base import Attack


class RFGSM(Attack):
    """x' = clip(x + start*N(0,1) + eps*sign(grad), 0, 1); no projection (as the reference code)."""

    name = "rfgsm"

    def __init__(self, model, eps: float = 4 / 255, start: float = 0.001, seed: int | None = None):
        super().__init__(model, eps, seed)
        self.start = float(start)

    def perturb(self, images, labels, generator):
        start = images + self.start * torch.randn(images.shape, generator=generator, device=images.device)
        _, grad, _ = self.loss_and_grad(start, labels)
        return (start + self.eps * grad.sign()).clamp(0.0, 1.0)
