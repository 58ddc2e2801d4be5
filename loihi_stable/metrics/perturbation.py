"""Membrane potential perturbation dynamics (Ding et al., ICML 2024, Eq. 11 and 14).

Time is the last axis; tensors are (batch, neurons..., T).
"""
from __future__ import annotations

import torch


def mppd(current_clean: torch.Tensor, current_perturbed: torch.Tensor, leak: float) -> torch.Tensor:
    """eps[t] = lambda*eps[t-1] + (I_clean[t] - I_pert[t]), eps[0] = 0; time is the last axis.

    No reset and no a[t]: the simplified dynamics of the paper.
    """
    delta = current_clean - current_perturbed
    eps = torch.zeros_like(delta[..., 0])
    trace = []
    for t in range(delta.shape[-1]):
        eps = leak * eps + delta[..., t]
        trace.append(eps)
    return torch.stack(trace, dim=-1)


def ms_mppd(current_clean: torch.Tensor, current_perturbed: torch.Tensor, leak: float) -> torch.Tensor:
    """Mean square of the MPPD over batch, neurons and time (a mean, as the authors' code)."""
    return mppd(current_clean, current_perturbed, leak).pow(2).mean()


def membrane_difference(voltage_clean: torch.Tensor, voltage_perturbed: torch.Tensor) -> torch.Tensor:
    """Mean square of the raw difference v - v~ (with spikes and resets: the unsimplified dynamics)."""
    return (voltage_clean - voltage_perturbed).pow(2).mean()
