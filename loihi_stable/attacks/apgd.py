"""APGD (Croce & Hein, ICML 2020) with the CE or the DLR loss, L-inf.

Step size starts at 2*eps and halves at checkpoints where the loss oscillated
(increased in at most rho of the last k steps) or stalled; the iterate then
restarts from the best point. Momentum 0.75. Samples that are misclassified at
any iterate keep that iterate; the others return their highest-loss point.
Restarts only attack the samples still classified correctly.
"""
from __future__ import annotations

import torch

from .base import Attack, cross_entropy, uniform_noise


def dlr_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3): scale-invariant margin (needs >= 3 classes)."""
    ordered, order = logits.sort(dim=1)
    true = logits.gather(1, labels[:, None]).squeeze(1)
    top_is_true = (order[:, -1] == labels).float()
    best_other = ordered[:, -2] * top_is_true + ordered[:, -1] * (1 - top_is_true)
    return -(true - best_other) / (ordered[:, -1] - ordered[:, -3] + 1e-12)


LOSSES = {"ce": cross_entropy, "dlr": dlr_loss}


class APGD(Attack):
    def __init__(self, model, eps: float = 8 / 255, steps: int = 10, n_restarts: int = 1,
                 loss: str = "ce", rho: float = 0.75, seed: int | None = 0, surrogate: str | None = None):
        super().__init__(model, eps, seed, surrogate)
        if loss not in LOSSES:
            raise ValueError(f"unknown APGD loss '{loss}': choose ce or dlr")
        self.steps, self.n_restarts, self.loss, self.rho = int(steps), int(n_restarts), loss, float(rho)
        self.name = f"apgd-{loss}"

    def perturb(self, images, labels, generator):
        _, robust = self.clean_logits(images, labels)
        adv = images.clone()
        for _, idx in self.still_robust(robust, self.n_restarts):
            best, fooled = self._single_run(images[idx], labels[idx], generator, LOSSES[self.loss])
            adv[idx] = best
            robust[idx[fooled]] = False
        return adv

    def _single_run(self, x, y, generator, loss_fn):
        n, steps = len(x), self.steps
        k = max(int(0.22 * steps), 1)
        k_min, k_decrement = max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)
        per_sample = (n,) + (1,) * (x.dim() - 1)

        t = uniform_noise(x.shape, generator, x.device)
        t_max = t.flatten(1).abs().max(1).values.view(per_sample)
        x_adv = (x + self.eps * t / t_max).clamp(0.0, 1.0)
        loss, grad, logits = self.loss_and_grad(x_adv, y, loss_fn)
        fooled = logits.argmax(1) != y
        x_fooled = x_adv.clone()
        x_best, grad_best, loss_best = x_adv.clone(), grad.clone(), loss.clone()
        step = torch.full(per_sample, 2.0 * self.eps, device=x.device)
        x_prev = x_adv.clone()
        loss_steps = torch.zeros(steps, n, device=x.device)
        loss_best_at_check = loss_best.clone()
        reduced_at_check = torch.ones(n, dtype=torch.bool, device=x.device)
        since_check = 0
        for i in range(steps):
            with torch.no_grad():
                momentum = 0.75 if i > 0 else 1.0
                x_step = self.project(x_adv + step * grad.sign(), x)
                x_new = self.project(x_adv + (x_step - x_adv) * momentum + (x_adv - x_prev) * (1 - momentum), x)
                x_prev, x_adv = x_adv, x_new
            loss, grad, logits = self.loss_and_grad(x_adv, y, loss_fn)
            self.loss_history.append(loss.mean())
            with torch.no_grad():
                now_fooled = logits.argmax(1) != y
                x_fooled[now_fooled] = x_adv[now_fooled]
                fooled |= now_fooled
                loss_steps[i] = loss
                improved = loss > loss_best
                x_best[improved], grad_best[improved], loss_best[improved] = \
                    x_adv[improved], grad[improved], loss[improved]
                since_check += 1
                if since_check == k:
                    # loss went up in at most rho*k of the last k steps (as the reference, the
                    # step before the first compares with the zero-initialised last row)
                    ups = sum((loss_steps[i - j] > loss_steps[(i - j - 1) % steps]).float() for j in range(k))
                    oscillating = ups <= k * self.rho
                    stalled = ~reduced_at_check & (loss_best_at_check >= loss_best)
                    reduce = oscillating | stalled
                    reduced_at_check, loss_best_at_check = reduce.clone(), loss_best.clone()
                    if reduce.any():
                        step[reduce] /= 2.0
                        x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
                    since_check = 0
                    k = max(k - k_decrement, k_min)
        result = torch.where(fooled.view(per_sample), x_fooled, x_best)
        return result, fooled

    def __repr__(self) -> str:
        return f"APGD(loss={self.loss}, eps={self.eps * 255:g}/255, steps={self.steps}, restarts={self.n_restarts})"
