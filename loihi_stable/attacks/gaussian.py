"""Gaussian input noise x + sigma*N(0,1), sigma = eps.

Training uses it unclamped (as the stable-snn recipe); evaluation clamps to [0, 1].
Not an L-inf attack: the noise is not confined to the eps ball.
"""
from __future__ import annotations

import torch

from .base import Attack


class GaussianNoise(Attack):
    name = "gaussian"

    def __init__(self, model, eps: float = 8 / 255, clamp: bool = True, seed: int | None = 0):
        super().__init__(model, eps, seed)
        self.clamp = clamp

    def perturb(self, images, labels, generator):
        noisy = images + self.eps * torch.randn(images.shape, generator=generator, device=images.device)
        return noisy.clamp(0.0, 1.0) if self.clamp else noisy
