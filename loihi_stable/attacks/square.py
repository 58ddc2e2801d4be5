"""Square attack (Andriushchenko et al., ECCV 2020), L-inf, margin loss: query-only.

It never asks for a gradient, only for logits, so it also runs against the chip itself (the
integer emulator) and is AutoAttack's check for gradient masking. Start from vertical stripes of
+-eps; each query changes one random square window (side from the p schedule, p_init 0.8,
shrinking by halves at 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000 queries) to +-2 eps per
channel, projects, and keeps the change where the margin drops. As the original, one window and
one sign pattern per query is shared by the batch.
"""
from __future__ import annotations

import math

import torch

from ..progress import progress_bar
from .base import Attack
from .query import frozen_logits

SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)  # query counts where p halves


def p_selection(p_init: float, query: int) -> float:
    return p_init / 2 ** sum(query > mark for mark in SCHEDULE)


def image_view(shape: torch.Size) -> tuple[int, int, int]:
    """(C, H, W) of a sample: images as they are, flat vectors of a square number of pixels as one channel."""
    if len(shape) == 3:
        return tuple(shape)
    side = math.isqrt(int(shape[0]))
    if len(shape) == 1 and side * side == shape[0]:
        return 1, side, side
    return (int(torch.tensor(shape).prod()), 1, 1)


class Square(Attack):
    name = "square"

    def __init__(self, model, eps: float = 8 / 255, n_queries: int = 5000, p_init: float = 0.8,
                 n_restarts: int = 1, seed: int | None = 0, logits=None):
        super().__init__(model, eps, seed)
        if n_queries < 1:
            raise ValueError(f"Square needs at least one query, got {n_queries}")
        self.n_queries, self.p_init, self.n_restarts = int(n_queries), float(p_init), int(n_restarts)
        self.logits = logits  # query function (N, ...) -> logits; the model's forward by default
        self.queries_used: torch.Tensor | None = None
        self.progress = ""  # a bar's label: shown for long runs (Square against the chip); empty: none

    def _margin(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            logits = self._query(x).float()
        true = logits.gather(1, y[:, None]).squeeze(1)
        others = logits.scatter(1, y[:, None], -float("inf")).max(1).values
        return true - others

    def perturb(self, images, labels, generator):
        generator = generator or torch.Generator(device=images.device).manual_seed(0)
        # the weights stay fixed while it runs: the model's forward without re-quantizing them per query
        self._query = self.logits or frozen_logits(self.model) or self.model
        adv = images.clone()
        robust = self._margin(images, labels) > 0
        self.queries_used = torch.zeros(len(images), device=images.device)
        for _, idx in self.still_robust(robust, self.n_restarts):
            found, margin = self._single_run(images[idx], labels[idx], generator, idx)
            fooled = margin <= 0
            adv[idx[fooled]] = found[fooled]
            robust[idx[fooled]] = False
        return adv

    def _sign(self, shape, generator, device) -> torch.Tensor:
        return torch.randint(0, 2, shape, generator=generator, device=device).float() * 2 - 1

    def _single_run(self, x, y, generator, where):
        n = len(x)
        c, h, w = image_view(x.shape[1:])
        view = lambda t: t.reshape(len(t), c, h, w)  # noqa: E731
        flat = lambda t: t.reshape(len(t), *x.shape[1:])  # noqa: E731
        x_img = view(x)
        best = (x_img + self.eps * self._sign((n, c, 1, w), generator, x.device)).clamp(0, 1)
        margin = self._margin(flat(best), y)
        queries = torch.ones(n, device=x.device)
        features = c * h * w
        bar = progress_bar(range(self.n_queries), desc=self.progress, unit="query", disable=not self.progress)
        for i in bar:
            active = (margin > 0).nonzero().flatten()
            bar.set_postfix(robust=int(active.numel()), refresh=False)
            if active.numel() == 0:
                bar.close()
                break
            x_curr, best_curr = x_img[active], best[active]
            side = max(int(round(math.sqrt(p_selection(self.p_init, i) * features / c))), 1)
            side = min(side, h, w)
            vh = int(torch.randint(0, h - side + 1, (1,), generator=generator, device=x.device))
            vw = int(torch.randint(0, w - side + 1, (1,), generator=generator, device=x.device))
            delta = torch.zeros(c, h, w, device=x.device)
            delta[:, vh:vh + side, vw:vw + side] = 2 * self.eps * self._sign((c, 1, 1), generator, x.device)
            candidate = torch.min(torch.max(best_curr + delta, x_curr - self.eps), x_curr + self.eps).clamp(0, 1)
            new_margin = self._margin(flat(candidate), y[active])
            better = (new_margin < margin[active]) | (new_margin <= 0)
            margin[active] = torch.where(better, new_margin, margin[active])
            best[active] = torch.where(better[:, None, None, None], candidate, best_curr)
            queries[active] += 1
        self.queries_used[where] = queries
        return flat(best), margin

    def __repr__(self) -> str:
        return f"Square(eps={self.eps * 255:g}/255, queries={self.n_queries}, p_init={self.p_init})"
