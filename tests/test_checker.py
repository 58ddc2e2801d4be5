"""The float-vs-chip robustness checker."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from loihi_stable.cli import app
from loihi_stable.io import save_checkpoint
from netx_export.analysis.checker import check, chip_currents
from netx_export.runtime.emulator import emulate
from netx_export.compiler.export import model_from_checkpoint, write_netx
from netx_export.fileformat.netx_file import read_netx


@pytest.fixture(scope="module")
def deployed(tmp_path_factory, dlif_checkpoint):
    folder = tmp_path_factory.mktemp("deployed")
    model = model_from_checkpoint(dlif_checkpoint)
    write_netx(model, dlif_checkpoint, folder / "m.net")
    return model, read_netx(folder / "m.net")


def test_chip_currents_equal_the_quantized_models(deployed, digits):
    model, spec = deployed
    x = digits[1].x[:32]
    run = emulate(spec, x.numpy(), probe_layers=True)
    model.set_recording(True)
    with torch.no_grad():
        model(x)
    thresholds = [n.threshold for n in model.spiking_neurons]
    for chip, neuron in zip(chip_currents(spec, x.numpy(), run, thresholds), model.spiking_neurons):
        np.testing.assert_array_equal(chip.float().numpy(), neuron.recording["current"].numpy())
    model.set_recording(False)


def test_check_report(deployed, digits):
    model, spec = deployed
    x, y = digits[1].x[:64], digits[1].y[:64]
    result = check(model, spec, x, y, "pgd", 16 / 255, "emulator", ratio_threshold=1.5, progress=False)
    assert len(result["layers"]) == len(model.spiking_neurons)
    for layer in result["layers"]:
        assert layer["ms_mppd_float"] > 0 and layer["ms_mppd_chip"] > 0
        assert 0.5 < layer["ratio"] < 2.0, "quantization should not change the perturbation wholesale"
        assert layer["correlation"] > 0.8 and 0.9 < layer["spike_agreement"] <= 1.0
        assert layer["amplified"] == (layer["ratio"] > 1.5)
    flagged = check(model, spec, x, y, "pgd", 16 / 255, "emulator", ratio_threshold=0.0, progress=False)
    assert flagged["amplified_layers"] == [1, 2]


def test_check_zero_eps_gives_zero_perturbation(deployed, digits):
    model, spec = deployed
    x, y = digits[1].x[:16], digits[1].y[:16]
    result = check(model, spec, x, y, "fgsm", 0.0, "emulator", progress=False)
    assert all(l["ms_mppd_chip"] == 0 and l["ms_mppd_float"] == 0 for l in result["layers"])


def test_check_cli(tmp_path, dlif_checkpoint):
    save_checkpoint(tmp_path / "m.pt", dlif_checkpoint)
    result = CliRunner().invoke(app, ["check", str(tmp_path / "m.pt"), "--limit", "24", "--quiet", "--device", "cpu",
                                      "--json", str(tmp_path / "c.json"), "--plot", str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    assert "MS-MPPD float" in result.output and "spike agreement" in result.output
    data = json.loads((tmp_path / "c.json").read_text())
    assert data["n"] == 24 and len(data["layers"]) == 2 and "gap_adv" in data["accuracy"]
    assert (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.lava
def test_check_on_lava_agrees_with_emulator(deployed, digits):
    model, spec = deployed
    x, y = digits[1].x[:12], digits[1].y[:12]
    lava = check(model, spec, x, y, "pgd", 8 / 255, "Loihi2SimCfg", progress=False)
    emu = check(model, spec, x, y, "pgd", 8 / 255, "emulator", progress=False)
    assert lava["emulator_matches_chip"] is True
    assert lava["layers"] == emu["layers"] and lava["accuracy"] == emu["accuracy"]


def _count_lava_starts(monkeypatch) -> list:
    """Count the Lava runs (a spy around the real runner, which still runs)."""
    import netx_export.runtime.backends as backends

    starts, real = [], backends.run_network
    monkeypatch.setattr(backends, "run_network", lambda *a, **k: starts.append(1) or real(*a, **k))
    return starts


@pytest.mark.lava
def test_check_and_run_start_lava_once_for_many_batches(deployed, digits, monkeypatch):
    """Batches are the unit of crafting; the chip runs a process's batches in one go, with the same results."""
    from netx_export.analysis.deploy import compare

    model, spec = deployed
    x, y = digits[1].x[:12], digits[1].y[:12]
    starts = _count_lava_starts(monkeypatch)
    lava = check(model, spec, x, y, "fgsm", 8 / 255, "Loihi2SimCfg", progress=False, batch_size=5)
    assert len(starts) == 1 and lava["emulator_matches_chip"] is True
    emu = check(model, spec, x, y, "fgsm", 8 / 255, "emulator", progress=False, batch_size=5)
    assert lava["layers"] == emu["layers"] and lava["accuracy"] == emu["accuracy"]
    on_lava = compare(spec, "Loihi2SimCfg", "fgsm", limit=12, progress=False, batch_size=5)
    assert len(starts) == 2
    emulated = compare(spec, "emulator", "fgsm", limit=12, progress=False, batch_size=5)
    keep = ("results", "robust_float", "robust_grid", "robust_chip", "sets")
    assert {k: on_lava[k] for k in keep} == {k: emulated[k] for k in keep}


def test_a_chip_run_splits_back_into_its_batches():
    from netx_export.fileformat.netx_file import ChipRun

    run = ChipRun(np.arange(14).reshape(7, 2), [np.arange(7 * 3 * 2).reshape(7, 3, 2)], [np.ones((7, 3, 2))])
    parts = run.split([3, 4])
    assert [len(p.readout) for p in parts] == [3, 4] and np.array_equal(parts[1].readout, run.readout[3:])
    assert np.array_equal(np.concatenate([p.spikes[0] for p in parts]), run.spikes[0])
    assert [len(p.voltage[0]) for p in parts] == [3, 4]
    assert ChipRun(np.zeros((5, 2))).split([2, 3])[1].spikes is None
