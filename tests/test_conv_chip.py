"""Conv SNNs on the chip: the file's integers, the grid model, the emulator and Lava agree exactly."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from loihi_stable.cli import app
from loihi_stable.io import save_checkpoint
from netx_export.analysis.chip_model import ChipModel
from netx_export.runtime.emulator import emulate
from netx_export.compiler.export import model_from_checkpoint, write_netx
from netx_export.fileformat.netx_file import read_netx


def exported(tmp_path, checkpoint, name="c.net"):
    model = model_from_checkpoint(checkpoint)
    write_netx(model, checkpoint, tmp_path / name)
    return model, read_netx(tmp_path / name)


def test_grid_model_is_the_emulator_bit_for_bit(tmp_path, digits, conv_dlif_checkpoint):
    _, spec = exported(tmp_path, conv_dlif_checkpoint)
    x = digits[1].x[:64]
    run = emulate(spec, x.numpy(), probe_layers=True)
    assert all(s.sum() > 0 for s in run.spikes), "a layer never spiked: the comparison would be vacuous"
    with torch.no_grad():
        readout = ChipModel(spec).readout(x)
    np.testing.assert_array_equal(readout.numpy().astype(np.int64), run.readout)


def test_grid_model_of_a_dense_file_is_the_qat_model(tmp_path, digits, dlif_checkpoint):
    model, spec = exported(tmp_path, dlif_checkpoint)
    x = digits[1].x
    with torch.no_grad():
        logits = model.forward_time(x)[0].sum(-1)
        readout = ChipModel(spec).readout(x)
    np.testing.assert_array_equal(readout.numpy(), np.round(logits.numpy() * 4096))


def test_grid_model_moves_with_its_module(tmp_path, conv_dlif_checkpoint):
    """--device cuda moves the grid model with .to(): every integer it computes with must go along."""
    _, spec = exported(tmp_path, conv_dlif_checkpoint)
    moved = ChipModel(spec).to("meta")
    tensors = [*moved.weights, *moved.biases, *moved.schedules]
    assert len(tensors) == 3 * len(spec.layers) and all(t.device.type == "meta" for t in tensors)


def test_grid_model_gives_input_gradients(tmp_path, digits, conv_lif_checkpoint):
    _, spec = exported(tmp_path, conv_lif_checkpoint)
    x = digits[1].x[:8].clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(ChipModel(spec)(x), digits[1].y[:8]).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_conv_run_on_the_emulator_agrees_with_the_grid_model(tmp_path, conv_lif_checkpoint):
    save_checkpoint(tmp_path / "c.pt", conv_lif_checkpoint)
    runner = CliRunner()
    for args in (["export", "--to", "netx", tmp_path / "c.pt", "-o", tmp_path / "c.net"],
                 ["run", "--backend", "emulator", "--attack", "pgd", "--limit", "48", "--quiet", "--device", "cpu",
                  "--json", tmp_path / "run.json", tmp_path / "c.net"]):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "run.json").read_text())
    assert set(data["results"]) == {"clean", "pgd", "pgd-from-float"}
    for r in data["results"].values():
        assert r["agreement"] == 1.0 and r["accuracy_grid"] == r["accuracy_chip"]
    assert data["results"]["clean"]["accuracy_chip"] > 0.5


def test_conv_chip_certificate_holds(tmp_path, conv_lif_checkpoint):
    save_checkpoint(tmp_path / "c.pt", conv_lif_checkpoint)
    result = CliRunner().invoke(app, ["certify", str(tmp_path / "c.pt"), "--eps", "1/255", "--limit", "40", "--quiet",
                                      "--points", "4", "--json", str(tmp_path / "cert.json")])
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "cert.json").read_text())
    assert data["verified_chip_but_broken_by_pgd"] == 0 and data["chip_check"]["readouts_inside_bounds"]
    assert data["chip_check"]["verified_samples_broken"] == 0
    assert 0 < data["verified_chip"] <= data["pgd_chip"] <= data["clean_chip"]
    assert data["verified_but_broken_by_pgd"] == 0 and data["verified"] <= data["pgd"] <= data["clean"]
    assert data["verified"] >= max(data["ibp"], data["crown"])
    float_only = CliRunner().invoke(app, ["certify", str(tmp_path / "c.pt"), "--no-chip", "--eps", "1/255", "--limit", "40",
                                          "--quiet", "--json", str(tmp_path / "float.json")])
    assert float_only.exit_code == 0, float_only.output
    assert json.loads((tmp_path / "float.json").read_text())["verified"] == data["verified"]


@pytest.mark.lava
@pytest.mark.parametrize("neuron", ["lif", "dlif"])
def test_conv_emulator_matches_lava_voltage_for_voltage(tmp_path, digits, neuron, request):
    from netx_export.runtime.lava_runner import run_network

    _, spec = exported(tmp_path, request.getfixturevalue(f"conv_{neuron}_checkpoint"))
    x = digits[1].x[:6].numpy()
    emu, lava = emulate(spec, x, probe_layers=True), run_network(spec, x, progress=False, probe_layers=True)
    for layer, (a, b) in enumerate(zip(emu.spikes, lava.spikes)):
        assert a.sum() > 0, f"layer {layer} never spiked"
        np.testing.assert_array_equal(a, b, err_msg=f"spikes, layer {layer}")
        np.testing.assert_array_equal(emu.voltage[layer], lava.voltage[layer], err_msg=f"voltage, layer {layer}")
    np.testing.assert_array_equal(emu.readout, lava.readout)


@pytest.mark.lava
def test_conv_emulator_matches_lava_on_a_random_vgg(tmp_path):
    """Pooling folded into a 6x6 stride-2 conv, BatchNorm biases, DLIF schedules, 3 input channels."""
    from test_folding import checkpoint_of, randomized

    from netx_export.runtime.lava_runner import run_network

    model = randomized("vgg5", (3, 8, 8), [0.45, 0.5, 0.55], [0.25, 0.25, 0.25])
    write_netx(model, checkpoint_of(model, "cifar10"), tmp_path / "v.net")
    spec = read_netx(tmp_path / "v.net")
    x = np.random.default_rng(0).random((3, 3 * 8 * 8)).astype(np.float32)
    emu, lava = emulate(spec, x, probe_layers=True), run_network(spec, x, progress=False, probe_layers=True)
    assert emu.spikes[0].sum() > 0
    for a, b in zip(emu.voltage, lava.voltage):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(emu.readout, lava.readout)


@pytest.mark.lava
def test_stock_netx_runs_a_conv_file_as_run_does(tmp_path, digits, conv_lif_checkpoint):
    from test_lava import run_with_stock_netx

    from netx_export.runtime.lava_runner import run_network

    _, spec = exported(tmp_path, conv_lif_checkpoint)
    x = digits[1].x[:8].numpy()
    stock = run_with_stock_netx(tmp_path / "c.net", x, spec.timesteps)
    np.testing.assert_array_equal(stock, run_network(spec, x, progress=False).readout)
