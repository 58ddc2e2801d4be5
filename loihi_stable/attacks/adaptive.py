"""Surrogate-adaptive white-box attack: search the spike's backward per model, then attack through
the best ones.

AutoAttack differentiates the spike through the model's training surrogate, the weakest white-box
setting for SNNs. As HART (sharpness search) and ASSG (surrogate adapted to the model) do, this
attack ranks backwards (shape x sharpness x reset, and the rate backward) by what a short APGD-CE
through each achieves on a calibration subset, measured by the model's real forward (samples
broken, then the mean logit margin left), and runs APGD-CE, APGD-DLR and APGD-T through the
``top_k`` best on every sample still robust. The forward is never changed: a point counts only if
the model itself misclassifies it.

Five, not three: the short search ranks noisily, and on the demo model APGD-T through the 4th-ranked
backward broke a sample the best 3 left robust. The extra attacks only add to the first ones (same
seeds, run after them on what is still robust), so a wider final stage is never weaker.
"""
from __future__ import annotations

from collections import Counter

import torch

from .. import surrogates
from .apgd import APGD
from .apgd_targeted import APGDT
from .base import Attack


def margin(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """z_y - max_{j != y} z_j: negative where the sample is misclassified."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).max(1).values
    return true - other


class AdaptiveSurrogate(Attack):
    name = "adaptive"

    def __init__(self, model, eps: float = 8 / 255, steps: int = 100, search_steps: int = 10,
                 calibration: int = 64, top_k: int = 5, n_target_classes: int = 3,
                 sharpness: list[float] | None = None, shapes: list[str] | None = None, seed: int | None = 0):
        super().__init__(model, eps, seed)
        for key, value in (("steps", steps), ("search_steps", search_steps), ("calibration", calibration),
                           ("top_k", top_k), ("n_target_classes", n_target_classes)):
            if int(value) < 1:
                raise ValueError(f"{key} must be at least 1 (a search needs a budget), got {value}")
        self.steps, self.search_steps, self.calibration = int(steps), int(search_steps), int(calibration)
        self.top_k, self.n_target_classes = int(top_k), int(n_target_classes)
        sharpness = surrogates.SEARCH_SHARPNESS if sharpness is None else sharpness
        if not sharpness:
            raise ValueError("sharpness needs at least one value")
        shapes = list(surrogates.SHAPES) if shapes is None else shapes
        for shape in shapes:
            if shape not in surrogates.SHAPES:
                raise ValueError(f"unknown surrogate shape '{shape}': choose from {', '.join(surrogates.SHAPES)}")
        self.candidates = surrogates.search_space(tuple(float(k) for k in sharpness), tuple(shapes))
        self.searches: list[list[dict]] = []   # per call: every candidate's score on the calibration subset
        self.broken: Counter = Counter()       # "apgd-ce@sigmoid:4" -> samples it broke that nothing before did

    # --- what it reports, batch by batch (evaluation.evaluate merges the parts in batch order) ---
    def reset_summary(self) -> None:
        self.searches, self.broken = [], Counter()

    def summary_part(self) -> tuple[list, dict]:
        return list(self.searches), dict(self.broken)

    def merge_summaries(self, parts: list[tuple[list, dict]]) -> None:
        self.reset_summary()
        for searches, broken in parts:
            self.searches += searches
            self.broken.update(broken)

    # --- the search -----------------------------------------------------------------------
    def rank(self, images: torch.Tensor, labels: torch.Tensor, generator_seed: int | None) -> list[dict]:
        """Every candidate backward scored by APGD-CE(search_steps) through it: broken, then mean margin."""
        rows = []
        for backward in self.candidates:
            probe = APGD(self.model, eps=self.eps, steps=self.search_steps, loss="ce", seed=generator_seed,
                         surrogate=backward)
            probe.model_training = self.model_training
            adv = probe(images, labels)
            with torch.no_grad():
                left = margin(self.model(adv), labels)
            rows.append({"surrogate": backward.name, "broken": int((left < 0).sum()),
                         "mean_margin": float(left.clamp(min=0).mean()), "_backward": backward})
        rows.sort(key=lambda r: (-r["broken"], r["mean_margin"]))
        return rows

    def perturb(self, images, labels, generator):
        _, robust = self.clean_logits(images, labels)
        adv = images.clone()
        calib = robust.nonzero().flatten()[: self.calibration]
        if calib.numel() == 0:
            return adv
        ranked = self.rank(images[calib], labels[calib], self.seed)
        self.searches.append([{k: v for k, v in r.items() if not k.startswith("_")} for r in ranked])
        planned = [(name, attack, row["_backward"]) for row in ranked[: self.top_k]
                   for name, attack in self._attacks(row["_backward"])]
        for round_, idx in self.still_robust(robust, len(planned)):
            name, attack, backward = planned[round_]
            attack.model_training = self.model_training
            found = attack(images[idx], labels[idx])
            with torch.no_grad():
                broken = self.model(found).argmax(1) != labels[idx]
            adv[idx[broken]] = found[broken]
            robust[idx[broken]] = False
            self.broken[f"{name}@{backward.name}"] += int(broken.sum())
        return adv

    def _attacks(self, backward):
        yield "apgd-ce", APGD(self.model, eps=self.eps, steps=self.steps, loss="ce", seed=self.seed, surrogate=backward)
        yield "apgd-dlr", APGD(self.model, eps=self.eps, steps=self.steps, loss="dlr", seed=self.seed,
                               surrogate=backward)
        yield "apgd-t", APGDT(self.model, eps=self.eps, steps=self.steps, n_target_classes=self.n_target_classes,
                              seed=self.seed, surrogate=backward)

    def summary(self) -> dict:
        """What the search chose and what each attack through each backward broke (for reports and JSON)."""
        chosen = list(dict.fromkeys(r["surrogate"] for search in self.searches for r in search[: self.top_k]))
        return {"chosen": chosen, "broken": dict(self.broken),
                "search": self.searches[0] if self.searches else [],
                "candidates": len(self.candidates), "search_steps": self.search_steps,
                "calibration": self.calibration}

    def __repr__(self) -> str:
        return (f"AdaptiveSurrogate(eps={self.eps * 255:g}/255, {len(self.candidates)} backwards searched, "
                f"top {self.top_k}, steps={self.steps})")
