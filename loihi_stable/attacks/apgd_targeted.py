"""Targeted APGD (APGD-T, Croce & Hein 2020): the targeted DLR loss against each of the top-9
other classes, 100 steps each, on the samples not yet broken, as AutoAttack runs it; the targets run
side by side in one batch instead of one after another."""
from __future__ import annotations

import torch

from .apgd import APGD
from .base import targets_at_once


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
        """All target classes of a sample in one batch (rows = samples x targets), not one run per target:
        the same attack per sample, with a fraction of the passes (small networks are bound by op
        dispatch, not arithmetic). Per sample the first target, in rank order, that fools it wins."""
        logits, robust = self.clean_logits(images, labels)
        if logits.shape[1] < 4:
            raise ValueError("APGD-T's targeted DLR loss needs at least 4 classes")
        ranking = logits.sort(dim=1).indices  # ascending: the target of rank r is ranking[:, -r]
        ranks = list(range(2, min(self.n_target_classes, logits.shape[1] - 1) + 2))
        adv = images.clone()
        for _, idx in self.still_robust(robust, self.n_restarts):
            per_group = targets_at_once(self.model, len(idx), len(ranks))
            for first in range(0, len(ranks), per_group):
                group = ranks[first:first + per_group]
                left = robust[idx]
                if not left.any():
                    break
                todo = idx[left]
                targets = torch.cat([ranking[todo, -rank] for rank in group])
                x, y = images[todo].repeat(len(group), *[1] * (images.dim() - 1)), labels[todo].repeat(len(group))
                loss_fn = lambda z, y_, t=targets: targeted_dlr_loss(z, y_, t)  # noqa: E731
                best, fooled = self._single_run(x, y, generator, loss_fn)
                fooled = fooled.view(len(group), len(todo))
                first_hit = fooled.float().argmax(0)  # the first target (in rank order) that fooled it
                hit = fooled.any(0)
                rows = first_hit * len(todo) + torch.arange(len(todo), device=todo.device)
                adv[todo[hit]] = best[rows[hit]]
                robust[todo[hit]] = False
        return adv

    def __repr__(self) -> str:
        return f"APGDT(eps={self.eps * 255:g}/255, steps={self.steps}, targets={self.n_target_classes})"
