"""Quantization round trips between the float model, the HDF5 file and the chip's integers."""
import h5py
import numpy as np
import torch

from loihi_stable import fixed_point as fx
from netx_export.compiler.export import model_from_checkpoint, write_netx


def test_input_payload_round_trip():
    from netx_export.fileformat.netx_file import NetSpec, encode_inputs

    x = torch.rand(100, 64)
    x[0, :3] = torch.tensor([-0.2, 1.3, 0.5])
    payload = encode_inputs(NetSpec(None, [], 1, input_shape=(1, 1, x.shape[-1])), x.numpy())[:, 0, 0]
    assert payload.min() >= 0 and payload.max() <= 64
    assert torch.equal(torch.from_numpy(payload).float() / 64, fx.quantize_input(x))


def test_weight_quantizer_matches_slayer_neuron():
    from loihi_stable.neurons import LIF

    w = torch.randn(50, 50) * 3
    assert torch.equal(fx.quantize_weight(w), LIF().quantize_8bit(w))
    assert torch.equal(fx.quantize_weight(w, descale=True), LIF().quantize_8bit(w, descale=True))


def test_decay_grid_round_trip():
    decay = torch.linspace(0.0, 1.5, 301)
    dv = fx.decay_to_dv(decay)
    assert dv.min() >= 0 and dv.max() <= fx.MAX_DV
    assert torch.equal(1 - dv / 4096, fx.quantize_decay(decay))


def test_quantizers_pass_gradients_straight_through():
    x = torch.rand(5, requires_grad=True)
    (fx.quantize_input(x) * 3).sum().backward()
    assert torch.allclose(x.grad, torch.full((5,), 3.0))


def test_chip_voltage_step_truncates_toward_zero_and_saturates():
    u = torch.tensor([-1000 / 4096, 1000 / 4096, 2000.0])
    v = fx.chip_voltage_step(u, torch.tensor(41.0), torch.tensor([0.0, 0.0, 100.0]))
    # -1000*4055/4096 = -989.99 -> -989 (toward zero), +989; (2000 + 100)*4096 > 2^23 - 1 saturates
    assert (v * 4096).round().tolist() == [-989, 989, float(fx.STATE_LIMIT)]


def test_exported_weights_and_neurons_match_model(tmp_path, dlif_checkpoint):
    model = model_from_checkpoint(dlif_checkpoint)
    write_netx(model, dlif_checkpoint, tmp_path / "m.net")
    with h5py.File(tmp_path / "m.net") as f:
        assert len(f["layer"]) == len(model.blocks) + 1
        for i, block in enumerate(model.blocks):
            w = f["layer"][str(i)]["weight"][()]
            assert w.dtype.kind in "iuf" and np.all(w % 2 == 0) and w.min() >= -256 and w.max() <= 254
            quantized = block.synapse.pre_hook_fx(block.synapse.weight).reshape(w.shape)
            assert np.array_equal(w / 64, quantized.detach().numpy())
            neuron = f["layer"][str(i)]["neuron"]
            assert neuron["type"][()] == b"CUBA" and neuron["iDecay"][()] == 4096
            assert np.array_equal(neuron["vDecaySchedule"][()], block.neuron.dv_schedule().numpy())
            assert neuron["vThMant"][()] == (4096 if i == 0 else 64)  # the first layer runs on a 64x finer grid
        assert f["loihi_stable"].attrs["timesteps"] == model.config.timesteps
