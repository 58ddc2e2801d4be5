"""Certification soundness: bounds contain every reachable output, are exact at eps = 0,
and verified samples never fall to an attack; the integer certificate holds on the chip."""
import numpy as np
import pytest
import torch

from loihi_stable import fixed_point as fx
from loihi_stable.certify import (Box, crown_margin_lower_bound, ibp_bounds, margin_lower_bound,
                                  module_bounds, spike_input_bounds, verified)
from netx_export.analysis.chip_certificate import chip_bounds, check_chip_certificate, sample_ball
from loihi_stable.certify.scrown import _reset_relaxation, _spike_relaxation, tightened_bounds
from loihi_stable.certify.sibp import forward_spikes
from loihi_stable.certify.verify import certify
from loihi_stable.models import ModelConfig, build_model
from netx_export.compiler.export import model_from_checkpoint, write_netx
from netx_export.fileformat.netx_file import read_netx

EPS = 8 / 255
MODES = {"chip": "chip", "float": "float"}  # the model's arithmetic (fixed_point.ARITHMETIC)
TOL = {"chip": 0.0, "float": 1e-4}  # float32 rounding of the plain-float twin


def ball_points(x, eps, n, seed=0):
    return [torch.from_numpy(p) for p in sample_ball(x.numpy(), eps, n, seed)]


def recorded(model, x):
    model.set_recording(True)
    with torch.no_grad():
        logits = model(x)
    rec = [dict(n.recording) for n in model.spiking_neurons]
    model.set_recording(False)
    return logits, rec


def test_module_bounds_contain_conv_bn_pool_outputs():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.AvgPool2d(2), torch.nn.Flatten(), torch.nn.Linear(4 * 4 * 4, 5))
    bn = net[1]
    bn.running_mean.uniform_(-1, 1), bn.running_var.uniform_(0.5, 2), bn.weight.data.uniform_(-2, 2)
    net.eval()
    x = torch.rand(3, 2, 8, 8)
    with torch.no_grad():
        box = module_bounds(net, Box.linf_ball(x, 0.05))
        for _ in range(50):
            point = (x + 0.05 * torch.empty_like(x).uniform_(-1, 1)).clamp(0, 1)
            assert box.contains(net(point), tol=1e-5)
        exact = module_bounds(net, Box.point(x))
        torch.testing.assert_close(exact.lo, net(x)), torch.testing.assert_close(exact.hi, net(x))
    assert (box.hi - box.lo).min() > 0


def test_relaxations_hold_on_their_interval():
    rng = np.random.default_rng(0)
    th = 1.0
    for _ in range(200):
        lo, hi = np.sort(rng.uniform(-3, 4, size=2))
        v = torch.linspace(lo, hi, 401, dtype=torch.float64)
        box = Box(torch.tensor([lo], dtype=torch.float64), torch.tensor([hi], dtype=torch.float64))
        alpha = torch.tensor(rng.uniform(0, 1, size=2), dtype=torch.float64)  # any optimised slope
        for relax, f, slopes in ((_spike_relaxation, lambda z: (z > th).double(), [(None, None), (alpha[:1], alpha[1:])]),
                                 (_reset_relaxation, lambda z: z * (z <= th), [(None,), (alpha[:1],)])):
            for slope in slopes:
                a_lo, b_lo, a_hi, b_hi = relax(box, th, *slope)
                assert (a_lo * v + b_lo <= f(v) + 1e-9).all() and (f(v) <= a_hi * v + b_hi + 1e-9).all()


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("neuron", ["lif", "dlif"])
def test_ibp_bounds_contain_random_points(digits, neuron, mode, request):
    model = model_from_checkpoint(request.getfixturevalue(f"{neuron}_checkpoint")).eval()
    x, y = digits[1].x[:64], digits[1].y[:64]
    tol = TOL[mode]
    with model.arithmetic(MODES[mode]), torch.no_grad():
        bounds = ibp_bounds(model, x, EPS)
        crown = crown_margin_lower_bound(model, x, y, EPS, bounds)
        undecided = sum(((b.hi - b.lo) > 0).sum().item() for b in bounds.spikes)
        assert undecided > 0, "no spike is undecided: the test would be vacuous"
        for point in ball_points(x, EPS, 24):
            logits, rec = recorded(model, point)
            assert bounds.logits.contains(logits, tol)
            for layer, states in enumerate(rec):
                assert bounds.voltage[layer].contains(states["voltage"], tol), f"voltage, layer {layer}"
                assert bounds.spikes[layer].contains(states["spike"]), f"spikes, layer {layer}"
            margin = logits.gather(1, y[:, None]) - logits
            assert (margin >= margin_lower_bound(bounds, y) - tol - 1e-6).all()
            assert (margin >= crown - tol - 1e-6).all()


@pytest.mark.parametrize("mode", list(MODES))
def test_bounds_are_exact_at_eps_zero(digits, dlif_checkpoint, mode):
    model = model_from_checkpoint(dlif_checkpoint).eval()
    x, y = digits[1].x[:64], digits[1].y[:64]
    with model.arithmetic(MODES[mode]), torch.no_grad():
        bounds = ibp_bounds(model, x, 0.0)
        logits, rec = recorded(model, x)
        for layer, states in enumerate(rec):
            torch.testing.assert_close(bounds.voltage[layer].lo, states["voltage"], rtol=0, atol=TOL[mode])
            torch.testing.assert_close(bounds.voltage[layer].hi, states["voltage"], rtol=0, atol=TOL[mode])
        torch.testing.assert_close(bounds.logits.lo, logits, rtol=0, atol=TOL[mode] + 1e-6)
        torch.testing.assert_close(bounds.logits.hi, logits, rtol=0, atol=TOL[mode] + 1e-6)
        correct = logits.argmax(1) == y
        assert torch.equal(verified(margin_lower_bound(bounds, y), y), correct & (logits.topk(2).values.diff(dim=1).abs().squeeze(1) > 0))


def test_spike_input_bounds_contain_flipped_inputs(dlif_checkpoint):
    model = model_from_checkpoint(dlif_checkpoint).eval()
    gen = torch.Generator().manual_seed(0)
    spikes = (torch.rand(16, 64, 8, generator=gen) < 0.3).float()
    flips = 3
    with torch.no_grad():
        exact = spike_input_bounds(model, spikes, 0)
        torch.testing.assert_close(exact.logits.lo, forward_spikes(model, spikes), rtol=0, atol=1e-6)
        bounds = spike_input_bounds(model, spikes, flips)
        assert (bounds.logits.hi - bounds.logits.lo).max() > 0
        for _ in range(40):
            flipped = spikes.clone().reshape(16, -1)
            for row in flipped:
                where = torch.randperm(row.numel(), generator=gen)[:int(torch.randint(0, flips + 1, (1,), generator=gen))]
                row[where] = 1 - row[where]
            assert bounds.logits.contains(forward_spikes(model, flipped.reshape(spikes.shape)), 1e-6)


def test_verified_samples_never_fall_to_pgd(digits, ibp_checkpoint):
    model = model_from_checkpoint(ibp_checkpoint)
    x, y = digits[1].x[:120], digits[1].y[:120]
    result = certify(model, x, y, EPS, progress=False)
    flags = result["_flags"]
    assert result["verified"] > 0.2, result  # non-trivial at a small eps
    assert not (flags["verified"] & ~flags["pgd"]).any()
    assert result["verified"] <= result["pgd"] <= result["clean"] + 1e-9
    assert (flags["verified"] >= (flags["ibp"] | flags["crown"])).all()  # the better bound per margin


@pytest.mark.parametrize("neuron", ["lif", "dlif"])
def test_chip_certificate_is_the_integer_image_of_the_float_one(tmp_path, digits, neuron, request):
    checkpoint = request.getfixturevalue(f"{neuron}_checkpoint")
    model = model_from_checkpoint(checkpoint).eval()
    write_netx(model, checkpoint, tmp_path / "m.net")
    spec = read_netx(tmp_path / "m.net")
    x, y = digits[1].x[:96], digits[1].y[:96]
    cert = chip_bounds(spec, x.numpy(), y.numpy(), EPS)
    with torch.no_grad():
        bounds = ibp_bounds(model, x, EPS)
    scale = model.config.timesteps * fx.STATE_SCALE
    np.testing.assert_array_equal(cert.readout_lo, np.round(bounds.logits.lo.numpy() * scale).astype(np.int64))
    np.testing.assert_array_equal(cert.readout_hi, np.round(bounds.logits.hi.numpy() * scale).astype(np.int64))
    np.testing.assert_array_equal(cert.verified, verified(margin_lower_bound(bounds, y), y).numpy())
    check = check_chip_certificate(spec, cert, x.numpy(), y.numpy(), EPS, points=12)
    assert check == {"points_per_sample": 12, "readouts_inside_bounds": True, "verified_samples_broken": 0}


def test_ibp_training_raises_verified_accuracy(digits, natural_checkpoint, ibp_checkpoint):
    test = digits[1]
    results = {name: certify(model_from_checkpoint(ckpt), test.x[:200], test.y[:200], EPS, method="ibp",
                             progress=False)
               for name, ckpt in (("natural", natural_checkpoint), ("ibp", ibp_checkpoint))}
    print({k: {m: r[m] for m in ("clean", "pgd", "verified")} for k, r in results.items()})
    assert results["ibp"]["verified"] > results["natural"]["verified"] + 0.1, results
    assert results["ibp"]["clean"] > 0.7, results  # 6 epochs of a 32-16 network


@pytest.mark.lava
def test_chip_bounds_hold_on_lava(tmp_path, digits, dlif_checkpoint):
    from netx_export.runtime.lava_runner import run_network

    model = model_from_checkpoint(dlif_checkpoint)
    write_netx(model, dlif_checkpoint, tmp_path / "m.net")
    spec = read_netx(tmp_path / "m.net")
    x, y = digits[1].x[:8].numpy(), digits[1].y[:8].numpy()
    cert = chip_bounds(spec, x, y, EPS)
    points = sample_ball(x, EPS, 3, seed=1)
    readout = run_network(spec, points.reshape(-1, x.shape[1]), progress=False).readout.reshape(3, len(x), -1)
    assert ((readout >= cert.readout_lo) & (readout <= cert.readout_hi)).all()
    assert (readout.argmax(-1)[:, cert.verified] == y[cert.verified]).all()


def test_cli_certify_writes_fractions(tmp_path, ibp_checkpoint):
    from typer.testing import CliRunner

    from loihi_stable.cli import app
    from loihi_stable.io import save_checkpoint
    import json

    save_checkpoint(tmp_path / "m.pt", ibp_checkpoint)
    out = tmp_path / "cert.json"
    result = CliRunner().invoke(app, ["certify", str(tmp_path / "m.pt"), "--eps", "8/255", "--limit", "40",
                                      "--points", "2", "--json", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    for key in ("clean", "pgd", "verified", "verified_chip", "ibp", "crown"):
        assert 0.0 <= data[key] <= 1.0
    assert data["n"] == 40 and data["verified"] <= data["pgd"]
    assert data["chip_check"]["readouts_inside_bounds"] and data["verified_but_broken_by_pgd"] == 0
    assert "S-IBP" in result.output and "verified on chip" in result.output
    bad = CliRunner().invoke(app, ["certify", str(tmp_path / "m.pt"), "--method", "lp"])
    assert bad.exit_code == 2 and bad.output.strip().startswith("error: unknown --method")


def test_chip_certificate_is_sound_when_a_wide_readout_fires():
    """A last hidden layer wider than 64 can drive the readout past its threshold: it fires and
    resets, so the exact-integration margin would claim the wrong class. The certificate must not."""
    from test_emulator import overflow_spec

    from netx_export.runtime.emulator import emulate

    spec = overflow_spec(100)
    x = np.random.default_rng(1).random((6, 64)).astype(np.float32)
    chip = emulate(spec, x).predictions
    assert (chip == 1).all(), "class 0 integrates most, but its reset hands the prediction to class 1"
    for label, expected in ((0, False), (1, True)):
        y = np.full(6, label)
        cert = chip_bounds(spec, x, y, 0.5 / 255)
        assert cert.readout_may_fire.all() and not cert.may_wrap.any()
        assert (cert.verified == expected).all()
        check = check_chip_certificate(spec, cert, x, y, 0.5 / 255, points=6)
        assert check["readouts_inside_bounds"] and check["verified_samples_broken"] == 0


def test_chip_certificate_claims_nothing_where_a_current_may_wrap():
    from test_emulator import overflow_spec

    spec = overflow_spec(600)
    x = np.random.default_rng(1).random((4, 64)).astype(np.float32)
    cert = chip_bounds(spec, x, np.zeros(4, dtype=int), 0.5 / 255)
    assert cert.may_wrap.all() and not cert.verified.any()


def _tiny(arch: str, seed: int):
    """A tiny dense (chip arithmetic) or conv (float) network whose whole input ball can be enumerated."""
    torch.manual_seed(seed)
    if arch == "mlp":
        config = ModelConfig(in_features=4, hidden=[6, 5], classes=3, timesteps=4, neuron="dlif")
    else:
        config = ModelConfig(arch="convnet-s", input_shape=[1, 2, 2], mean=[0.3], std=[0.4], classes=3, timesteps=3)
    model = build_model(config)
    with torch.no_grad():
        for neuron in model.spiking_neurons:
            neuron.leak_scale.uniform_(0.4, 1.0)
        for p in model.parameters():
            if p.dim() > 1:
                p.mul_(2.5)
    if arch != "mlp":
        model.train()
        model(torch.rand(32, 1, 2, 2))
    return model.eval()


def _grid_ball(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Every point of the input grid (1/255) in the eps-ball around one 4-pixel input, clipped to [0, 1]."""
    axes = [torch.arange(round(255 * max(0.0, float(v) - eps)), round(255 * min(1.0, float(v) + eps)) + 1) / 255
            for v in x.flatten()]
    return torch.cartesian_prod(*axes).reshape(-1, *x.shape)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_bounds_hold_on_every_grid_point_corner_and_attack_of_tiny_networks(arch):
    """S-IBP, S-CROWN (fixed and optimised slopes) and their per-margin best against the whole input
    grid of the ball, its corners, and PGD driving each margin below its bound."""
    eps = 3 / 255
    found = 0
    for seed in range(4):
        model = _tiny(arch, seed)
        shape = (4,) if arch == "mlp" else (1, 2, 2)
        x = ((torch.rand(6, *shape) * 235 + 10).round() / 255)
        y = torch.randint(0, 3, (6,))
        with torch.no_grad():
            bounds = ibp_bounds(model, x, eps)
        ibp = margin_lower_bound(bounds, y).detach()
        crown = crown_margin_lower_bound(model, x, y, eps, bounds)
        alpha = crown_margin_lower_bound(model, x, y, eps, bounds, iterations=15)
        tight = tightened_bounds(model, x, eps)  # every voltage intersected with its S-CROWN bound
        for plain, narrow in zip(bounds.voltage, tight.voltage):
            assert (narrow.lo >= plain.lo - 1e-5).all() and (narrow.hi <= plain.hi + 1e-5).all()
        tightened = torch.maximum(margin_lower_bound(tight, y), crown_margin_lower_bound(model, x, y, eps, tight))
        best = torch.maximum(torch.maximum(ibp, alpha), tightened)
        assert (alpha >= crown - 1e-9).all() and (best >= ibp).all()
        for i in range(len(x)):
            corners = torch.cartesian_prod(*[torch.tensor([-eps, eps])] * 4).reshape(-1, *shape)
            points = torch.cat([_grid_ball(x[i], eps), (x[i] + corners).clamp(0, 1)])
            logits, rec = recorded(model, points)
            for layer, states in enumerate(rec):
                assert Box(tight.voltage[layer].lo[i], tight.voltage[layer].hi[i]).contains(states["voltage"], 1e-5)
            margins = logits[:, y[i]:y[i] + 1] - logits
            for name, bound in (("S-IBP", ibp), ("S-CROWN", crown), ("alpha-CROWN", alpha),
                                ("tightened S-CROWN", tightened), ("best", best)):
                assert (margins >= bound[i] - 1e-5).all(), f"{name} violated on the grid, seed {seed}, sample {i}"
            # the tightest spot the grid found: the bounds must not be vacuous everywhere
            found += int((best[i] > -torch.inf).all())
        for j in range(3):  # PGD on each margin, from the grid's worst point
            target = torch.full_like(y, j)
            z = x.clone().requires_grad_(True)
            for _ in range(20):
                logits = model(z)
                margin = (logits.gather(1, y[:, None]) - logits.gather(1, target[:, None])).sum()
                (grad,) = torch.autograd.grad(margin, z)
                with torch.no_grad():
                    z = (torch.min(torch.max(z - grad.sign() / 255, x - eps), x + eps)).clamp(0, 1)
                z.requires_grad_(True)
            with torch.no_grad():
                logits = model(z)
            margin = logits.gather(1, y[:, None]).squeeze(1) - logits[:, j]
            assert (margin >= best[:, j] - 1e-5).all()
    assert found > 0


def test_per_margin_best_of_s_crown_is_never_below_s_ibp_and_slopes_pay(digits, ibp_checkpoint):
    from loihi_stable.certify.verify import certify_batch

    model = model_from_checkpoint(ibp_checkpoint)
    x, y = digits[1].x[:128], digits[1].y[:128]
    with torch.no_grad():
        bounds = ibp_bounds(model, x, EPS)
    ibp = margin_lower_bound(bounds, y)
    fixed = crown_margin_lower_bound(model, x, y, EPS, bounds)
    optimised = crown_margin_lower_bound(model, x, y, EPS, bounds, iterations=10)
    assert (optimised >= fixed - 1e-9).all() and (optimised > fixed + 1e-6).any()
    flags = certify_batch(model, x, y, EPS, "both", crown_steps=10)
    assert (flags["verified"] >= flags["ibp"]).all() and (flags["verified"] >= flags["crown"]).all()
    assert (torch.maximum(ibp, optimised) >= ibp).all()


def test_conv_networks_train_with_ibp_and_certify_without_the_chip(tmp_path):
    from typer.testing import CliRunner

    from loihi_stable.cli import app

    out = tmp_path / "conv.pt"
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--arch", "convnet-s", "--perturb", "ibp", "--epochs", "1", "--limit", "128",
                                 "--timesteps", "2", "--val-eps", "0", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["certify", str(out), "--no-chip", "--limit", "16", "--crown-steps", "2", "--quiet",
                                 "--json", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "S-IBP" in result.output and "S-CROWN" in result.output and "Traceback" not in result.output
    if not torch.cuda.is_available():
        gpu = runner.invoke(app, ["certify", str(out), "--device", "cuda"])
        assert gpu.exit_code == 2 and "no CUDA GPU" in gpu.output
    wrn = runner.invoke(app, ["train", "--arch", "wrn16-4", "--perturb", "ibp", "--out", str(tmp_path / "w.pt")])
    assert wrn.exit_code == 2 and "wrn16-4" in wrn.output


@pytest.mark.parametrize("arch,shape", [("convnet", (1, 8, 8)), ("vgg5", (3, 8, 8))])
def test_conv_bounds_contain_random_points_of_deeper_vgg_networks(arch, shape):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, input_shape=list(shape), mean=[0.4] * shape[0], std=[0.3] * shape[0],
                                    timesteps=3))
    model.train()
    model(torch.rand(16, *shape))
    model.eval()
    x, y = torch.rand(4, *shape), torch.randint(0, 10, (4,))
    eps = 2 / 255
    with torch.no_grad():
        bounds = ibp_bounds(model, x, eps)
    crown = crown_margin_lower_bound(model, x, y, eps, bounds)
    for point in ball_points(x, eps, 12):
        logits, rec = recorded(model, point)
        assert bounds.logits.contains(logits, 1e-4)
        for layer, states in enumerate(rec):
            assert bounds.voltage[layer].contains(states["voltage"], 1e-4)
        margin = logits.gather(1, y[:, None]) - logits
        assert (margin >= margin_lower_bound(bounds, y) - 1e-4).all() and (margin >= crown - 1e-4).all()
