"""Attack correctness: budgets, reproducibility, model hygiene, and sanity checks against gradient masking."""
import json

import pytest
import torch

from loihi_stable.attacks import APGD, FGSM, PGD, GaussianNoise, dlr_loss, load_suite, make_attack
from loihi_stable.attacks.pgd import default_step_size
from loihi_stable.attacks.registry import suite_description
from loihi_stable.errors import UserError
from loihi_stable.evaluation import evaluate


@pytest.fixture(scope="module")
def model(dlif_model):
    return dlif_model


@pytest.fixture(scope="module")
def batch(digits):
    return digits[1].x[:128], digits[1].y[:128]


def robust_accuracy(model, attack, x, y):
    with torch.no_grad():
        return (model(attack(x, y)).argmax(1) == y).float().mean().item()


@pytest.mark.parametrize("make", [
    lambda m: FGSM(m, eps=8 / 255), lambda m: PGD(m, eps=8 / 255, steps=7),
    lambda m: APGD(m, eps=8 / 255, loss="ce"), lambda m: APGD(m, eps=8 / 255, loss="dlr")])
def test_adversarial_images_stay_in_range_and_ball(model, batch, make):
    x, y = batch
    adv = make(model)(x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6


def test_attack_restores_mode_and_leaks_no_gradients(model, batch):
    x, y = batch
    model.train()
    flags = [p.requires_grad for p in model.parameters()]
    PGD(model, eps=8 / 255, steps=3)(x, y)
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())
    model.eval()


def test_seeded_random_starts_are_reproducible(model, batch):
    x, y = batch
    a, b = PGD(model, seed=7)(x, y), PGD(model, seed=7)(x, y)
    c = PGD(model, seed=8)(x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)
    state = torch.get_rng_state()
    APGD(model, seed=3)(x, y)
    assert torch.equal(state, torch.get_rng_state()), "attacks must not touch the global RNG"


def test_eps_one_leaves_nothing_robust(model, batch):
    x, y = batch
    assert robust_accuracy(model, PGD(model, eps=1.0, alpha=0.25, steps=10), x, y) <= 0.05


def test_more_steps_and_restarts_do_not_raise_robust_accuracy(model, digits):
    x, y = digits[1].x, digits[1].y
    eps = 16 / 255
    pgd = {k: robust_accuracy(model, PGD(model, eps=eps, steps=k), x, y) for k in (7, 40)}
    assert pgd[40] <= pgd[7] + 0.02, pgd
    one = robust_accuracy(model, APGD(model, eps=eps, n_restarts=1), x, y)
    three = robust_accuracy(model, APGD(model, eps=eps, n_restarts=3), x, y)
    assert three <= one


@pytest.mark.parametrize("attack", ["pgd", "apgd"])
def test_attack_loss_rises_along_iterations(model, batch, attack):
    x, y = batch
    atk = PGD(model, eps=16 / 255, steps=10) if attack == "pgd" else APGD(model, eps=16 / 255)
    atk(x, y)
    losses = torch.stack(atk.loss_history)
    assert losses[-1] > losses[0] and losses.max() > losses[0]


def test_dlr_loss_by_hand():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0], [0.0, 4.0, 2.0, 1.0]])
    labels = torch.tensor([0, 2])
    # sample 0: true is top -> -(3 - 1)/(3 - 0); sample 1: -(2 - 4)/(4 - 1)
    assert torch.allclose(dlr_loss(logits, labels), torch.tensor([-2 / 3, 2 / 3]))


def test_paper_step_sizes():
    assert default_step_size(7, 8 / 255) == pytest.approx(2.55 / 255)
    assert default_step_size(10, 8 / 255) == pytest.approx(2 / 255)
    assert default_step_size(20, 8 / 255) == pytest.approx(1 / 255)
    assert default_step_size(40, 8 / 255) == pytest.approx(0.5 / 255)
    assert PGD(None, eps=8 / 255, steps=5).alpha == pytest.approx(4 / 255)


def test_gaussian_noise_is_clamped_for_evaluation(model, batch):
    x, y = batch
    noisy = GaussianNoise(model, eps=0.5)(x, y)
    assert noisy.min() >= 0 and noisy.max() <= 1 and not torch.equal(noisy, x)


def test_suite_files(tmp_path, model):
    entries = ["fgsm", {"name": "pgd5-small", "type": "pgd", "steps": 5, "alpha": "1/255"}]
    (tmp_path / "s.json").write_text(json.dumps({"attacks": entries}))
    (tmp_path / "s.yaml").write_text("- fgsm\n- {name: pgd5-small, type: pgd, steps: 5, alpha: 1/255}\n")
    for path in ("s.json", "s.yaml"):
        specs = load_suite(str(tmp_path / path))
        name, atk = make_attack(specs[1], model, 8 / 255)
        assert name == "pgd5-small" and atk.steps == 5 and atk.alpha == pytest.approx(1 / 255)
    assert load_suite("standard")[0] == "fgsm"
    with pytest.raises(UserError, match="unknown attack"):
        make_attack("cw", model, 8 / 255)
    with pytest.raises(UserError):
        load_suite(str(tmp_path / "missing.json"))
    # where a number is printed, a suite file is called one, not "one attack"
    assert "suite file" in suite_description(str(tmp_path / "s.json"))
    assert suite_description("pgd").startswith("one attack")


def test_evaluate_accepts_torchattacks_objects(model, batch):
    import torchattacks  # the cross-check peer, installed by make setup
    from loihi_stable.data import Split

    data = Split(*batch)
    ours = evaluate(model, data, {"fgsm": FGSM(model, eps=8 / 255)}, progress=False)
    theirs = evaluate(model, data, {"fgsm": torchattacks.FGSM(model, eps=8 / 255)}, progress=False)
    assert ours["fgsm"] == theirs["fgsm"]
    assert ours["layers"]["fgsm"][-1]["ms_mppd"] == pytest.approx(theirs["layers"]["fgsm"][-1]["ms_mppd"])
