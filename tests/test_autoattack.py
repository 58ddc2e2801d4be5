"""The AutoAttack-strength suite: APGD-T and Square (our own), the cascade, the worst case per
sample, and a cross-check against the original AutoAttack code (pyautoattack)."""
import pytest
import torch

from loihi_stable.attacks import APGDT, FABT, Square, load_suite, make_attack
from loihi_stable.attacks.fab import project_onto_hyperplane_linf
from loihi_stable.evaluation import build_attacks, evaluate


@pytest.fixture(scope="module")
def model(dlif_model):
    return dlif_model


@pytest.fixture(scope="module")
def batch(digits):
    return digits[1].x[:96], digits[1].y[:96]


@pytest.mark.parametrize("make", [lambda m: APGDT(m, eps=8 / 255, steps=10, n_target_classes=3),
                                  lambda m: FABT(m, eps=8 / 255, steps=20, n_target_classes=3),
                                  lambda m: Square(m, eps=8 / 255, n_queries=200)])
def test_new_attacks_stay_in_range_and_ball_and_break_something(model, batch, make):
    x, y = batch
    adv = make(model)(x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6
    with torch.no_grad():
        clean, robust = (model(x).argmax(1) == y).sum(), (model(adv).argmax(1) == y).sum()
    assert robust < clean


def test_fab_finds_minimal_norm_points_below_eps(model, batch):
    """Every sample FAB-T breaks is misclassified at an L-inf distance at most eps, the smallest FAB found;
    a larger eps breaks at least as many."""
    x, y = batch
    small, large = FABT(model, eps=4 / 255, steps=30, n_target_classes=3), FABT(model, eps=16 / 255, steps=30, n_target_classes=3)
    adv_small, adv_large = small(x, y), large(x, y)
    with torch.no_grad():
        broken = model(adv_small).argmax(1) != y
        clean_wrong = model(x).argmax(1) != y
    newly = broken & ~clean_wrong
    distance = (adv_small - x).flatten(1).abs().max(1).values
    assert newly.any() and (distance[newly] <= 4 / 255 + 1e-6).all()
    assert torch.allclose(distance[newly], small.min_norm[newly])
    not_broken = ~broken & ~clean_wrong  # what it did not break, it found no point within eps for
    assert (small.min_norm[not_broken] > 4 / 255).all()
    with torch.no_grad():
        assert (model(adv_large).argmax(1) != y).sum() >= broken.sum()


def test_fab_projection_matches_a_brute_force_on_small_cases():
    """The L-inf projection onto w.x = b inside [0, 1]: the step reaches the plane (where the box allows)
    and no smaller uniform step does."""
    torch.manual_seed(0)
    points, w, b = torch.rand(200, 5), torch.randn(200, 5), torch.randn(200) * 0.5
    d = project_onto_hyperplane_linf(points, w, b)
    moved = points + d
    assert moved.min() >= -1e-6 and moved.max() <= 1 + 1e-6
    reachable = ((w.clamp(min=0).sum(1) >= b) & (w.clamp(max=0).sum(1) <= b))  # the plane meets the box
    on_plane = ((w * moved).sum(1) - b).abs() < 1e-4
    assert on_plane[reachable].float().mean() > 0.99
    shrunk = points + 0.98 * d  # a shorter step (same direction) stays on the starting side
    start_side = torch.sign((w * points).sum(1) - b)
    assert (torch.sign((w * shrunk).sum(1) - b) == start_side)[reachable & (d.abs().max(1).values > 1e-4)].all()


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
    assert [a if isinstance(a, str) else a["name"] for a in load_suite("autoattack")] == ["apgd-ce100", "apgd-t", "fab-t", "square"]
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


def test_run_reports_the_chips_worst_case_over_every_set(tmp_path, lif_checkpoint, dlif_checkpoint):
    """`run --attack fast`: the suite chip-aware, from the float twin, from another model, Square against
    the chip; `robust` is the per-sample worst case, at most every set's accuracy."""
    import json

    from typer.testing import CliRunner

    from loihi_stable.cli import app
    from loihi_stable.io import save_checkpoint

    save_checkpoint(tmp_path / "lif.pt", lif_checkpoint)
    save_checkpoint(tmp_path / "other.pt", dlif_checkpoint)
    runner = CliRunner()
    assert runner.invoke(app, ["export", str(tmp_path / "lif.pt"), "-o", str(tmp_path / "lif.net")]).exit_code == 0
    result = runner.invoke(app, ["run", "--backend", "emulator", "--attack", "fast", "--limit", "48", "--quiet",
                                 "--transfer-from", str(tmp_path / "other.pt"), "--json", str(tmp_path / "r.json"),
                                 str(tmp_path / "lif.net")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["results"]) == ["clean", "fast", "fast-from-float", "fast-transfer", "square500-on-chip"]
    assert report["robust"] == report["robust_chip"] <= min(r["accuracy_chip"] for r in report["results"].values())
    assert report["robust"] < report["results"]["clean"]["accuracy_chip"]
    assert "ROBUST" in result.output
