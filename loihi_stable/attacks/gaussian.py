"""Gaussian input noise x + sigma*N(0,1) (unclamped, as the stable-snn training recipe)."""
from __future__ import annotations

import torch

from .base import Attack


class GaussianNoise(Attack):
    def __init__(self, model, eps: float = 8 / 255, clamp: bool = False, seed: int | None = None):
        super().__init__(model, eps, seed)
        self.clamp = clamp

    def perturb(self, images, labels, generator):
        noisy = images + self.eps * torch.randn(images.shape, generator=generator, device=images.device)
        return noisy.clamp(0.0, 1.0) if self.clamp else noisy
