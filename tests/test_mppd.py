"""MS-MPPD: zero for identical inputs, the paper's closed form for a constant perturbation."""
import torch

from loihi_stable.metrics.perturbation import mppd, ms_mppd


def test_identical_inputs_give_zero():
    current = torch.randn(4, 10, 8)
    assert ms_mppd(current, current.clone(), 0.99).item() == 0.0


def test_constant_perturbation_closed_form():
    leak, j, steps = 0.9, 0.3, 12
    clean = torch.zeros(1, 1, steps)
    eps = mppd(clean, clean - j, leak).flatten()
    t = torch.arange(1, steps + 1, dtype=torch.float32)
    assert torch.allclose(eps, (1 - leak**t) / (1 - leak) * j, atol=1e-6)


def test_ms_mppd_is_mean_square():
    clean, pert = torch.zeros(2, 3, 2), torch.ones(2, 3, 2)
    # eps = [-1, -1 - leak] -> mean of [1, (1+leak)^2]
    assert abs(ms_mppd(clean, pert, 0.5).item() - (1 + 2.25) / 2) < 1e-6
