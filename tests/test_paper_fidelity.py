"""Where the training follows the paper and the authors' code: each difference an audit found, fixed and pinned."""
import torch
import pytest
from typer.testing import CliRunner

from loihi_stable.attacks import RFGSM
from loihi_stable.cli import app
from loihi_stable.data import Split, default_validation_size, split_validation
from loihi_stable.metrics import record
from loihi_stable.metrics.spike_distance import std, tasad
from loihi_stable.models import ModelConfig, build_model
from loihi_stable.regularizers import default_rat_beta
from loihi_stable.training import TrainConfig, _mixup_loss, describe_schedules, train
from netx_export.compiler.export import model_from_checkpoint


def test_rfgsm_takes_its_gradient_inside_the_pixel_range(dlif_checkpoint, digits):
    """The model clamps its input, so a start below 0 gets no gradient: the 29% of digit pixels at 0
    never moved. Clamped first, every pixel at 0 whose gradient points up moves up by eps."""
    model = model_from_checkpoint(dlif_checkpoint)
    x, y = digits[1].x[:64], digits[1].y[:64]
    seen = []
    attack = RFGSM(model, eps=8 / 255, seed=0)
    original = attack.loss_and_grad

    def spy(images, labels, loss_fn=None):
        seen.append(images.clone())
        return original(images, labels, loss_fn)
    attack.loss_and_grad = spy
    adv = attack(x, y)
    assert seen[0].min() >= 0 and seen[0].max() <= 1
    _, grad, _ = original(seen[0], y)
    at_zero = (x == 0) & (grad > 0)
    assert at_zero.sum() > 100
    moved = adv[at_zero] >= 8 / 255 - 1e-6
    assert moved.float().mean() == 1.0


def test_rat_beta_defaults_to_the_papers_value_for_each_setting():
    assert default_rat_beta("cifar10", "vgg11") == 0.0005
    assert default_rat_beta("cifar100", "vgg11") == 0.001
    assert default_rat_beta("cifar10", "wrn16-4") == 0.004
    assert default_rat_beta("cifar100", "wrn16-4") == 0.004
    assert default_rat_beta("digits", "mlp") == 0.001


def test_rat_beta_is_resolved_and_recorded_by_training(digits):
    config = TrainConfig(dataset="cifar10", epochs=1, limit=64, rat=True, perturb="none", val_eps=0.0)
    assert config.rat_beta is None
    model = build_model(ModelConfig(arch="wrn16-4", input_shape=[3, 8, 8], timesteps=1))
    data = Split(torch.rand(64, 3, 8, 8), torch.randint(0, 10, (64,)))
    train(model, data, config, progress=False)
    assert config.rat_beta == 0.004 and config.to_dict()["rat_beta"] == 0.004


def test_validation_split_is_held_out_of_training_data_stratified_and_fixed(digits):
    train_set = digits[0]
    rest, val = split_validation(train_set, 200)
    again_rest, again_val = split_validation(train_set, 200)
    assert torch.equal(val.x, again_val.x) and len(rest) + len(val) == len(train_set)
    rows = {tuple(r.tolist()) + (int(c),) for r, c in zip(train_set.x, train_set.y)}
    assert all(tuple(r.tolist()) + (int(c),) in rows for r, c in zip(val.x, val.y))
    counts = torch.bincount(val.y, minlength=10)
    assert counts.min() >= 17 and counts.max() <= 23  # about 20 per class
    assert default_validation_size(len(train_set)) == len(train_set) // 10
    assert default_validation_size(60_000) == 5000


def test_train_command_chooses_checkpoints_on_training_data_never_the_test_set(tmp_path, digits, monkeypatch):
    import loihi_stable.training as training

    seen = {}

    def fake_train(model, train_set, config, progress=True, val_set=None, **kwargs):
        seen.update(train=train_set, val=val_set, config=config)
        return []
    monkeypatch.setattr(training, "train", fake_train)
    result = CliRunner().invoke(app, ["train", "--epochs", "1", "--out", str(tmp_path / "m.pt"), "--quiet"])
    assert result.exit_code == 0, result.output
    test_rows = {tuple(r.tolist()) for r in digits[1].x}
    assert len(seen["val"]) == len(digits[0]) // 10 == seen["config"].val_size
    assert not any(tuple(r.tolist()) in test_rows for r in seen["val"].x)
    assert len(seen["train"]) + len(seen["val"]) == len(digits[0])
    held = {tuple(r.tolist()) for r in seen["val"].x}
    assert not any(tuple(r.tolist()) in held for r in seen["train"].x)


@pytest.mark.parametrize("loss,distance", [("tasad", tasad), ("std", std)])
def test_spike_distances_train_as_the_papers_table_2(digits, loss, distance):
    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[32, 16]))
    x, y = digits[0].x[:32], digits[0].y[:32]
    x_pert = (x + 0.3 * torch.randn_like(x)).clamp(0, 1)
    config = TrainConfig(stability_loss=loss, rho=1.0)
    value, parts = _mixup_loss(model, x, y, x_pert, config)
    expected = distance(record(model, x)[1][-1].spike, record(model, x_pert)[1][-1].spike)
    assert parts[loss] == pytest.approx(float(expected)) and parts[loss] > 0
    value.backward()
    assert model.blocks[0].synapse.weight.grad.abs().sum() > 0
    without = _mixup_loss(model, x, y, x_pert, TrainConfig(stability_loss=loss, rho=0.0))[0]
    assert float((value - without).detach()) == pytest.approx(float(expected), rel=1e-5)


def test_unknown_stability_loss_is_one_line(tmp_path):
    result = CliRunner().invoke(app, ["train", "--stability-loss", "l2", "--out", str(tmp_path / "m.pt")])
    assert result.exit_code == 2 and "unknown --stability-loss 'l2'" in result.output


def test_input_form_trains_reports_p_and_is_refused_by_export_and_certify(tmp_path):
    out = tmp_path / "input.pt"
    runner = CliRunner()
    result = runner.invoke(app, ["train", "--dlif-form", "input", "--epochs", "1", "--limit", "128", "--val-eps", "0",
                                 "--timesteps", "4", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "learned DLIF p[t] per layer (input form)" in result.output
    for command in (["export", "--to", "netx", str(out), "-o", str(tmp_path / "m.net")], ["certify", str(out)]):
        refused = runner.invoke(app, command)
        assert refused.exit_code == 2, refused.output
        assert refused.output.count("\n") == 1 and "input-form DLIF" in refused.output and "--dlif-form leak" in refused.output
    assert not (tmp_path / "m.net").exists()
    evaluated = runner.invoke(app, ["eval", str(out), "--attacks", "fgsm", "--limit", "32", "--quiet"])
    assert evaluated.exit_code == 0, evaluated.output
    wrong = runner.invoke(app, ["train", "--neuron", "lif", "--dlif-form", "input", "--out", str(tmp_path / "x.pt")])
    assert wrong.exit_code == 2 and "DLIF form" in wrong.output


def test_leak_form_reports_a_t_and_the_steps_at_the_floor():
    row = {"leak_scale": [[1.0, 0.9, 0.00025 / 0.99], [1.0, 1.0, 1.0]]}
    text = describe_schedules(row, 0.99)
    assert "a[t]" in text and "layer 1: 1.000 0.900" in text and "(1 of 2 steps at the floor)" in text
    assert "layer 2: 1.000 1.000 1.000" in text.splitlines()[2] and "floor" not in text.splitlines()[2]
