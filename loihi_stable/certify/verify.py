"""Verified accuracy: a sample is verified when the lower bound of logit[y] - logit[j] is > 0 for all j != y."""
from __future__ import annotations

import numpy as np
import torch
from ..progress import progress_bar

from ..attacks import PGD
from .scrown import crown_margin_lower_bound
from .sibp import ibp_bounds, margin_lower_bound

METHODS = ("ibp", "crown", "both")


def verified(margin_lower: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B,) bool from margin lower bounds (B, K)."""
    others = margin_lower.clone()
    others[torch.arange(len(y)), y] = torch.inf
    return (others > 0).all(1)


@torch.no_grad()
def certify_batch(model, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "both") -> dict:
    """Per-sample verified flags under S-IBP and/or S-CROWN (and their union, 'verified')."""
    model.eval()
    bounds = ibp_bounds(model, x, eps)
    out = {"ibp": verified(margin_lower_bound(bounds, y), y)}
    if method in ("crown", "both"):
        crown = crown_margin_lower_bound(model, x, y, eps, bounds)
        out["crown"] = verified(crown, y)
        out["verified"] = out["ibp"] | out["crown"] if method == "both" else out["crown"]
    else:
        out["verified"] = out["ibp"]
    return out


def certify(model, x: torch.Tensor, y: torch.Tensor, eps: float, method: str = "both", spec=None,
            pgd_steps: int = 10, batch_size: int = 128, progress: bool = True, check_points: int = 8,
            float_bounds: bool = True) -> dict:
    """Clean, PGD and verified accuracy (fractions); with ``spec`` also the on-chip certificate.

    PGD accuracy is an upper bound of what any sound verifier can verify. Without
    ``float_bounds`` only the chip is certified (conv networks: ``model`` is then the grid model).
    """
    if method not in METHODS:
        from ..errors import UserError
        raise UserError(f"unknown --method '{method}': choose one of {', '.join(METHODS)}")
    model.eval()
    attack = PGD(model, eps=eps, steps=pgd_steps) if eps > 0 else None
    counts: dict[str, int] = {}
    flags: dict[str, list] = {}
    chip_flags, chip_checks = [], []
    batches = range(0, len(x), batch_size)
    for start in progress_bar(batches, desc="certify", unit="batch", disable=not progress):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        with torch.no_grad():
            clean_ok = model(xb).argmax(1) == yb
        adv = attack(xb, yb) if attack is not None else xb
        with torch.no_grad():
            pgd_ok = model(adv).argmax(1) == yb
        result = {"clean": clean_ok, "pgd": pgd_ok}
        if float_bounds:
            result.update(certify_batch(model, xb, yb, eps, method))
        for key, value in result.items():
            flags.setdefault(key, []).append(value.cpu().numpy())
        if spec is not None:
            from netx_export.chip_certificate import chip_bounds, check_chip_certificate
            cert = chip_bounds(spec, xb.numpy(), yb.numpy(), eps)
            chip_flags.append(cert.verified)
            if check_points:
                chip_checks.append(check_chip_certificate(spec, cert, xb.numpy(), yb.numpy(), eps, check_points))
    flags = {k: np.concatenate(v) for k, v in flags.items()}
    n = len(x)
    out = {"n": n, "eps": eps, "eps_255": round(eps * 255, 4), "method": method,
           **{k: float(v.mean()) if n else 0.0 for k, v in flags.items()}}
    # soundness in the open: a verified sample that PGD breaks would be a bug
    if "verified" in flags:
        out["verified_but_broken_by_pgd"] = int((flags["verified"] & ~flags["pgd"]).sum())
    out["_flags"] = flags
    if spec is not None:
        chip = np.concatenate(chip_flags)
        out["verified_chip"] = float(chip.mean()) if n else 0.0
        out["_flags"]["verified_chip"] = chip
        out["verified_chip_but_broken_by_pgd"] = int((chip & ~flags["pgd"]).sum())
        if chip_checks:
            out["chip_check"] = {
                "points_per_sample": check_points,
                "readouts_inside_bounds": all(c["readouts_inside_bounds"] for c in chip_checks),
                "verified_samples_broken": sum(c["verified_samples_broken"] for c in chip_checks)}
    return out
