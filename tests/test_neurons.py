"""LIF/DLIF dynamics against hand-computed sequences, and the triangle surrogate."""
import pytest
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
        neuron.leak_scale.copy_(torch.tensor([0.5, 0.25]))  # a[1], a[2]; a[0] = 1 is not a parameter
    # v1 = 0.5; v2 = 0.5*0.5 + 0.5 = 0.75; v3 = 0.25*0.75 + 0.5 = 0.6875 (all exact on the grid)
    spikes, voltage = run(neuron, [0.5, 0.5, 0.5])
    assert spikes == [0, 0, 0]
    assert voltage.tolist() == [0.5, 0.75, 0.6875]
    assert neuron.dv_schedule().tolist() == [0, 2048, 3072]


def test_dlif_decay_never_grows_and_stays_representable():
    neuron = DLIF(timesteps=3, leak=0.99)
    with torch.no_grad():
        neuron.leak_scale.copy_(torch.tensor([2.0, -1.0]))
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
    assert dlif.leak_scale.shape == (3,)  # a[1..3]: a[0] acts on u[-1] = 0, so it is no parameter
    assert dlif.leak_scale.grad is not None and dlif.leak_scale.grad[:2].abs().min() > 0
    assert dlif.leak_schedule().tolist() == [1.0, 1.0, 1.0, 1.0]
    assert not any(p.requires_grad for p in lif.parameters())


def test_checkpoints_with_a0_still_load():
    """Before a[0] stopped being a parameter, checkpoints held all T values; a[0] was always 1."""
    neuron = DLIF(timesteps=3)
    neuron.load_state_dict({"leak_scale": torch.tensor([1.0, 0.5, 0.25])})
    assert neuron.leak_schedule().tolist() == [1.0, 0.5, 0.25]


def test_input_form_scales_the_input_and_learns_every_step():
    """The authors' DLIF: v[t] = lambda*u[t-1] + p[t]*I[t]; p[0] gets a gradient, unlike a[0]."""
    neuron = DLIF(timesteps=3, leak=1.0, form="input", arithmetic="float")
    assert neuron.input_scale.shape == (3,)
    assert not isinstance(neuron.leak_scale, torch.nn.Parameter)
    with torch.no_grad():
        neuron.input_scale.copy_(torch.tensor([1.0, 0.5, 2.0]))
    # v1 = 0.4; v2 = 0.4 + 0.5*0.4 = 0.6; v3 = 0.6 + 2*0.4 = 1.4 > 1: spike
    spikes, voltage = run(neuron, [0.4, 0.4, 0.4])
    assert spikes == [0, 0, 1]
    torch.testing.assert_close(voltage, torch.tensor([0.4, 0.6, 1.4]))
    current = torch.full((2, 5, 3), 0.45, requires_grad=True)
    (neuron(current) * torch.randn(2, 5, 3)).sum().backward()
    assert neuron.input_scale.grad[0] != 0
    fused = neuron(current)
    torch.testing.assert_close(fused, neuron.reference_forward(current))
    with pytest.raises(ValueError, match="input-form"):
        neuron.device_params


def test_lif_exports_cuba_parameters():
    params = LIF(threshold=1.25, leak=0.99).device_params
    assert params["type"] == "CUBA" and params["iDecay"] == 4096
    assert params["vDecay"] == 41 and params["vThMant"] == 80
    assert "vDecaySchedule" not in params
