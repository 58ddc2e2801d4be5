"""PGD-k (Madry et al. 2018) with a uniform random start, as torchattacks.PGD."""
from __future__ import annotations

from .base import Attack, uniform_noise

# the stable-snn evaluation protocol: step size per step count, on the /255 scale
PAPER_STEP_SIZES = {7: 2.55 / 255, 10: 2 / 255, 20: 1 / 255, 40: 0.5 / 255}


def default_step_size(steps: int, eps: float) -> float:
    """The paper's step for 7/10/20/40 steps (at eps 8/255, scaled with eps), else 2.5*eps/steps."""
    if steps in PAPER_STEP_SIZES:
        return PAPER_STEP_SIZES[steps] * eps / (8 / 255) if eps > 0 else 0.0
    return 2.5 * eps / steps


class PGD(Attack):
    name = "pgd"

    def __init__(self, model, eps: float = 8 / 255, alpha: float | None = None, steps: int = 10,
                 random_start: bool = True, seed: int | None = 0, surrogate: str | None = None):
        super().__init__(model, eps, seed, surrogate)
        if steps < 1:
            raise ValueError(f"PGD needs at least one step, got {steps}")
        self.steps, self.random_start = int(steps), random_start
        self.alpha = float(default_step_size(self.steps, self.eps) if alpha is None else alpha)

    def perturb(self, images, labels, generator):
        adv = images
        if self.random_start:
            adv = (images + self.eps * uniform_noise(images.shape, generator, images.device)).clamp(0.0, 1.0)
        for _ in range(self.steps):
            loss, grad, _ = self.loss_and_grad(adv, labels)
            self.loss_history.append(loss.mean())
            adv = self.project(adv + self.alpha * grad.sign(), images)
        return adv

    def __repr__(self) -> str:
        return f"PGD(eps={self.eps * 255:g}/255, alpha={self.alpha * 255:g}/255, steps={self.steps})"
