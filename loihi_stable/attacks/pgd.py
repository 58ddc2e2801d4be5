"""PGD-k (Madry et al. 2018) with a uniform random start, as torchattacks.PGD."""
from __future__ import annotations

import torch

from .base import Attack


class PGD(Attack):
    def __init__(self, model, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10,
                 random_start: bool = True, seed: int | None = 0):
        super().__init__(model, eps, seed)
        self.alpha, self.steps, self.random_start = float(alpha), int(steps), random_start

    def perturb(self, images, labels, generator):
        adv = images
        if self.random_start:
            noise = torch.rand(images.shape, generator=generator, device=images.device)
            adv = (images + (2 * noise - 1) * self.eps).clamp(0.0, 1.0)
        for _ in range(self.steps):
            grad, _ = self.input_grad(adv, labels)
            adv = self.project(adv + self.alpha * grad.sign(), images)
        return adv
