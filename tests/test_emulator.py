"""The fixed-point emulator: bit-exact to the torch model (fast) and to Lava (marker lava)."""
import numpy as np
import pytest
import torch

from loihi_stable import chip_kernel as kernel
from netx_export.runtime.emulator import emulate
from netx_export.compiler.export import model_from_checkpoint, write_netx
from netx_export.runtime.lava_runner import run_network
from netx_export.fileformat.netx_file import LayerSpec, NetSpec, read_netx


def random_spec(seed: int, dlif: bool, sizes=(64, 24, 16, 10), timesteps=6) -> NetSpec:
    rng = np.random.default_rng(seed)
    layers = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        readout = i == len(sizes) - 2
        weight = 2 * rng.integers(-128, 128, size=(n_out, n_in)).astype(np.int32)
        weight[:, rng.random(n_in) < 0.5] //= 4  # a mix of magnitudes
        weight -= weight % 2
        i_decay = 4096 if readout or i == 0 else int(rng.integers(1, 4097))  # hidden currents may persist
        neuron = {"type": b"CUBA", "iDecay": i_decay, "vDecay": 0 if readout else int(rng.integers(0, 4096)),
                  "vThMant": (1 << 17) - 1 if readout else int(rng.integers(16, 200)), "refDelay": 1}
        schedule = rng.integers(0, 4096, size=timesteps) if dlif and not readout else None
        layers.append(LayerSpec(weight, neuron, schedule))
    return NetSpec(path=None, layers=layers, timesteps=timesteps, input_scale=64, input_message_bits=8,
                   dataset="digits", neuron="dlif" if dlif else "lif", checkpoint={})


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


def overflow_spec(width: int, timesteps: int = 8, seed: int = 0) -> NetSpec:
    """A hidden layer that fires every step into a readout with large weights: with width 100
    the readout crosses its threshold (vThMant << 6 = 8,388,544) and resets; with 600 its input
    current (600 * 254 << 6) passes 2^23 and wraps."""
    rng = np.random.default_rng(seed)
    w1 = 2 * rng.integers(0, 20, size=(width, 64)).astype(np.int32)
    w2 = 2 * rng.integers(-20, 20, size=(10, width)).astype(np.int32)
    w2[0], w2[1] = 254, 100
    hidden = {"type": b"CUBA", "iDecay": 4096, "vDecay": 0, "vThMant": 4096, "refDelay": 1}
    readout = {"type": b"CUBA", "iDecay": 4096, "vDecay": 0, "vThMant": kernel.MAX_VTH_MANT, "refDelay": 1}
    return NetSpec(None, [LayerSpec(w1, hidden, None), LayerSpec(w2, readout, None)], timesteps, 64, 8,
                   "digits", "lif", {})


def test_kernel_wraps_the_current_as_lava_writes_it():
    u = torch.tensor([kernel.WRAP, kernel.WRAP + 1, 3 * kernel.WRAP + 5, -kernel.WRAP, -kernel.WRAP - 7])
    assert kernel.wrap_current(u).tolist() == [kernel.WRAP, 1 - kernel.WRAP, kernel.WRAP + 5, kernel.WRAP,
                                               kernel.WRAP - 7]
    # the leak truncates toward zero in both signs; iDecay 4096 keeps nothing of the old current
    assert kernel.decay(torch.tensor([-1000, 1000]), 41).tolist() == [-989, 989]
    assert kernel.current_step(torch.tensor([12345]), torch.tensor([2]), 4096).tolist() == [128]


@pytest.mark.parametrize("width", [100, 600])
def test_overflowing_readout_fires_or_wraps_in_the_emulator(width):
    x = np.random.default_rng(1).random((4, 64)).astype(np.float32)
    run = emulate(overflow_spec(width), x)
    exact_integration = (np.asarray(overflow_spec(width).layers[1].weight, dtype=np.int64).sum(1) << 6) * 8
    assert not np.array_equal(run.readout[0], exact_integration), "no overflow: the test would be vacuous"


@pytest.mark.lava
@pytest.mark.parametrize("width", [100, 600])
def test_emulator_matches_lava_when_the_readout_overflows(width):
    spec = overflow_spec(width)
    x = np.random.default_rng(1).random((4, 64)).astype(np.float32)
    emu, lava = emulate(spec, x, probe_layers=True), run_network(spec, x, progress=False, probe_layers=True)
    np.testing.assert_array_equal(emu.spikes[0], lava.spikes[0])
    np.testing.assert_array_equal(emu.readout, lava.readout)
