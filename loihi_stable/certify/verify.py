"""Verified accuracy: a sample is verified when the lower bound of logit[y] - logit[j] is > 0 for all j != y."""
from __future__ import annotations

import numpy as np
import torch

from .. import sharding
from ..attacks import PGD
from ..progress import progress_bar
from .scrown import crown_margin_lower_bound, tightened_bounds
from .sibp import ibp_bounds, margin_lower_bound

METHODS = ("ibp", "crown", "both")
CROWN_STEPS = 20  # alpha-CROWN slope optimisation steps per batch (0: the area heuristic's slopes)


def verified(margin_lower: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) bool from margin lower bounds (B, K)."""
    others = margin_lower.clone()
    others[torch.arange(len(y), device=y.device), y] = torch.inf
    return (others > 0).all(1)


def certify_batch(model, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "both",
                  crown_steps: int = CROWN_STEPS, tighten: bool = False) -> dict:
    """Per-sample verified flags under S-IBP and/or S-CROWN; with both, 'verified' takes the better
    of the two bounds per margin (never looser than either, and at least their union). With
    ``tighten`` S-CROWN first intersects every voltage with its own S-CROWN bound (slower)."""
    model.eval()
    with torch.no_grad():
        bounds = ibp_bounds(model, x, eps)
        ibp_margin = margin_lower_bound(bounds, y)
    out = {"ibp": verified(ibp_margin, y)}
    if method in ("crown", "both"):
        if tighten:
            tight = tightened_bounds(model, x, eps, plain=bounds)
            crown = torch.maximum(crown_margin_lower_bound(model, x, y, eps, tight, iterations=crown_steps),
                                  margin_lower_bound(tight, y))
        else:
            crown = crown_margin_lower_bound(model, x, y, eps, bounds, iterations=crown_steps)
        out["crown"] = verified(crown, y)
        out["verified"] = verified(torch.maximum(ibp_margin, crown), y) if method == "both" else out["crown"]
    else:
        out["verified"] = out["ibp"]
    return out


def _certify_one_batch(model, models: dict, attacks: dict, xb, yb, eps: float, method: str, crown_steps: int,
                       tighten: bool, float_bounds: bool, chip_certificate) -> dict:
    """Per-sample flags of one batch (clean, PGD, bounds; the chip certificate's verdict and check), numpy."""
    result = {}
    for suffix, m in models.items():
        adv = attacks[suffix](xb, yb) if attacks[suffix] is not None else xb
        with torch.no_grad():
            result["clean" + suffix] = m(xb).argmax(1) == yb
            result["pgd" + suffix] = m(adv).argmax(1) == yb
    if float_bounds:
        result.update(certify_batch(model, xb, yb, eps, method, crown_steps, tighten))
    part = {"flags": {key: value.cpu().numpy() for key, value in result.items()}}
    if chip_certificate is not None:
        part["chip"], part["check"] = chip_certificate(xb.cpu().numpy(), yb.cpu().numpy(), eps)
    return part


def certify(model, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "both", chip_certificate=None,
            pgd_steps: int = 10, batch_size: int = 128, progress: bool = True,
            float_bounds: bool = True, crown_steps: int = CROWN_STEPS, chip_model=None, tighten: bool = False) -> dict:
    """Clean, PGD and verified accuracy (fractions); with ``chip_certificate`` also the on-chip one.

    ``chip_certificate(x, y, eps)`` (numpy in) gives per sample whether the exported integer network
    is verified, and the check of its bounds on random points or None: it comes from the exporting
    side (``netx_export.analysis.chip_certificate.certifier``), so that this package never imports it.

    PGD accuracy is an upper bound of what any sound verifier can verify. ``chip_model`` is the
    differentiable model of what the chip runs where that is not ``model`` itself (conv networks:
    the grid model): its clean and PGD accuracy come as ``clean_chip`` and ``pgd_chip``, and the
    chip certificate is checked against them. Without ``float_bounds`` only the chip is certified.
    """
    if method not in METHODS:
        from ..errors import UserError
        raise UserError(f"unknown --method '{method}': choose one of {', '.join(METHODS)}")
    # the bounds and attacks run where x lies (the models must be there too); the chip certificate on the CPU
    model.eval()
    models = {"": model, **({"_chip": chip_model.eval()} if chip_model is not None else {})}
    attacks = {k: PGD(m, eps=eps, steps=pgd_steps) if eps > 0 else None for k, m in models.items()}
    with progress_bar(total=sharding.share_size(len(x), batch_size), desc="certify", unit="batch",
                      disable=not progress or not sharding.is_main()) as bar:
        def one_batch(batch: slice) -> dict:
            part = _certify_one_batch(model, models, attacks, x[batch], y[batch], eps, method, crown_steps, tighten,
                                      float_bounds, chip_certificate)
            bar.update(1)
            return part

        parts = sharding.map_batches(len(x), batch_size, one_batch)  # under torchrun: batches shared out
    flags: dict[str, list] = {}
    for part in parts:
        for key, value in part["flags"].items():
            flags.setdefault(key, []).append(value)
    chip_flags = [part["chip"] for part in parts if "chip" in part]
    chip_checks = [part["check"] for part in parts if part.get("check") is not None]
    flags = {k: np.concatenate(v) for k, v in flags.items()}
    n = len(x)
    out = {"n": n, "eps": eps, "eps_255": round(eps * 255, 4), "method": method,
           **{k: float(v.mean()) if n else 0.0 for k, v in flags.items()}}
    # soundness in the open: a verified sample that PGD breaks would be a bug
    if "verified" in flags:
        out["verified_but_broken_by_pgd"] = int((flags["verified"] & ~flags["pgd"]).sum())
    out["_flags"] = flags
    if chip_certificate is not None:
        chip = np.concatenate(chip_flags)
        out["verified_chip"] = float(chip.mean()) if n else 0.0
        out["_flags"]["verified_chip"] = chip
        chip_pgd = flags["pgd_chip" if chip_model is not None else "pgd"]
        out["verified_chip_but_broken_by_pgd"] = int((chip & ~chip_pgd).sum())
        if chip_checks:
            out["chip_check"] = {
                "points_per_sample": chip_checks[0]["points_per_sample"],
                "readouts_inside_bounds": all(c["readouts_inside_bounds"] for c in chip_checks),
                "verified_samples_broken": sum(c["verified_samples_broken"] for c in chip_checks)}
    return out
