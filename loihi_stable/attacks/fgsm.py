"""FGSM (Goodfellow et al. 2015): one signed-gradient step of size eps, no random start."""
from __future__ import annotations

from .base import Attack


class FGSM(Attack):
    name = "fgsm"

    def __init__(self, model, eps: float = 8 / 255, seed: int | None = 0, surrogate: str | None = None):
        super().__init__(model, eps, seed, surrogate)

    def perturb(self, images, labels, generator):
        loss, grad, _ = self.loss_and_grad(images, labels)
        self.loss_history.append(loss.mean())
        return (images + self.eps * grad.sign()).clamp(0.0, 1.0)
