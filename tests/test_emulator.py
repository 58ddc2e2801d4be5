"""The fixed-point emulator: bit-exact to the torch model (fast) and to Lava (marker lava)."""
import numpy as np
import pytest
import torch

from netx_export.emulator import emulate
from netx_export.export import model_from_checkpoint, write_netx
from netx_export.lava_runner import LayerSpec, NetSpec, read_netx, run_network


def random_spec(seed: int, dlif: bool, sizes=(64, 24, 16, 10), timesteps=6) -> NetSpec:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        readout = i == len(sizes) - 2
        weight = 2 * rng.integers(-128, 128, size=(n_out, n_in)).astype(np.int32)
        weight[:, rng.random(n_in) < 0.5] //= 4  # a mix of magnitudes
        weight -= weight % 2
        neuron = {"type": b"CUBA", "iDecay": 4096, "vDecay": 0 if readout else int(rng.integers(0, 4096)),
                  "vThMant": (1 << 17) - 1 if readout else int(rng.integers(16, 200)), "refDelay": 1}
        schedule = rng.integers(0, 4096, size=timesteps) if dlif and not readout else None
        layers.append(LayerSpec(weight, neuron, schedule))
    return NetSpec(path=None, layers=layers, timesteps=timesteps, input_scale=64, input_message_bits=8,
                   input_weight_exp=-6, dataset="digits", neuron="dlif" if dlif else "lif", checkpoint={})


@pytest.mark.parametrize("neuron", ["lif", "dlif"])
def test_emulator_matches_torch_model(tmp_path, digits, neuron, request):
    checkpoint = request.getfixturevalue(f"{neuron}_checkpoint")
    model = model_from_checkpoint(checkpoint)
    write_netx(model, checkpoint, tmp_path / "m.net")
    x = digits[1].x
    run = emulate(read_netx(tmp_path / "m.net"), x.numpy(), probe_layers=True)
    model.set_recording(True)
    with torch.no_grad():
        logits, _ = model.forward_time(x)
    for layer, neuron_ in enumerate(model.spiking_neurons):
        np.testing.assert_array_equal(run.spikes[layer], neuron_.recording["spike"].numpy().astype(np.int64))
    model.set_recording(False)
    np.testing.assert_array_equal(run.readout, np.round(logits.sum(-1).numpy() * 4096).astype(np.int64))


@pytest.mark.lava
@pytest.mark.parametrize("seed,dlif", [(0, False), (1, True), (2, True)])
def test_emulator_matches_lava_on_random_networks(digits, seed, dlif):
    spec = random_spec(seed, dlif)
    x = np.random.default_rng(seed).random((12, 64)).astype(np.float32)
    x[:6] = digits[1].x[:6].numpy()
    emu = emulate(spec, x, probe_layers=True)
    lava = run_network(spec, x, progress=False, probe_layers=True)
    assert sum(s.sum() for s in emu.spikes) > 0
    for a, b in zip(emu.spikes, lava.spikes):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(emu.voltage, lava.voltage):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(emu.readout, lava.readout)
