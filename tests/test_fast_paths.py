"""The layer-major unroll (emulator, grid model, certificate) against the step-major loop it replaced,
bit for bit, on random and trained dense, conv and DLIF networks and at the overflow edges."""
import numpy as np
import pytest
import torch

import step_major_reference as reference
from loihi_stable import chip_kernel as kernel
from netx_export.analysis.chip_certificate import chip_bounds
from netx_export.analysis.chip_model import ChipModel
from netx_export.runtime.chip_unroll import FLOAT32_EXACT, pooled_kernel, sum_bound, sum_dtype, synaptic_sum, weight_tensor
from netx_export.runtime.emulator import emulate
from netx_export.compiler.export import model_from_checkpoint, write_netx
from netx_export.fileformat.netx_file import LayerSpec, NetSpec, encode_inputs, read_netx


def _random_vgg(tmp_path):
    from test_folding import checkpoint_of, randomized

    model = randomized("vgg5", (3, 8, 8), [0.45, 0.5, 0.55], [0.25, 0.25, 0.25])
    write_netx(model, checkpoint_of(model, "cifar10"), tmp_path / "v.net")
    return read_netx(tmp_path / "v.net"), np.random.default_rng(0).random((5, 3 * 8 * 8)).astype(np.float32)


def _networks(tmp_path, request, digits):
    """(name, spec, inputs): random dense LIF/DLIF with persistent currents, trained dense and conv, a
    random VGG with biases, and readouts that fire and currents that wrap."""
    from test_emulator import overflow_spec, random_spec

    x = digits[1].x[:48].numpy().reshape(48, -1)
    nets = [(f"random {'dlif' if dlif else 'lif'} {seed}", random_spec(seed, dlif), x) for seed in (0, 1) for dlif in (False, True)]
    for fixture in ("dlif_checkpoint", "conv_dlif_checkpoint", "conv_lif_checkpoint"):
        checkpoint = request.getfixturevalue(fixture)
        write_netx(model_from_checkpoint(checkpoint), checkpoint, tmp_path / f"{fixture}.net")
        nets.append((fixture, read_netx(tmp_path / f"{fixture}.net"), x))
    nets.append(("random vgg5", *_random_vgg(tmp_path)))
    overflow_x = np.random.default_rng(1).random((4, 64)).astype(np.float32)
    nets += [(f"overflow {w}", overflow_spec(w), overflow_x) for w in (100, 600)]
    return nets


def test_emulator_is_the_step_major_loop_bit_for_bit(tmp_path, request, digits):
    for name, spec, x in _networks(tmp_path, request, digits):
        readout, spikes, voltages = reference.emulate_batch(spec, encode_inputs(spec, x))
        run = emulate(spec, x, probe_layers=True)
        np.testing.assert_array_equal(run.readout, readout, err_msg=name)
        for i, (ours, theirs) in enumerate(zip(run.spikes, spikes)):
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}: spikes of layer {i}")
        for i, (ours, theirs) in enumerate(zip(run.voltage, voltages)):
            np.testing.assert_array_equal(ours, theirs, err_msg=f"{name}: voltages of layer {i}")
        assert all(s.sum() > 0 for s in run.spikes[:1]), f"{name}: no spikes, the comparison would be vacuous"
        small = emulate(spec, x, batch_size=3)  # batches do not interact
        np.testing.assert_array_equal(small.readout, readout, err_msg=name)


@pytest.mark.parametrize("backward", [None, "sigmoid:4:detach", "rate"])
def test_grid_model_is_the_step_major_loop(tmp_path, request, digits, backward):
    """Values bit for bit; input gradients equal up to float32 rounding (conv sums and their backward
    now run in float32 where the sums are exact)."""
    from loihi_stable import surrogates

    chosen = None if backward is None else surrogates.parse(backward)
    flowing = []
    for name, spec, x in _networks(tmp_path, request, digits):
        model = ChipModel(spec)
        model.spike_backward = chosen
        grads, values = [], []
        for readout in (model.readout, lambda inputs: reference.grid_readout(model, inputs)):
            inputs = torch.from_numpy(x).clone().requires_grad_(True)
            out = readout(inputs)
            (out * torch.linspace(-1, 1, out.shape[1], dtype=out.dtype)).sum().backward()
            values.append(out.detach())
            grads.append(inputs.grad)
        torch.testing.assert_close(values[0], values[1], rtol=0, atol=0, msg=name)
        flowing += [name] if grads[1].abs().sum() > 0 else []
        torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6 * float(grads[1].abs().max()), msg=name)
    assert {"dlif_checkpoint", "conv_dlif_checkpoint", "conv_lif_checkpoint"} <= set(flowing), \
        f"gradients flow only through {flowing}: the comparison would be vacuous"


def test_certificate_is_the_step_major_loop_bit_for_bit(tmp_path, request, digits):
    for name, spec, x in _networks(tmp_path, request, digits):
        y = np.arange(len(x)) % spec.layers[-1].weight.shape[0]
        for eps in (0.0, 1 / 255, 4 / 255):
            ours, theirs = chip_bounds(spec, x, y, eps), reference.chip_bounds(spec, x, y, eps)
            for key, value in theirs.items():
                np.testing.assert_array_equal(getattr(ours, key), value, err_msg=f"{name}, eps {eps}: {key}")


def test_a_folded_pool_runs_as_its_small_kernel_on_sum_pooled_inputs_with_the_same_integers(tmp_path):
    """A stride-2 kernel constant on 2x2 blocks (export's folded average pool) is run as the k x k kernel on the
    2x2 sum-pooled input: every sum equal to the full convolution's, at the 8-bit extremes and on trained-like
    random weights; odd input sizes and kernels that are not block-constant keep the full convolution."""
    spec, _ = _random_vgg(tmp_path)
    assert [pooled_kernel(layer) is not None for layer in spec.layers] == [False, True, False, False, False]
    rng = np.random.default_rng(0)
    small = rng.choice([-256, 254], size=(8, 4, 3, 3))
    for weight in (small, rng.integers(-128, 127, size=(8, 4, 3, 3)) * 2):
        layer = LayerSpec(np.repeat(np.repeat(weight, 2, axis=2), 2, axis=3), {"vThMant": 1, "vDecay": 0},
                          kind="conv", stride=2, padding=2, out_shape=(8, 5, 5))
        pooled = torch.from_numpy(pooled_kernel(layer)).float()
        assert torch.equal(pooled, torch.from_numpy(weight).float())
        full = weight_tensor(layer, torch.float32)
        for size in (10, 11):  # even: the pooled form; odd: the full convolution
            spikes = torch.from_numpy(rng.random((3, 4, size, size)) < 0.7).float()
            spikes[0] = 1
            exact = torch.nn.functional.conv2d(spikes.double(), full.double(), stride=2, padding=2)
            assert torch.equal(synaptic_sum(layer, spikes, full, pooled).double(), exact)
    broken = LayerSpec(layer.weight.copy(), {"vThMant": 1, "vDecay": 0}, kind="conv", stride=2, padding=2)
    broken.weight[0, 0, 0, 1] += 2
    assert pooled_kernel(broken) is None


def test_float32_sums_are_used_only_where_exact_and_are_exact_at_the_8bit_extremes():
    fan_in = 1 << 16  # the largest fan-in the note promises: 254 * 65,536 < 2^24 <= 256 * 65,536
    top = LayerSpec(np.full((2, fan_in), 254), {"vThMant": 1, "vDecay": 0})
    bottom = LayerSpec(np.full((2, fan_in), -256), {"vThMant": 1, "vDecay": 0})
    spec = NetSpec(None, [top, bottom], 1)
    assert sum_bound(top, 1) == 254 * fan_in < FLOAT32_EXACT <= sum_bound(bottom, 1)
    assert sum_dtype(spec, 1) == torch.float64 and sum_dtype(NetSpec(None, [bottom, top], 1), 1) == torch.float32
    assert sum_dtype(spec, 0) == torch.float64  # the first layer's payloads are up to 64: 64x the bound
    mixed = LayerSpec(np.where(np.arange(fan_in) % 3 == 0, 254, -254)[None].repeat(2, 0), {"vThMant": 1, "vDecay": 0})
    for layer in (top, mixed):
        spikes = torch.from_numpy(np.random.default_rng(0).random((3, fan_in)) < 0.9)
        spikes[0] = True
        exact = spikes.long() @ torch.from_numpy(layer.weight).T
        ours = synaptic_sum(layer, spikes, weight_tensor(layer, torch.float32))
        assert torch.equal(ours.double(), exact.double())


def test_float_decay_is_the_integer_decay():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(np.concatenate([rng.integers(-kernel.WRAP * 4, kernel.WRAP * 4, 20000),
                                         [0, 1, -1, kernel.VOLTAGE_LIMIT, -kernel.VOLTAGE_LIMIT, 4095, -4095, 4097]]))
    for d in (0, 1, 41, 2048, 4095, 4096):
        assert torch.equal(kernel.decay(x.double(), d), kernel.decay(x, d).double())
        assert torch.equal(kernel.decay(x.double(), torch.tensor(float(d))), kernel.decay(x, d).double())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64])
def test_fast_trunc_and_wrap_are_torchs_trunc_and_remainder(dtype):
    """The division forms that replaced torch's slow CPU trunc_ and remainder, at halves of both signs,
    the 24-bit wrap's edges and its multiples, and values far past it (2^40 where the type holds it)."""
    w = kernel.WRAP
    edges = [0, 1, -1, w - 1, w, w + 1, -w - 1, -w, -w + 1, 2 * w, -2 * w, 3 * w, -3 * w, 3 * w + 5, -3 * w - 5]
    rng = np.random.default_rng(0)
    x = torch.tensor(edges + [2 ** 40, -2 ** 40, 2 ** 40 + 3, -(2 ** 40) - 3], dtype=torch.int64)
    x = torch.cat([x, torch.from_numpy(rng.integers(-8 * w, 8 * w, 5000))])
    if dtype == torch.float32:  # float32 sums are used only where they stay below 2^24 (FLOAT32_EXACT)
        x = x[(x + w).abs() <= 2 * w]
    x = x.to(dtype)
    assert torch.equal(kernel.wrap_conv_activation(x), torch.remainder(x + w, 2 * w) - w)
    if dtype.is_floating_point:
        halves = torch.tensor([0.5, -0.5, 1.5, -1.5, 2.999, -2.999, 1e-30, -1e-30, 4095.5, -4095.5], dtype=dtype)
        y = torch.cat([x * 0.99, halves, torch.from_numpy(rng.normal(0, 1e4, 5000)).to(dtype)])
        assert torch.equal(kernel.truncate_(y.clone()), torch.trunc(y))
        assert torch.equal(torch.signbit(kernel.truncate_(y.clone())), torch.signbit(torch.trunc(y)))


def test_float32_leak_is_the_integer_leak():
    """kernel.decay_float32_ over the whole saturated voltage range and every kind of decay."""
    limit = kernel.VOLTAGE_LIMIT
    rng = np.random.default_rng(1)
    edges = [0, 1, -1, 4095, -4095, 4096, -4096, 4097, -4097, limit, -limit, limit - 4096, -limit + 4096, 12345, -12345]
    v = torch.from_numpy(np.concatenate([edges, rng.integers(-limit, limit + 1, 50000)]))
    out, high = torch.empty(len(v)), torch.empty(len(v))
    for d in [0, 1, 2, 41, 2047, 2048, 2049, 4094, 4095, 4096] + rng.integers(0, 4097, 40).tolist():
        ours = kernel.decay_float32_(v.float(), kernel.DECAY_UNITY - d, out, high)
        assert ours.dtype == torch.float32
        assert torch.equal(ours.long(), kernel.decay(v, d)), d
        assert torch.equal(ours.double(), kernel.decay(v.double(), float(d))), d


@pytest.mark.parametrize("threshold, payload_scale", [(1.0, 1), (1.3, 1), (0.1, 64)])
def test_chip_dynamics_float32_state_is_the_float64_state(threshold, payload_scale, monkeypatch):
    """Drives up to the largest that keeps the state in float32 (2^23 - 1 units) over enough steps to
    saturate, with the sharpest and no decay: the float32 state gives the float64 state's values."""
    from loihi_stable import fixed_point as fx

    decay_float32_ = kernel.decay_float32_
    threshold = float(torch.tensor(threshold, dtype=torch.float32))  # the float model's threshold in both
    scale = fx.state_scale(payload_scale)
    rng = np.random.default_rng(2)
    units = rng.integers(-(kernel.WRAP - 1), kernel.WRAP, (12, 4, 200)) * (rng.random((1, 1, 200)) < 0.5)
    units = units + rng.integers(-3 * scale, 3 * scale, units.shape)  # and neurons near the threshold
    units = np.clip(units, -(kernel.WRAP - 1), kernel.WRAP - 1)
    units[0, 0, 0] = kernel.WRAP - 1
    current = torch.from_numpy(units / scale).float()
    assert torch.equal(current.double() * scale, torch.from_numpy(units).double())  # on the grid, exact
    dv = torch.tensor([0, 4095, 1, 41, 2048, 0, 0, 100, 4096, 7, 0, 3000])
    calls = []
    monkeypatch.setattr(kernel, "decay_float32_", lambda *a: calls.append(1) or decay_float32_(*a))
    narrow = fx.chip_dynamics(current, dv, threshold, payload_scale)
    assert len(calls) == len(dv), "the float32 state was not used"
    wide = fx.chip_dynamics(current.double(), dv, threshold, payload_scale)
    assert len(calls) == len(dv)
    over = fx.chip_dynamics(current * 1.01, dv, threshold, payload_scale)  # a drive past 2^23: float64 again
    assert len(calls) == len(dv) and over[0].dtype == torch.float32
    assert (narrow[0].abs() * scale).max() == kernel.VOLTAGE_LIMIT, "no saturation: the test would be vacuous"
    assert 0 < narrow[1].mean() < 1
    for a, b in zip(narrow, wide):
        assert torch.equal(a.double(), b)


@pytest.mark.parametrize("constant", [False, True], ids=["changing", "constant-in-time"])
@pytest.mark.parametrize("threshold, payload_scale, sizes", [(1.0, 1, [0.5, 2000.0, 4000.0]), (0.1, 64, [0.5, 2000.0, 4000.0]),
                                                              (1.3, 1, [0.5, 2000.0, 4000.0]), (1.0, 1, [0.5, 20.0])])
def test_chip_dynamics_is_the_step_by_step_voltage_update(threshold, payload_scale, sizes, constant):
    """Currents large enough to wrap and voltages that saturate, a threshold not exact in float32; and
    voltages that come within 2x of the saturation without a current that could reach it (the clamp is
    skipped there). Constant in time: a first layer's current, one image expanded over T (its drive converted once)."""
    from loihi_stable import fixed_point as fx

    rng = np.random.default_rng(0)
    scale = fx.state_scale(payload_scale)
    current = torch.from_numpy(rng.normal(0, 1, (8, 5, 300)) * rng.choice(sizes, (1, 1, 300))).float()
    current = torch.round(current * scale) / scale
    if constant:
        current = current[:1].expand(8, 5, 300)
        assert current.stride(0) == 0
    dv = torch.from_numpy(rng.integers(0, 4096, 8))
    voltage, spikes, state = fx.chip_dynamics(current, dv, threshold, payload_scale)
    u = torch.zeros_like(current[0])
    for t in range(8):
        v = fx.chip_voltage_step(u, dv[t], current[t], payload_scale)
        s = (v > threshold).float()
        u = v * (1 - s)
        assert torch.equal(voltage[t], v) and torch.equal(spikes[t], s) and torch.equal(state[t], u), f"step {t}"
    peak = voltage.abs().max() * scale
    assert spikes.any() and (peak >= kernel.VOLTAGE_LIMIT if max(sizes) > 1000 else peak > kernel.VOLTAGE_LIMIT / 64)



@pytest.mark.parametrize("margin", [0, 1, 2])
def test_chip_dynamics_saturates_exactly_at_the_edge_of_the_skip(margin):
    """A silent neuron without leak sums its drive d: T*d. d = limit // T - 1 is the largest drive for which
    the saturation is skipped; one more takes the clamp without needing it, two more saturate at the last step."""
    from loihi_stable import fixed_point as fx

    steps, limit = 8, kernel.VOLTAGE_LIMIT
    d = limit // steps - 1 + margin
    current = torch.tensor([d, -d], dtype=torch.float64).expand(steps, 1, 2).contiguous()
    voltage, spikes, _ = fx.chip_dynamics(current, torch.zeros(steps, dtype=torch.long), 1e9, scale=1)
    v = torch.zeros(1, 2, dtype=torch.float64)
    for t in range(steps):
        v = fx.kernel.voltage_step(v, current[t], 0)
        assert torch.equal(voltage[t], v), (t, voltage[t], v)
    assert not spikes.any() and (voltage[-1].abs().max() == limit) == (margin == 2)


@pytest.mark.parametrize("weights", ["trained", "8-bit extremes"])
def test_dense_synapses_as_matrix_products_are_slayers_conv3d_bit_for_bit(dlif_checkpoint, digits, weights, monkeypatch):
    """blocks.dense_sum against slayer's own Dense synapse (a 1x1x1 conv3d) on the chip's grid: the same
    logits bit for bit (the sums are exact), the same input gradient up to summation order."""
    from loihi_stable import blocks

    model = model_from_checkpoint(dlif_checkpoint).eval()
    if weights == "8-bit extremes":
        rng = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for synapse in [b.synapse for b in model.blocks] + [model.readout.synapse]:
                extremes = torch.tensor([kernel.WEIGHT_MIN, kernel.WEIGHT_MAX], dtype=torch.float32) / 64
                synapse.weight.copy_(extremes[torch.randint(0, 2, synapse.weight.shape, generator=rng)])
    x = digits[1].x[:64]

    def logits_and_grad():
        images = x.clone().requires_grad_(True)
        logits = model(images)
        logits.sum().backward()
        return logits.detach(), images.grad

    ours = logits_and_grad()
    monkeypatch.setattr(blocks, "dense_sum", lambda synapse, spikes: synapse(spikes))
    slayers = logits_and_grad()
    assert torch.equal(ours[0], slayers[0])
    assert ours[0].std() > 0 and ours[1].abs().max() > 0, "a constant network tests nothing"
    torch.testing.assert_close(ours[1], slayers[1], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("neuron, form, arithmetic", [("dlif", "leak", "chip"), ("lif", "leak", "chip"),
                                                      ("dlif", "leak", "float"), ("dlif", "leak", "quantized"),
                                                      ("dlif", "input", "chip")])
def test_frozen_query_logits_are_the_models_bit_for_bit(dlif_checkpoint, digits, neuron, form, arithmetic):
    """Square's query function (weights and schedules taken once) against the model's forward, and Square
    through it against Square through the model: the same logits, the same adversarial images."""
    from loihi_stable.attacks import Square
    from loihi_stable.attacks.query import frozen_logits
    from loihi_stable.models import ModelConfig, build_model

    if (neuron, form) == ("dlif", "leak"):
        model = model_from_checkpoint(dlif_checkpoint).eval()
    else:  # random weights, a schedule that is not all ones, spikes in every layer
        torch.manual_seed(1)
        model = build_model(ModelConfig(neuron=neuron, dlif_form=form, hidden=[32, 16], timesteps=5)).eval()
        with torch.no_grad():
            for block in model.blocks:
                block.synapse.weight.mul_(3)
                if form == "input":
                    block.neuron.input_scale.copy_(torch.linspace(0.5, 1.5, 5))
    x = digits[1].x[:40]
    with model.arithmetic(arithmetic), torch.no_grad():
        query = frozen_logits(model)
        assert torch.equal(query(x), model(x))
        assert model.blocks[-1](model.blocks[0](model.encode(x))).any(), "no spikes: a constant network tests nothing"
        fast = Square(model, eps=16 / 255, n_queries=30).perturb(x, digits[1].y[:40], None)
        slow = Square(model, eps=16 / 255, n_queries=30, logits=model).perturb(x, digits[1].y[:40], None)
        assert torch.equal(fast, slow)


def test_conv_nets_have_no_frozen_query_shortcut(conv_lif_checkpoint):
    from loihi_stable.attacks.query import frozen_logits

    assert frozen_logits(model_from_checkpoint(conv_lif_checkpoint)) is None
