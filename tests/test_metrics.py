"""Spike-train distances by hand, per-layer metrics on identical inputs, opt-in recording."""
import torch

from loihi_stable.metrics import layer_metrics, record, std, tasad
from netx_export.compiler.export import model_from_checkpoint


def test_tasad_and_std_by_hand():
    s = torch.tensor([[[1.0, 0, 1, 0], [0, 0, 0, 0]]])      # (B=1, N=2, T=4)
    s2 = torch.tensor([[[0.0, 1, 1, 1], [0, 0, 1, 0]]])
    # rate differences: neuron 0: (2 - 3)/4, neuron 1: (0 - 1)/4 -> sqrt(2)/4
    assert torch.isclose(tasad(s, s2), torch.tensor(2**0.5 / 4))
    # 4 differing (neuron, step) pairs -> sqrt(4)
    assert torch.isclose(std(s, s2), torch.tensor(2.0))


def test_identical_inputs_give_zero_everywhere(dlif_checkpoint, digits):
    model = model_from_checkpoint(dlif_checkpoint)
    x = digits[1].x[:16]
    _, a = record(model, x)
    _, b = record(model, x.clone())
    for clean, same in zip(a, b):
        assert layer_metrics(clean, same, model.config.leak) == {"ms_mppd": 0.0, "membrane_ms": 0.0,
                                                                 "tasad": 0.0, "std": 0.0}


def test_recording_is_opt_in(dlif_checkpoint, digits):
    model = model_from_checkpoint(dlif_checkpoint)
    x = digits[1].x[:4]
    logits, layers = record(model, x)
    assert len(layers) == len(model.spiking_neurons)
    assert layers[0].current.shape == (4, model.config.hidden[0], model.config.timesteps)
    assert all(not n.record and n.recording == {} for n in model.spiking_neurons)
    with torch.no_grad():
        model(x)
    assert all(n.recording == {} for n in model.spiking_neurons)
    assert torch.allclose(logits, model(x))
