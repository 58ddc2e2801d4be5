"""FAB-T (Croce & Hein, ICML 2020), targeted, L-inf: the minimal-norm attack of AutoAttack.

It does not climb a loss: each step linearises the margin z_t - z_y to the target class at the
current point, jumps onto that hyperplane with the smallest L-inf step that stays in [0, 1] (from
the current point and from the clean image, mixed with weight alpha <= alpha_max, extrapolated
by eta), and after every success moves back towards the clean image by beta, so the points found
get closer to the clean image. A sample counts as broken only if the closest point found lies
inside the eps ball. Targets: the clean logits' 2nd to 10th highest classes, one run each.
"""
from __future__ import annotations

import math

import torch

from .base import Attack, targets_at_once


def project_onto_hyperplane_linf(points: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest-L-inf step d (rows) with w.(p + d) = b and p + d in [0, 1]; the box may make it longer.

    Per row: moving coordinate i by lambda*sign towards its box edge changes w.p at rate |w_i|,
    until the coordinate hits its edge (capacity p_i of the 'distance to edge'). Sorting the edges
    and a bisection over the cumulative rates gives the smallest lambda that reaches b.
    """
    t, w, b = points, w.clone(), b.clone()
    sign = 2 * ((w * t).sum(1) - b >= 0).to(t.dtype) - 1  # orient so that w.t <= b must rise
    w, b = w * sign[:, None], b * sign
    towards_low = (w < 0).to(t.dtype)                     # coordinates that raise w.t by decreasing
    d = (towards_low - t) * (w != 0).to(t.dtype)          # the full move to each coordinate's edge
    edge = towards_low - t * (2 * towards_low - 1)        # lambda at which coordinate i saturates
    order = torch.argsort(edge, dim=1)
    b = b - (w * t).sum(1)                                # what is still missing
    b_full = (w * d).sum(1)                               # gained when every coordinate saturates
    descending = order.flip((1,))
    w_sorted = w.gather(1, descending)
    rates = torch.cumsum(w_sorted.abs(), dim=1)
    gained = torch.cumsum(-w_sorted * d.gather(1, descending), dim=1) + b_full[:, None]
    at_first_edge = gained[:, -1] - rates[:, -1] * edge.gather(1, order[:, :1]).squeeze(1)
    unsaturated = b - at_first_edge > 0                   # reached before any coordinate saturates
    bisect = (b - b_full > 0) & ~unsaturated              # some coordinates saturate on the way
    lo = torch.zeros(int(bisect.sum()), device=t.device)
    hi = torch.full_like(lo, w.shape[1] - 1)
    order_b, gained_b, rates_b, edge_b, b_b = order[bisect], gained[bisect], rates[bisect], edge[bisect], b[bisect]
    for _ in range(math.ceil(math.log2(w.shape[1]))):
        mid = torch.floor((lo + hi) / 2)
        k = mid.long()[:, None]
        current = order_b.gather(1, order_b.size(1) - 1 - k)
        reach = (gained_b.gather(1, k) - rates_b.gather(1, k) * edge_b.gather(1, current)).squeeze(1)
        enough = b_b - reach > 0
        lo, hi = torch.where(enough, mid, lo), torch.where(enough, hi, mid)
    lo = lo.long()
    if unsaturated.any():
        lam = torch.clamp_min((b[unsaturated] - gained[unsaturated, -1]) / (-rates[unsaturated, -1]), 0)[:, None]
        d[unsaturated] = (2 * towards_low[unsaturated] - 1) * lam
    lam = torch.clamp_min((b[bisect] - gained[bisect, lo]) / (-rates[bisect, lo]), 0)[:, None]
    d[bisect] = torch.min(lam, d[bisect]) * towards_low[bisect] + torch.max(-lam, d[bisect]) * (1 - towards_low[bisect])
    return d * (w != 0).to(t.dtype)


class FABT(Attack):
    name = "fab-t"

    def __init__(self, model, eps: float = 8 / 255, steps: int = 100, n_target_classes: int = 9,
                 alpha_max: float = 0.1, eta: float = 1.05, beta: float = 0.9, seed: int | None = 0,
                 surrogate: str | None = None):
        super().__init__(model, eps, seed, surrogate)
        if steps < 1 or n_target_classes < 1:
            raise ValueError("FAB-T needs at least one step and one target class")
        self.steps, self.n_target_classes = int(steps), int(n_target_classes)
        self.alpha_max, self.eta, self.beta = float(alpha_max), float(eta), float(beta)
        self.min_norm: torch.Tensor | None = None  # smallest L-inf distance of a misclassified point found

    def perturb(self, images, labels, generator):
        logits, robust = self.clean_logits(images, labels)
        ranking = logits.sort(dim=1).indices
        ranks = list(range(2, min(self.n_target_classes, logits.shape[1] - 1) + 2))
        adv = images.clone()
        self.min_norm = torch.full((len(images),), float("inf"), device=images.device)
        idx = robust.nonzero().flatten()
        # the target classes side by side in one batch (rows = samples x targets), as APGD-T
        per_group = targets_at_once(self.model, len(idx), len(ranks))
        for first in range(0, len(ranks), per_group):
            todo = idx[robust[idx]]
            if todo.numel() == 0:
                break
            group = ranks[first:first + per_group]
            x, y = images[todo].repeat(len(group), *[1] * (images.dim() - 1)), labels[todo].repeat(len(group))
            found, norm = self._single_run(x, y, torch.cat([ranking[todo, -rank] for rank in group]))
            norm = norm.view(len(group), len(todo))
            self.min_norm[todo] = torch.minimum(self.min_norm[todo], norm.min(0).values)
            inside = norm <= self.eps
            hit = inside.any(0)
            rows = inside.float().argmax(0) * len(todo) + torch.arange(len(todo), device=todo.device)
            adv[todo[hit]] = found[rows[hit]]
            robust[todo[hit]] = False
        return adv

    def _margin_and_grad(self, x, y, target):
        """z_t - z_y (negative until the target wins) and its input gradient."""
        x = x.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = self.model(x)
            margin = logits.gather(1, target[:, None]).squeeze(1) - logits.gather(1, y[:, None]).squeeze(1)
            (grad,) = torch.autograd.grad(margin.sum(), x)
        return margin.detach(), grad.detach()

    def _single_run(self, x, y, target):
        n = len(x)
        shape = (n,) + (1,) * (x.dim() - 1)
        x0 = x.reshape(n, -1)
        current = x.clone()
        best = x.clone()
        best_norm = torch.full((n,), float("inf"), device=x.device)
        for _ in range(self.steps):
            margin, grad = self._margin_and_grad(current, y, target)
            w = grad.reshape(n, -1)  # the hyperplane z_t - z_y = 0 linearised at current: w.x = b
            b = -margin + (w * current.reshape(n, -1)).sum(1)
            steps = project_onto_hyperplane_linf(torch.cat((current.reshape(n, -1), x0)), torch.cat((w, w)),
                                                 torch.cat((b, b)))
            from_current, from_clean = steps[:n].reshape(x.shape), steps[n:].reshape(x.shape)
            size = steps.abs().max(1).values.clamp_min(1e-8)
            alpha = (size[:n] / (size[:n] + size[n:])).clamp(0, self.alpha_max).view(shape)
            current = ((current + self.eta * from_current) * (1 - alpha) + (x + self.eta * from_clean) * alpha).clamp(0, 1)
            with torch.no_grad():
                fooled = self.model(current).argmax(1) != y
            if fooled.any():
                norm = (current - x).reshape(n, -1).abs().max(1).values
                closer = fooled & (norm < best_norm)
                best[closer], best_norm[closer] = current[closer], norm[closer]
                current[fooled] = x[fooled] + (current[fooled] - x[fooled]) * self.beta
        return best, best_norm

    def __repr__(self) -> str:
        return f"FABT(eps={self.eps * 255:g}/255, steps={self.steps}, targets={self.n_target_classes})"
