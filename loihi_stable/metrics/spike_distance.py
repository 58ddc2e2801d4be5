"""Spike-train distances (paper Eq. 12 and 13), per sample, averaged over the batch."""
from __future__ import annotations

import torch


def tasad(spikes_clean: torch.Tensor, spikes_perturbed: torch.Tensor) -> torch.Tensor:
    """TASAD = || (sum_t s[t] - sum_t s~[t]) / T ||_2 (Kundu et al. 2021)."""
    steps = spikes_clean.shape[-1]
    rate_diff = (spikes_clean - spikes_perturbed).sum(-1) / steps
    return rate_diff.flatten(1).norm(dim=1).mean()


def std(spikes_clean: torch.Tensor, spikes_perturbed: torch.Tensor) -> torch.Tensor:
    """STD = sqrt(sum_t || s[t] - s~[t] ||^2) (Ding et al. 2022)."""
    return (spikes_clean - spikes_perturbed).pow(2).flatten(1).sum(1).sqrt().mean()
