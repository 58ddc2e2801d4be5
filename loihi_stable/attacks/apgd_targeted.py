"""Targeted APGD (APGD-T, Croce & Hein 2020): the targeted DLR loss against each of the top-9
other classes in turn, 100 steps each, on the samples not yet broken, as AutoAttack runs it."""
from __future__ import annotations

import torch

from .apgd import APGD


def targeted_dlr_loss(logits: torch.Tensor, labels: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2): needs at least 4 classes."""
    ordered = logits.sort(dim=1).values
    true = logits.gather(1, labels[:, None]).squeeze(1)
    target = logits.gather(1, targets[:, None]).squeeze(1)
    return -(true - target) / (ordered[:, -1] - 0.5 * (ordered[:, -3] + ordered[:, -4]) + 1e-12)


class APGDT(APGD):
    name = "apgd-t"

    def __init__(self, model, eps: float = 8 / 255, steps: int = 100, n_target_classes: int = 9,
                 n_restarts: int = 1, rho: float = 0.75, seed: int | None = 0, surrogate: str | None = None):
        super().__init__(model, eps, steps=steps, n_restarts=n_restarts, loss="dlr", rho=rho, seed=seed,
                         surrogate=surrogate)
        if n_target_classes < 1:
            raise ValueError(f"APGD-T needs at least one target class, got {n_target_classes}")
        self.n_target_classes = int(n_target_classes)
        self.name = "apgd-t"

    def perturb(self, images, labels, generator):
        logits, robust = self.clean_logits(images, labels)
        if logits.shape[1] < 4:
            raise ValueError("APGD-T's targeted DLR loss needs at least 4 classes")
        ranking = logits.sort(dim=1).indices  # ascending: the target of rank r is ranking[:, -r]
        ranks = range(2, min(self.n_target_classes, logits.shape[1] - 1) + 2)
        adv = images.clone()
        for round_, idx in self.still_robust(robust, len(ranks) * self.n_restarts):
            targets = ranking[idx, -ranks[round_ // self.n_restarts]]
            loss_fn = lambda z, y, t=targets: targeted_dlr_loss(z, y, t)  # noqa: E731
            best, fooled = self._single_run(images[idx], labels[idx], generator, loss_fn)
            adv[idx[fooled]] = best[fooled]
            robust[idx[fooled]] = False
        return adv

    def __repr__(self) -> str:
        return f"APGDT(eps={self.eps * 255:g}/255, steps={self.steps}, targets={self.n_target_classes})"
