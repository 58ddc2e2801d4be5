"""The AutoAttack-strength suite: APGD-T and Square (our own), the cascade, the worst case per
sample, and a cross-check against the original AutoAttack code (pyautoattack)."""
import pytest
import torch

from loihi_stable.attacks import APGDT, Square, load_suite, make_attack
from loihi_stable.evaluation import build_attacks, evaluate
from netx_export.export import model_from_checkpoint


@pytest.fixture(scope="module")
def model(dlif_checkpoint):
    return model_from_checkpoint(dlif_checkpoint)


@pytest.fixture(scope="module")
def batch(digits):
    return digits[1].x[:96], digits[1].y[:96]


@pytest.mark.parametrize("make", [lambda m: APGDT(m, eps=8 / 255, steps=10, n_target_classes=3),
                                  lambda m: Square(m, eps=8 / 255, n_queries=200)])
def test_new_attacks_stay_in_range_and_ball_and_break_something(model, batch, make):
    x, y = batch
    adv = make(model)(x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        clean, robust = (model(x).argmax(1) == y).sum(), (model(adv).argmax(1) == y).sum()
    assert robust < clean


def test_square_never_asks_for_a_gradient(model, batch):
    x, y = batch
    calls = {"n": 0}

    def logits_only(images):
        assert not torch.is_grad_enabled() and not images.requires_grad
        calls["n"] += 1
        return model(images)

    square = Square(model, eps=8 / 255, n_queries=50, logits=logits_only)
    adv = square(x, y)
    assert calls["n"] >= 2 and (adv - x).abs().max() <= 8 / 255 + 1e-6
    assert square.queries_used.max() <= 51


def test_square_follows_the_p_schedule():
    from loihi_stable.attacks.square import p_selection

    assert [p_selection(0.8, q) for q in (0, 10, 11, 51, 201, 501, 1001, 2001, 4001, 6001, 8001)] == \
        [0.8, 0.8, 0.4, 0.2, 0.1, 0.05, 0.025, 0.0125, 0.00625, 0.003125, 0.0015625]


def test_targeted_apgd_aims_at_the_ranked_classes(model, batch):
    """Each round's targets are the clean logits' 2nd, 3rd, ... highest classes."""
    from loihi_stable.attacks.apgd_targeted import targeted_dlr_loss

    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]])
    # -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4)/2) with y=0, t=1: -(4-3)/(4-1.5)
    assert targeted_dlr_loss(logits, torch.tensor([0]), torch.tensor([1])).item() == pytest.approx(-1 / 2.5)


@pytest.mark.parametrize("cascade", [False, True])
def test_robust_is_the_worst_case_per_sample(model, digits, cascade):
    data = digits[1].head(64)
    attacks = build_attacks(model, ["fgsm", "apgd-ce", "square100"], 8 / 255)
    result = evaluate(model, data, attacks, progress=False, cascade=cascade)
    columns = [result[name] for name in ("clean", "fgsm", "apgd-ce", "square100")]
    assert result["robust"] <= min(columns)
    if cascade:  # each column is the accuracy after that attack: never rises, ends at the headline
        assert columns == sorted(columns, reverse=True) and result["robust"] == columns[-1]


def test_named_suites():
    assert [a if isinstance(a, str) else a["name"] for a in load_suite("autoattack")] == ["apgd-ce100", "apgd-t", "square"]
    assert make_attack("apgd-ce100", None, 8 / 255)[1].steps == 100
    assert make_attack("apgd-t", None, 8 / 255)[1].n_target_classes == 9
    assert make_attack("square", None, 8 / 255)[1].n_queries == 5000


def test_within_one_point_of_the_original_autoattack(model, digits):
    """Our autoattack suite vs pyautoattack's standard evaluation (APGD-CE, APGD-T, FAB-T, Square),
    same model, samples and eps."""
    import pyautoattack  # installed by make setup (--no-deps): a missing peer fails, never skips
    data = digits[1].head(200)
    eps = 8 / 255
    ours = evaluate(model, data, build_attacks(model, load_suite("autoattack"), eps), progress=False, cascade=True)

    class Images(torch.nn.Module):  # the original takes (N, C, H, W)
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            return self.inner(images.reshape(len(images), -1))

    net = Images(model).eval()
    adversary = pyautoattack.AutoAttack(net, norm="Linf", eps=eps, version="standard", device="cpu", seed=0)
    adv, _ = adversary.run_standard_evaluation(data.x.reshape(-1, 1, 8, 8), data.y, batch_size=256)
    with torch.no_grad():
        theirs = (net(adv).argmax(1) == data.y).float().mean().item()
    assert abs(ours["robust"] - theirs) <= 0.01, (ours["robust"], theirs)
