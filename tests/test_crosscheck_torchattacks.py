"""Our attacks against torchattacks 3.5.1 (the peer) on the same SNN, inputs and eps: within 2 points."""
import pytest
import torch

import torchattacks  # the cross-check peer, installed by make setup

from loihi_stable.attacks import APGD, FGSM, PGD
from netx_export.compiler.export import model_from_checkpoint

EPS = 16 / 255  # large enough on 8x8 digits that every attack bites


@pytest.fixture(scope="module")
def setup(dlif_checkpoint, digits):
    model = model_from_checkpoint(dlif_checkpoint)
    x, y = digits[1].x.reshape(-1, 1, 8, 8), digits[1].y  # torchattacks' APGD wants NCHW
    return model, x, y


def accuracy(model, images, labels):
    with torch.no_grad():
        return (model(images).argmax(1) == labels).float().mean().item()


def peer(name, model):
    if name == "fgsm":
        return torchattacks.FGSM(model, eps=EPS)
    if name == "pgd10":
        return torchattacks.PGD(model, eps=EPS, alpha=EPS / 4, steps=10, random_start=True)
    return torchattacks.APGD(model, eps=EPS, steps=10, n_restarts=1, loss=name.split("-")[1], rho=0.75, seed=0)


def ours(name, model):
    if name == "fgsm":
        return FGSM(model, eps=EPS)
    if name == "pgd10":
        return PGD(model, eps=EPS, alpha=EPS / 4, steps=10, seed=0)
    return APGD(model, eps=EPS, steps=10, n_restarts=1, loss=name.split("-")[1], rho=0.75, seed=0)


@pytest.mark.parametrize("name", ["fgsm", "pgd10", "apgd-ce", "apgd-dlr"])
def test_robust_accuracy_agrees_with_torchattacks(setup, name):
    model, x, y = setup
    rng = torch.get_rng_state()
    torch.manual_seed(0)  # seed-match torchattacks' PGD random start (it draws from the global RNG)
    theirs = accuracy(model, peer(name, model)(x, y), y)
    torch.set_rng_state(rng)
    mine = accuracy(model, ours(name, model)(x, y), y)
    clean = accuracy(model, x, y)
    assert mine < clean, "the attack must bite for the comparison to mean anything"
    assert abs(mine - theirs) <= 0.02, f"{name}: ours {mine:.4f} vs torchattacks {theirs:.4f}"
