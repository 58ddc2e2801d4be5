"""SNN-RAT's regulariser (Ding et al., 2022), applied as a step after each optimizer step.

An orthogonal retraction W <- (1 + beta) W - beta W W^T W pulls every conv / linear weight
(conv reshaped to out x rest) towards a Parseval-tight frame, bounding each layer's
Lipschitz constant; large linear layers (>= 200 rows) update a random 30% of rows per step.
Convex-combination merge weights are projected back onto the simplex.
"""
from __future__ import annotations

import torch

RAT_BETA = {("cifar10", "vgg11"): 0.0005, ("cifar100", "vgg11"): 0.001}  # the paper's values
RAT_BETA_WRN = 0.004
RAT_BETA_OTHER = 0.001  # no value in the paper (small nets, MNIST-like data): SNN-RAT's usual one


def default_rat_beta(dataset: str, arch: str) -> float:
    """beta as the paper trains: 0.0005 CIFAR-10 VGG11, 0.001 CIFAR-100 VGG11, 0.004 WRN16."""
    if arch.startswith("wrn16"):
        return RAT_BETA_WRN
    return RAT_BETA.get((dataset, arch), RAT_BETA_OTHER)


def project_simplex(v: torch.Tensor) -> torch.Tensor:
    """Euclidean projection onto {w >= 0, sum w = 1} (Duchi et al., 2008)."""
    u, _ = torch.sort(v, descending=True)
    css = u.cumsum(0) - 1
    k = torch.arange(1, len(v) + 1, device=v.device, dtype=v.dtype)
    rho = int((u - css / k > 0).nonzero().max())
    return (v - css[rho] / (rho + 1)).clamp(min=0)


def orthogonal_retraction(weight: torch.Tensor, beta: float) -> torch.Tensor:
    w = weight.reshape(weight.shape[0], -1)
    return ((1 + beta) * w - beta * w @ (w.T @ w)).reshape(weight.shape)


@torch.no_grad()
def rat_step(model: torch.nn.Module, beta: float, row_fraction: float = 0.3, large: int = 200,
             generator: torch.Generator | None = None) -> None:
    from lava.lib.dl.slayer.synapse import layer as slayer_synapse

    from .convnets import ConvexMerge

    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, ConvexMerge):
            module.weight.copy_(project_simplex(module.weight))
        elif isinstance(module, (torch.nn.Linear, slayer_synapse.Dense)):
            w = weight.view(weight.shape[0], -1)
            if w.shape[0] >= large:
                rows = torch.randperm(w.shape[0], generator=generator)[: max(1, int(row_fraction * w.shape[0]))]
                rows = rows.to(w.device)
                w[rows] = orthogonal_retraction(w[rows], beta)
            else:
                w.copy_(orthogonal_retraction(w, beta))
        elif isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
            weight.copy_(orthogonal_retraction(weight, beta))
