"""LIF/DLIF dynamics against hand-computed sequences, and the triangle surrogate."""
import torch

from loihi_stable.neurons import DLIF, LIF, triangle_spike


def run(neuron, values):
    neuron.record = True
    spikes = neuron(torch.tensor(values, dtype=torch.float32).reshape(1, 1, -1))
    return spikes.flatten().tolist(), neuron.recording["voltage"].flatten()


def test_lif_matches_hand_computed_integer_sequence():
    # lambda = 0.99 -> dv = round(4096*0.01) = 41; I = 1228/4096 (on the chip's grid)
    # v1 = 1228; v2 = trunc(1228*4055/4096) + 1228 = 1215 + 1228 = 2443;
    # v3 = trunc(2443*4055/4096) + 1228 = 2418 + 1228 = 3646; v4 = 3609 + 1228 = 4837 > 4096 -> spike, reset
    # v5 = 0 + 1228
    spikes, voltage = run(LIF(timesteps=5), [1228 / 4096] * 5)
    assert spikes == [0, 0, 0, 1, 0]
    assert (voltage * 4096).round().int().tolist() == [1228, 2443, 3646, 4837, 1228]


def test_spike_is_strict_greater_than_threshold():
    spikes, _ = run(LIF(timesteps=2), [1.0, 1.0 + 1 / 4096])
    assert spikes == [0, 1]


def test_dlif_uses_per_step_leak_scale():
    neuron = DLIF(timesteps=3, leak=1.0)
    with torch.no_grad():
        neuron.leak_scale.copy_(torch.tensor([1.0, 0.5, 0.25]))
    # v1 = 0.5; v2 = 0.5*0.5 + 0.5 = 0.75; v3 = 0.25*0.75 + 0.5 = 0.6875 (all exact on the grid)
    spikes, voltage = run(neuron, [0.5, 0.5, 0.5])
    assert spikes == [0, 0, 0]
    assert voltage.tolist() == [0.5, 0.75, 0.6875]
    assert neuron.dv_schedule().tolist() == [0, 2048, 3072]


def test_dlif_decay_never_grows_and_stays_representable():
    neuron = DLIF(timesteps=3, leak=0.99)
    with torch.no_grad():
        neuron.leak_scale.copy_(torch.tensor([2.0, 1.0, -1.0]))
    decay = neuron.effective_decay()
    assert decay.max() <= 1.0 and decay.min() >= 1 / 4096
    assert ((decay * 4096).round() == decay * 4096).all()
    neuron.clamp()
    assert neuron.leak_scale.max() <= 1 / 0.99 + 1e-7


def test_triangle_surrogate_gradient():
    v = torch.tensor([0.0, 0.5, 1.0, 1.25, 2.5], requires_grad=True)
    triangle_spike(v, threshold=1.0, width=1.0).sum().backward()
    assert torch.allclose(v.grad, torch.tensor([0.0, 0.5, 1.0, 0.75, 0.0]))


def test_dlif_leak_scale_gets_gradient_and_lif_has_none():
    dlif, lif = DLIF(timesteps=4), LIF(timesteps=4)
    x = torch.full((2, 3, 4), 0.4)
    dlif(x).sum().backward()
    assert dlif.leak_scale.grad is not None and dlif.leak_scale.grad[1:].abs().sum() > 0
    assert not any(p.requires_grad for p in lif.parameters())


def test_lif_exports_cuba_parameters():
    params = LIF(threshold=1.25, leak=0.99).device_params
    assert params["type"] == "CUBA" and params["iDecay"] == 4096
    assert params["vDecay"] == 41 and params["vThMant"] == 80
    assert "vDecaySchedule" not in params
