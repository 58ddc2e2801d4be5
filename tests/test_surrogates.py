"""The spike's backward as a parameter of the attack: the forward never changes, each backward's
gradient is its own definition, and the per-model search finds what the training surrogate masks."""
import copy

import pytest
import torch
from typer.testing import CliRunner

from loihi_stable import surrogates
from loihi_stable.attacks import APGD, AdaptiveSurrogate, make_attack
from loihi_stable.cli import app
from loihi_stable.errors import UserError
from loihi_stable.neurons import FusedDynamics
from loihi_stable.surrogates import Backward

EVERY = [*surrogates.search_space(sharpness=(0.25, 1.0, 4.0)), Backward("triangle", 2.0)]
SHAPES = [s for s in surrogates.SHAPES if s != "rate"]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("sharpness", [0.3, 1.0, 5.0])
def test_each_density_is_the_derivative_of_its_primitive(shape, sharpness):
    backward = Backward(shape, sharpness)
    z = torch.linspace(-3, 3, 601, dtype=torch.float64)
    kinks = torch.tensor([0.0, 0.5, -0.5, 1.0, -1.0], dtype=torch.float64) / sharpness  # triangle's, rectangle's
    z = z[(z[:, None] - kinks).abs().min(1).values > 0.01]
    h = 1e-6
    finite = (backward.primitive(z + h) - backward.primitive(z - h)) / (2 * h)
    assert torch.allclose(backward.density(z), finite, atol=1e-5)
    if shape != "ste":  # a density: it integrates to 1 (the step height) and peaks at the sharpness
        grid = torch.linspace(-200, 200, 2_000_001, dtype=torch.float64)
        assert abs(torch.trapezoid(backward.density(grid), grid).item() - 1) < 1e-2
        assert abs(backward.density(torch.zeros(1, dtype=torch.float64)).item() - sharpness) < 1e-9


def reference_unroll(current, decay, threshold, width, backward):
    """The dynamics step by step in autograd, spikes through ``surrogates.step_spike`` (the definition)."""
    u = torch.zeros_like(current[..., 0])
    total = torch.zeros_like(u)
    spikes = []
    for t in range(current.shape[-1]):
        v = decay[t] * u + current[..., t]
        total = total + current[..., t]
        s, u = surrogates.step_spike(v, threshold, width, backward, total / (t + 1))
        spikes.append(s)
    return torch.stack(spikes, -1)


@pytest.mark.parametrize("backward", EVERY, ids=lambda b: b.name)
def test_fused_bptt_matches_the_definition_of_each_backward(backward):
    torch.manual_seed(0)
    current = (torch.randn(16, 12, 6, dtype=torch.float64) * 0.8 + 0.4).requires_grad_(True)
    decay = torch.rand(6, dtype=torch.float64) * 0.5 + 0.5
    weights = torch.randn(16, 12, 6, dtype=torch.float64)
    fused, _ = FusedDynamics.apply(current, decay, 1.0, 0.7, None, 1, backward)
    (g_fused,) = torch.autograd.grad((fused * weights).sum(), current)
    reference = reference_unroll(current, decay, 1.0, 0.7, backward)
    (g_ref,) = torch.autograd.grad((reference * weights).sum(), current)
    assert torch.equal(fused.detach(), reference.detach())
    assert torch.allclose(g_fused, g_ref, atol=1e-10), (g_fused - g_ref).abs().max()


def test_the_training_backward_is_the_models_own_gradient():
    torch.manual_seed(1)
    current = torch.randn(8, 5, 4, dtype=torch.float64).requires_grad_(True)
    decay = torch.full((4,), 0.9, dtype=torch.float64)
    own, _ = FusedDynamics.apply(current, decay, 1.0, 1.0, None, 1, None)
    chosen, _ = FusedDynamics.apply(current, decay, 1.0, 1.0, None, 1, surrogates.TRAINING)
    (g_own,) = torch.autograd.grad(own.sum(), current)
    (g_chosen,) = torch.autograd.grad(chosen.sum(), current)
    assert torch.allclose(g_own, g_chosen, atol=1e-12)


def forward_and_gradient(model, x, y, backward):
    x = x.clone().requires_grad_(True)
    with surrogates.backward_through(model, backward):
        logits = model(x)
        (grad,) = torch.autograd.grad(torch.nn.functional.cross_entropy(logits, y), x)
    return logits.detach(), grad


def models(dlif_model, conv_dlif_checkpoint, tmp_path_factory):
    from netx_export.analysis.chip_model import ChipModel
    from netx_export.compiler.export import model_from_checkpoint, write_netx
    from netx_export.fileformat.netx_file import read_netx

    conv = model_from_checkpoint(conv_dlif_checkpoint)
    path = tmp_path_factory.mktemp("surrogate") / "conv.net"
    write_netx(conv, conv_dlif_checkpoint, path)
    return {"dense QAT (chip arithmetic)": dlif_model, "conv (grid arithmetic)": conv,
            "conv grid model (ChipModel)": ChipModel(read_netx(path))}


@pytest.fixture(scope="module")
def three_models(dlif_model, conv_dlif_checkpoint, tmp_path_factory):
    return models(dlif_model, conv_dlif_checkpoint, tmp_path_factory)


@pytest.mark.parametrize("which", ["dense QAT (chip arithmetic)", "conv (grid arithmetic)", "conv grid model (ChipModel)"])
def test_swapping_the_backward_leaves_the_logits_identical(three_models, digits, which):
    model = three_models[which].eval()
    x, y = digits[1].x[:24], digits[1].y[:24]
    own, own_grad = forward_and_gradient(model, x, y, None)
    gradients = []
    for backward in EVERY:
        logits, grad = forward_and_gradient(model, x, y, backward)
        assert torch.equal(logits, own), backward.name  # bit for bit, chip arithmetic included
        assert torch.isfinite(grad).all()
        gradients.append(grad)
    assert all(m.spike_backward is None for m in model.modules() if hasattr(m, "spike_backward"))  # restored
    differs = sum(not torch.allclose(g, own_grad) for g in gradients)
    assert differs >= len(EVERY) - 2, "the chosen backwards should change the gradient"


def float_twin(model):
    twin = copy.deepcopy(model)
    for m in twin.modules():
        if isinstance(getattr(m, "arithmetic", None), str):
            m.arithmetic = "float"
    return twin.eval()


def masked(model, factor: float = 25.0):
    """The float twin with every spiking layer's weights and threshold times ``factor``: the same
    spikes and logits, but voltages so far from threshold that the training triangle (width 1) sees
    almost none of them: its gradient is masked."""
    model = float_twin(model)
    for block in model.blocks:
        block.synapse.weight.data *= factor
        block.neuron._threshold *= factor
    return model


def test_the_search_finds_a_backward_the_training_surrogate_masks(dlif_model, digits):
    model, plain = masked(dlif_model), float_twin(dlif_model)
    x, y = digits[1].x[:128], digits[1].y[:128]
    with torch.no_grad():
        keep = model(x).argmax(1) == y
        assert (plain(x).argmax(1) == model(x).argmax(1)).float().mean() > 0.97  # the same classifier
    x, y = x[keep][:64], y[keep][:64]
    eps = 16 / 255
    with torch.no_grad():
        broken_own = int((model(APGD(model, eps=eps, steps=20)(x, y)).argmax(1) != y).sum())
    search = AdaptiveSurrogate(model, eps=eps, steps=20, search_steps=10, calibration=64, top_k=1)
    ranked = search.rank(x, y, 0)
    best = ranked[0]
    training = next(r for r in ranked if r["surrogate"] == "triangle:1")
    assert best["surrogate"] != "triangle:1"
    assert best["broken"] > training["broken"], (best, training)
    through_best = APGD(model, eps=eps, steps=20, surrogate=best["surrogate"])
    with torch.no_grad():
        broken_best = int((model(through_best(x, y)).argmax(1) != y).sum())
    assert broken_best > broken_own, (broken_best, broken_own)


def test_the_adaptive_attack_reports_what_each_backward_broke(dlif_model, digits):
    x, y = digits[1].x[:64], digits[1].y[:64]
    attack = AdaptiveSurrogate(dlif_model, eps=16 / 255, steps=10, search_steps=5, calibration=16, top_k=2,
                               sharpness=[1.0, 4.0], shapes=["triangle", "arctan", "rate"])
    adv = attack(x, y)
    assert (adv - x).abs().max() <= 16 / 255 + 1e-6
    summary = attack.summary()
    assert len(summary["chosen"]) == 2 and summary["candidates"] == 2 * 2 * 2 + 1
    restarted = [r["surrogate"] for r in summary["search"][: summary["restart_backwards"]]]
    assert set(summary["broken"]) <= {f"{a}@{b}" for a in ("apgd-ce", "apgd-dlr", "apgd-t") for b in summary["chosen"]} \
        | {f"restart {a}@{b}" for a in ("apgd-ce", "apgd-dlr") for b in restarted}
    with torch.no_grad():
        clean_ok = dlif_model(x).argmax(1) == y
        broken = int((clean_ok & (dlif_model(adv).argmax(1) != y)).sum())
    assert broken == sum(summary["broken"].values())  # every sample counted once, by the real forward


def test_a_wider_final_stage_only_adds_to_the_narrower_one(dlif_model, digits):
    """top_k attacks through the best k backwards in rank order, same seeds: every sample the best 2 break,
    the best 4 break too (the default's 5 over 3 relies on it)."""
    x, y = digits[1].x[:64], digits[1].y[:64]
    options = dict(eps=16 / 255, steps=5, search_steps=3, calibration=16, sharpness=[1.0, 4.0],
                   shapes=["triangle", "arctan", "sigmoid"], borderline=0)
    narrow, wide = (AdaptiveSurrogate(dlif_model, top_k=k, **options) for k in (2, 4))
    with torch.no_grad():
        broken_narrow = dlif_model(narrow(x, y)).argmax(1) != y
        broken_wide = dlif_model(wide(x, y)).argmax(1) != y
    assert broken_narrow.any() and not (broken_narrow & ~broken_wide).any()
    assert narrow.summary()["chosen"] == wide.summary()["chosen"][:2]
    assert all(wide.summary()["broken"].get(key, 0) == n for key, n in narrow.summary()["broken"].items())


def test_restarts_on_the_borderline_only_add(dlif_model, digits):
    """The restarts run after the top_k stage, on the samples it left robust closest to the boundary: they
    can break more, never less, and attack no more samples than the borderline fraction."""
    x, y = digits[1].x[:64], digits[1].y[:64]
    options = dict(eps=12 / 255, steps=5, search_steps=3, calibration=16, sharpness=[1.0, 4.0], top_k=1,
                   shapes=["triangle", "arctan"], restart_backwards=3)
    without, every = (AdaptiveSurrogate(dlif_model, borderline=b, **options) for b in (0.0, 1.0))
    with torch.no_grad():
        broken_without = dlif_model(without(x, y)).argmax(1) != y
        broken_every = dlif_model(every(x, y)).argmax(1) != y
    assert not (broken_without & ~broken_every).any()
    assert not any(k.startswith("restart") for k in without.summary()["broken"])
    restarted = {k for k in every.summary()["broken"] if k.startswith("restart")}
    assert restarted and len(restarted) <= 2 * 3
    with pytest.raises(ValueError, match="borderline"):
        AdaptiveSurrogate(dlif_model, borderline=1.5)


@pytest.mark.parametrize("spec", ["apgd-ce@sigmoid:4", "pgd10@rate", "fgsm@rectangle:0.5:detach",
                                  "apgd-t20@arctan", "fab-t10@exponential:2"])
def test_attack_names_take_a_backward(dlif_model, spec):
    name, attack = make_attack(spec, dlif_model, 8 / 255)
    assert attack.backward == surrogates.parse(spec.split("@")[1])


@pytest.mark.parametrize("spec", ["apgd-ce@spline", "apgd-ce@sigmoid:0", "apgd-ce@sigmoid:1000", "apgd-ce@sigmoid:x",
                                  "square@sigmoid", "apgd-ce@rate:2", "adaptive@arctan"])
def test_bad_backwards_are_one_line(dlif_model, spec):
    with pytest.raises(UserError):
        make_attack(spec, dlif_model, 8 / 255)


@pytest.mark.parametrize("entry", [{"name": "a", "type": "apgd", "surrogate": "spline"},
                                   {"name": "a", "type": "apgd", "surrogate": "sigmoid:500"},
                                   {"name": "a", "type": "adaptive", "search_steps": 0},
                                   {"name": "a", "type": "adaptive", "calibration": 0},
                                   {"name": "a", "type": "adaptive", "top_k": 0},
                                   {"name": "a", "type": "adaptive", "shapes": ["spline"]},
                                   {"name": "a", "type": "adaptive", "sharpness": []}])
def test_bad_suite_backwards_are_refused_before_any_work(dlif_model, entry):
    with pytest.raises(UserError):
        make_attack(entry, dlif_model, 8 / 255)


def test_eval_with_the_default_suite_reports_each_attacks_contribution(tmp_path, dlif_checkpoint):
    import json

    torch.save(dlif_checkpoint, tmp_path / "m.pt")
    result = CliRunner().invoke(app, ["eval", str(tmp_path / "m.pt"), "--limit", "10", "--eps", "8/255",
                                      "--json", str(tmp_path / "e.json"), "--quiet"])  # the default: snn-adaptive
    assert result.exit_code == 0, result.output
    out = json.loads((tmp_path / "e.json").read_text())
    contributions = out["contributions"]
    assert out["suite"] == "suite snn-adaptive"
    assert sorted(contributions) == sorted(["apgd-ce100", "apgd-t", "fab-t", "square", "adaptive"])
    assert out["robust"] <= min(out[name] for name in contributions)  # never above any of its attacks
    assert round(out["clean"] * 10) - sum(c["newly_broken"] for c in contributions.values()) == round(out["robust"] * 10)
    assert contributions["adaptive"]["chosen"] and len(contributions["adaptive"]["search"]) == len(surrogates.search_space())
    assert contributions["adaptive"]["newly_broken"] == sum(contributions["adaptive"]["broken"].values())


def test_run_on_a_conv_file_crafts_adaptively_on_the_grid_model(conv_dlif_checkpoint, tmp_path):
    from netx_export.analysis.deploy import compare
    from netx_export.compiler.export import model_from_checkpoint, write_netx
    from netx_export.fileformat.netx_file import read_netx

    write_netx(model_from_checkpoint(conv_dlif_checkpoint), conv_dlif_checkpoint, tmp_path / "conv.net")
    result = compare(read_netx(tmp_path / "conv.net"), "emulator", "adaptive", eps=8 / 255, limit=6, progress=False)
    report = result["contributions"]["adaptive"]["adaptive"]  # crafted chip-aware: on the file's ChipModel
    assert report["chosen"] and len(report["search"]) == report["candidates"] == len(surrogates.search_space())
    assert result["results"]["adaptive"]["agreement"] == 1.0  # grid and chip agree on the crafted points
    assert result["robust_chip"] <= result["results"]["adaptive"]["accuracy_chip"]
