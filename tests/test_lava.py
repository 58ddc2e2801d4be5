"""Real Lava (Loihi2SimCfg, fixed_pt) against the float SLAYER model, spike for spike."""
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from loihi_stable import fixed_point as fx
from loihi_stable.cli import app
from netx_export.compiler.export import model_from_checkpoint, write_netx
from netx_export.runtime.lava_runner import run_network
from netx_export.fileformat.netx_file import read_netx

pytestmark = pytest.mark.lava


def float_states(model, x):
    model.set_recording(True)
    with torch.no_grad():
        logits, _ = model.forward_time(x)
    rec = [n.recording for n in model.spiking_neurons]
    model.set_recording(False)
    return logits, rec


@pytest.mark.parametrize("neuron", ["lif", "dlif"])
def test_lava_matches_float_model_spike_for_spike(tmp_path, digits, neuron, request):
    checkpoint = request.getfixturevalue(f"{neuron}_checkpoint")
    model = model_from_checkpoint(checkpoint)
    write_netx(model, checkpoint, tmp_path / "m.net")
    spec = read_netx(tmp_path / "m.net")
    x = digits[1].x[:24]
    chip = run_network(spec, x.numpy(), progress=False, probe_layers=True)
    logits, rec = float_states(model, x)
    for layer, states in enumerate(rec):
        spikes = states["spike"].numpy().astype(np.int64)
        assert spikes.sum() > 0, f"layer {layer} never spiked: the comparison would be vacuous"
        np.testing.assert_array_equal(chip.spikes[layer], spikes, err_msg=f"spikes, layer {layer}")
        # Lava's v is read after the reset: 0 where the neuron spiked; layer 0 runs on a 64x finer grid
        scale = fx.state_scale(model.spiking_neurons[layer].payload_scale)
        assert scale == (4096 * 64 if layer == 0 else 4096)
        expected_v = np.round(states["voltage"].numpy() * scale).astype(np.int64) * (1 - spikes)
        np.testing.assert_array_equal(chip.voltage[layer], expected_v, err_msg=f"voltage, layer {layer}")
    np.testing.assert_array_equal(chip.readout, np.round(logits.sum(-1).numpy() * 4096).astype(np.int64))
    assert np.array_equal(chip.predictions, logits.mean(-1).argmax(1).numpy())


def test_dlif_schedule_matters_on_chip(tmp_path, digits, dlif_checkpoint):
    """Stock NetX's single vDecay is only an approximation of a trained DLIF: the schedule is used."""
    model = model_from_checkpoint(dlif_checkpoint)
    schedules = [n.dv_schedule() for n in model.spiking_neurons]
    assert any(len(set(s[1:].tolist())) > 1 for s in schedules), "training left a[t] flat"
    write_netx(model, dlif_checkpoint, tmp_path / "m.net")
    spec = read_netx(tmp_path / "m.net")
    x = digits[1].x[:24].numpy()
    exact = run_network(spec, x, progress=False).readout
    for layer in spec.layers:
        layer.dv_schedule = None  # what stock NetX would run
    approx = run_network(spec, x, progress=False).readout
    assert not np.array_equal(exact, approx)


def test_host_set_dlif_schedule_matches_the_process(tmp_path, digits, dlif_checkpoint):
    """Loihi2HwCfg's path, run on the simulator: stock LIFReset neurons whose dv the host sets
    before every step reproduce the DLIFReset process (and so the float model) bit for bit."""
    from netx_export.runtime.emulator import emulate

    model = model_from_checkpoint(dlif_checkpoint)
    write_netx(model, dlif_checkpoint, tmp_path / "m.net")
    spec = read_netx(tmp_path / "m.net")
    x = digits[1].x[:6].numpy()
    host = run_network(spec, x, progress=False, probe_layers=True, dlif_schedule="host")
    emulated = emulate(spec, x, probe_layers=True)
    np.testing.assert_array_equal(host.readout, emulated.readout)
    for layer, (spikes, voltage) in enumerate(zip(host.spikes, host.voltage)):
        assert spikes.sum() > 0, f"layer {layer} never spiked"
        np.testing.assert_array_equal(spikes, emulated.spikes[layer])
        np.testing.assert_array_equal(voltage, emulated.voltage[layer])


def test_var_set_on_an_integer_lif_var_keeps_it_integer():
    """The compat fix behind the host-set schedule: Lava 0.10 stored a float and then hung."""
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.lif.process import LIF

    lif = LIF(shape=(1,), du=4095, dv=100, bias_mant=50, vth=10000)
    cfg = Loihi2SimCfg(select_tag="fixed_pt")
    try:
        lif.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
        lif.dv.set(np.array([2000]))
        assert lif.dv.get()[0] == 2000
        lif.run(condition=RunSteps(num_steps=1), run_cfg=cfg)
        assert lif.v.get()[0] == 50 * (4096 - 2000) // 4096 + 50
    finally:
        lif.stop()


def test_stock_netx_loads_the_export(tmp_path, dlif_checkpoint):
    from lava.lib.dl.netx import hdf5
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer

    model = model_from_checkpoint(dlif_checkpoint)
    write_netx(model, dlif_checkpoint, tmp_path / "m.net")
    net = hdf5.Network(net_config=str(tmp_path / "m.net"))
    sizes = [m.synapse.out_channels for m in model.blocks] + [model.config.classes]
    assert len(net) == len(sizes)
    assert [layer.shape[0] for layer in net.layers] == sizes
    source = RingBuffer(data=(np.random.default_rng(0).random((64, 5)) > 0.5).astype(np.int32))
    source.s_out.connect(net.inp)
    try:
        net.run(condition=RunSteps(num_steps=5), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
    finally:
        net.stop()


def test_cli_train_export_run_end_to_end(tmp_path):
    runner = CliRunner()
    model, net, report = tmp_path / "m.pt", tmp_path / "m.net", tmp_path / "run.json"
    for args in (["train", "--neuron", "lif", "--epochs", "2", "--hidden", "32", "--quiet", "--out", model],
                 ["export", "--to", "netx", model, "-o", net],
                 ["run", "--backend", "Loihi2SimCfg", "--attack", "pgd", "--eps", "8/255", "--limit", "16",
                  "--quiet", "--json", report, net]):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    for key in ("accuracy_float", "accuracy_grid", "accuracy_chip", "agreement", "n", "backend", "attack", "eps"):
        assert key in data
    assert data["n"] == 16 and data["backend"] == "Loihi2SimCfg" and data["attack"] == "pgd"
    assert set(data["results"]) == {"clean", "pgd", "pgd-from-float"}
    assert all(r["agreement"] == 1.0 for r in data["results"].values())
    assert 0.0 <= data["accuracy_chip"] <= 1.0


def run_with_stock_netx(path, x: np.ndarray, timesteps: int) -> np.ndarray:
    """What an INRC user does with our file: stock NetX and stock Lava processes only, with the
    arguments README.md states; returns the readout voltage at the end of each sample's window."""
    from lava.lib.dl import netx
    from lava.magma.core.run_conditions import RunSteps
    from lava.magma.core.run_configs import Loihi2SimCfg
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    import h5py

    net = netx.hdf5.Network(net_config=str(path), reset_interval=timesteps, reset_offset=1, input_message_bits=8)
    payload = np.round(np.clip(x, 0, 1) * 64).astype(np.int32)           # graded spikes round(64 x)
    with h5py.File(path) as handle:
        first = handle["layer/0"]
        image = tuple(first["shape"][()]) if first["type"][()][0] == b"input" else None
    if image is not None:  # conv: (C, H, W) pixels plus the constant bias channel, in Lava's (W, H, C)
        c, h, w = image
        payload = payload.reshape(len(x), c - 1, h, w)
        payload = np.concatenate([payload, np.full((len(x), 1, h, w), 64, np.int32)], 1).transpose(0, 3, 2, 1)
    total = len(x) * timesteps + len(net) + 1
    frames = np.zeros((*payload.shape[1:], total), dtype=np.int32)
    frames[..., :len(x) * timesteps] = np.repeat(np.moveaxis(payload, 0, -1), timesteps, axis=-1)  # T steps each
    source = RingBuffer(data=frames)
    source.s_out.connect(net.inp)
    monitor = Monitor()
    monitor.probe(net.layers[-1].neuron.v, total)
    try:
        net.run(condition=RunSteps(num_steps=total), run_cfg=Loihi2SimCfg(select_tag="fixed_pt"))
        (data,) = monitor.get_data().values()
        voltage = np.asarray(data["v"]).reshape(total, -1)
    finally:
        net.stop()
    # the readout (layer L of depth D, 0-based) integrates the last frame of sample k at step k*T + T + D
    ends = np.arange(len(x)) * timesteps + timesteps + len(net) - 1
    return voltage[ends]


def test_stock_netx_reproduces_run_bit_for_bit(tmp_path, digits, lif_checkpoint):
    model = model_from_checkpoint(lif_checkpoint)
    write_netx(model, lif_checkpoint, tmp_path / "m.net")
    spec = read_netx(tmp_path / "m.net")
    x = digits[1].x[:16].numpy()
    ours = run_network(spec, x, progress=False).readout
    stock = run_with_stock_netx(tmp_path / "m.net", x, spec.timesteps)
    np.testing.assert_array_equal(stock, ours)


def test_stock_netx_on_a_dlif_file_is_what_export_measures(tmp_path, digits, dlif_checkpoint):
    """export's DLIF deviation report emulates stock NetX as one averaged vDecay per layer: so it does."""
    from netx_export.runtime.emulator import emulate

    model = model_from_checkpoint(dlif_checkpoint)
    write_netx(model, dlif_checkpoint, tmp_path / "m.net")
    spec = read_netx(tmp_path / "m.net")
    x = digits[1].x[:12].numpy()
    for layer in spec.layers:
        layer.dv_schedule = None
    np.testing.assert_array_equal(run_with_stock_netx(tmp_path / "m.net", x, spec.timesteps), emulate(spec, x).readout)


def test_export_reports_how_far_stock_netx_strays_on_dlif(tmp_path, dlif_checkpoint):
    from loihi_stable.io import save_checkpoint

    save_checkpoint(tmp_path / "m.pt", dlif_checkpoint)
    result = CliRunner().invoke(app, ["export", "--to", "netx", str(tmp_path / "m.pt"), "-o", str(tmp_path / "m.net")])
    assert result.exit_code == 0, result.output
    assert "stock NetX reads one averaged vDecay" in result.output and "test samples" in result.output
