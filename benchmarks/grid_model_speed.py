"""Forward+backward of the chip-arithmetic (grid) model vs its float twin, and vs the per-step path it replaced.

    python benchmarks/grid_model_speed.py [--samples 360] [--repeats 15] [--compile]

The demo network (DLIF 64-128-64-10, T=8, digits): the grid model is the QAT model in chip
arithmetic; the float twin is the same model in float arithmetic; "per-step reference" is
the chip arithmetic as it was two releases ago (float32 -> float64 -> round -> float32 on every step,
``fixed_point.chip_voltage_step``, and the leak as sign/abs/floor-divide), patched in for the run; "slayer's
synapse" runs each Dense synapse as slayer does (a 1x1x1 conv3d, what ``blocks.dense_sum`` replaced);
"torch's trunc_" the leak's rounding as it was before ``chip_kernel.truncate_``.
Times are medians; one torch thread. With parameters frozen: an attack's pass (the input's gradient only).
``--compile`` adds the grid model under ``torch.compile`` (inductor, CPU), its compile time, and whether its
logits equal the eager model's.
"""
from __future__ import annotations

import resource
import statistics
import time

import torch

import loihi_stable  # noqa: F401
from loihi_stable import script_args
from loihi_stable import blocks, chip_kernel as kernel, fixed_point as fx
from loihi_stable.allocator import keep_freed_memory
from loihi_stable.data import load_dataset
from loihi_stable.models import ModelConfig, build_model
from loihi_stable.report import table


def integer_style_decay(x, d):
    """chip_kernel.decay as it was on every dtype: sign(k) floor(|k| / 4096), k = x (4096 - d)."""
    kept = x * (kernel.DECAY_UNITY - d)
    return torch.sign(kept) * torch.div(kept.abs(), kernel.DECAY_UNITY, rounding_mode="floor")


def per_step_dynamics(current, dv, threshold, payload_scale=1, bias=None, scale=None, voltages=True, states=True):
    """The chip path as it was: one chip_voltage_step per step, in and out of float64 each time."""
    voltage, state, spike = torch.empty_like(current), torch.empty_like(current), torch.empty_like(current)
    u = torch.zeros_like(current[0])
    for t in range(current.shape[0]):
        voltage[t] = fx.chip_voltage_step(u, dv[t], current[t], payload_scale)
        torch.gt(voltage[t], threshold, out=spike[t])
        u = torch.addcmul(voltage[t], voltage[t], spike[t], value=-1.0, out=state[t])
    return voltage, spike, state


def slayer_synapse(synapse, x):
    """The Dense synapse as slayer computes it (a 1x1x1 conv3d)."""
    return synapse(x)


def seconds(model, x, y, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        x_ = x.clone().requires_grad_(True)
        start = time.perf_counter()
        torch.nn.functional.cross_entropy(model(x_), y).backward()
        times.append(time.perf_counter() - start)
    return statistics.median(times[2:])


def main() -> None:
    args = script_args.parse(__doc__, {"samples": 360, "repeats": 15, "compile": False})
    torch.set_num_threads(1)
    keep_freed_memory()  # as every command does (cli.friendly_errors)
    _, test = load_dataset("digits")
    x, y = test.x[:args.samples], test.y[:args.samples]
    torch.manual_seed(0)
    model = build_model(ModelConfig(neuron="dlif"))
    with model.arithmetic("float"):
        float_twin = seconds(model, x, y, args.repeats)
    grid = seconds(model, x, y, args.repeats)
    for p in model.parameters():  # an attack's pass: the input's gradient only (what the attack suites run)
        p.requires_grad_(False)
    with model.arithmetic("float"):
        float_attack = seconds(model, x, y, args.repeats)
    grid_attack = seconds(model, x, y, args.repeats)
    for p in model.parameters():
        p.requires_grad_(True)
    fast, decay, synapse_sum, truncate_ = fx.chip_dynamics, kernel.decay, blocks.dense_sum, kernel.truncate_
    try:
        kernel.truncate_ = torch.Tensor.trunc_  # torch's own trunc: what chip_kernel.truncate_ replaced
        grid_trunc = seconds(model, x, y, args.repeats)
        kernel.truncate_ = truncate_
        blocks.dense_sum = slayer_synapse
        with model.arithmetic("float"):
            float_slayer = seconds(model, x, y, args.repeats)
        grid_slayer = seconds(model, x, y, args.repeats)
        fx.chip_dynamics, kernel.decay = per_step_dynamics, integer_style_decay
        before = seconds(model, x, y, args.repeats)
    finally:
        fx.chip_dynamics, kernel.decay, blocks.dense_sum, kernel.truncate_ = fast, decay, synapse_sum, truncate_
    rows = [["float twin (float arithmetic)", f"{1e3 * float_twin:.1f}", "1.00"],
            ["grid model (chip arithmetic)", f"{1e3 * grid:.1f}", f"{grid / float_twin:.2f}"],
            ["grid model, torch's trunc_ (before chip_kernel.truncate_)", f"{1e3 * grid_trunc:.1f}",
             f"{grid_trunc / float_twin:.2f}"],
            ["float twin, parameters frozen (an attack's pass)", f"{1e3 * float_attack:.1f}", "1.00"],
            ["grid model, parameters frozen (x the frozen float twin)", f"{1e3 * grid_attack:.1f}",
             f"{grid_attack / float_attack:.2f}"],
            ["float twin, slayer's synapse (conv3d)", f"{1e3 * float_slayer:.1f}", f"{float_slayer / float_twin:.2f}"],
            ["grid model, slayer's synapse (conv3d)", f"{1e3 * grid_slayer:.1f}", f"{grid_slayer / float_twin:.2f}"],
            ["grid model, slayer's synapse, per-step chip path", f"{1e3 * before:.1f}", f"{before / float_twin:.2f}"]]
    if args.compile:
        start = time.perf_counter()
        compiled = torch.compile(model)
        seconds(compiled, x, y, 3)  # the first calls compile
        took = time.perf_counter() - start
        fused = seconds(compiled, x, y, args.repeats)
        with torch.no_grad():
            same = torch.equal(compiled(x), model(x))
        rows.append([f"grid model, torch.compile (compiled in {took:.0f} s; logits equal: {same})",
                     f"{1e3 * fused:.1f}", f"{fused / float_twin:.2f}"])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"demo MLP ({model.config.hidden}, T={model.config.timesteps}), {len(x)} samples, forward+backward, "
          f"1 thread; peak memory {peak:.0f} MB")
    print(table(["model", "ms", "x float twin"], rows))
    print(f"grid model now / with slayer's synapse: {grid_slayer / grid:.2f}x faster; "
          f"float twin: {float_slayer / float_twin:.2f}x; grid model now / two releases ago: {before / grid:.1f}x")


if __name__ == "__main__":
    main()
