"""Samples/s of the fixed-point emulator vs the step-major loop it replaced and vs Lava's Loihi2SimCfg.

    python benchmarks/emulator_speed.py [model.net ...] [--lava-samples 16] [--vgg11]

Without files it trains and exports two digits DLIF networks first (the default MLP, 5 epochs, and a
convnet-s, 3 epochs); ``--vgg11`` adds the paper's VGG11 at 32x32 (random weights folded from a
model with BatchNorm, T=4) on random inputs. Each network: the emulator at 1 and 2 torch threads,
the step-major int64 reference (tests/step_major_reference.py, one thread), Lava's steady state
(start-up split off), readouts checked identical, peak memory of the process.
"""
from __future__ import annotations

import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import loihi_stable  # noqa: F401
from loihi_stable import script_args
from loihi_stable.allocator import keep_freed_memory
from loihi_stable.data import load_dataset
from loihi_stable.io import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from loihi_stable.models import ModelConfig, build_model
from loihi_stable.report import table
from loihi_stable.training import TrainConfig, train
from netx_export.runtime import emulator
from netx_export.compiler.export import write_netx
from netx_export.runtime.lava_runner import run_network
from netx_export.fileformat.netx_file import encode_inputs, read_netx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import step_major_reference  # noqa: E402


def checkpoint_of(model) -> dict:
    return {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_config": model.config.to_dict(),
            "state_dict": model.state_dict()}


def default_network(folder: Path, arch: str) -> Path:
    train_set, _ = load_dataset("digits")
    torch.manual_seed(0)
    conv = {} if arch == "mlp" else {"arch": arch, "input_shape": [1, 8, 8], "mean": [0.0], "std": [1.0]}
    model = build_model(ModelConfig(**conv))
    train(model, train_set, TrainConfig(epochs=5 if arch == "mlp" else 3), progress=False)
    write_netx(model, checkpoint_of(model), folder / f"{arch}.net")
    return folder / f"{arch}.net"


def vgg11_network(folder: Path) -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_folding import randomized

    model = randomized("vgg11", (3, 32, 32), [0.45, 0.5, 0.55], [0.25, 0.25, 0.25])
    checkpoint = {**checkpoint_of(model), "train_config": {"dataset": "cifar10"}}
    write_netx(model, checkpoint, folder / "vgg11.net")
    return folder / "vgg11.net"


def rate(run, x, repeats: int) -> float:
    """Median samples/s over ``repeats`` passes."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return len(x) / statistics.median(times)


def lava_rates(spec, x) -> tuple[float, float, np.ndarray]:
    """(start-up seconds, steady-state samples/s, readout) from runs of n/4 and n samples."""
    n, small = len(x), max(1, len(x) // 4)
    start = time.perf_counter()
    run_network(spec, x[:small], progress=False)
    t_small = time.perf_counter() - start
    start = time.perf_counter()
    run = run_network(spec, x, progress=False)
    t_full = time.perf_counter() - start
    steady = (n - small) / max(t_full - t_small, 1e-9)
    return max(t_small - small / steady, 0.0), steady, run.readout


def inputs_for(spec) -> np.ndarray:
    if spec.dataset == "digits":
        _, test = load_dataset("digits")
        return test.x.reshape(len(test), -1).numpy()
    return np.random.default_rng(0).random((64, spec.in_features)).astype(np.float32)


def measure(spec, name: str, lava_samples: int) -> None:
    x = inputs_for(spec)
    big = spec.layers[0].neurons * spec.timesteps >= 1 << 18  # VGG11 at 32x32: 32 samples, 2 passes
    batch = x[:32] if big else np.tile(x, (-(-2048 // len(x)), 1))[:2048]
    repeats = 2 if big else 5
    rows = []
    chip = emulator.Emulator(spec)  # steady state, as Lava's: the file's integers converted once
    for threads in (1, 2):
        torch.set_num_threads(threads)
        rows.append([f"emulator, {threads} thread(s)", f"{rate(chip, batch, repeats):.1f}"])
    torch.set_num_threads(1)
    reference = rate(lambda v: step_major_reference.emulate_batch(spec, encode_inputs(spec, v)), batch[:16 if big else 512], 1)
    rows.append(["step-major reference (before), 1 thread", f"{reference:.1f}"])
    n = min(lava_samples, len(x))
    startup, steady, lava_readout = lava_rates(spec, x[:n])
    same = np.array_equal(emulator.emulate(spec, x[:n]).readout, lava_readout)
    rows.append(["Loihi2SimCfg (steady state)", f"{steady:.2f}"])
    best = max(float(rows[0][1]), float(rows[1][1]))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kinds = "-".join(layer.kind for layer in spec.layers)
    print(f"\n{name}: {spec.neuron.upper()} {spec.arch} ({kinds}), T={spec.timesteps}, emulator on {len(batch)} samples, "
          f"Lava on {n}; readouts identical to Lava: {same}; peak memory so far {peak:.0f} MB")
    print(table(["backend", "samples/s"], rows))
    print(f"emulator (best) / step-major reference: {best / reference:.1f}x; / Lava steady state: {best / steady:.0f}x; "
          f"Lava start-up {startup:.1f} s")


def main() -> None:
    keep_freed_memory()  # as every command does (cli.friendly_errors)
    args = script_args.parse(__doc__, {"lava_samples": 16, "vgg11": False}, positional={"networks": ("*", "NetX files (default: train two)")})
    with tempfile.TemporaryDirectory() as folder:
        paths = args.networks or [default_network(Path(folder), arch) for arch in ("mlp", "convnet-s")]
        if args.vgg11:
            paths.append(vgg11_network(Path(folder)))
        for path in paths:
            measure(read_netx(path), Path(path).stem, args.lava_samples if Path(path).stem != "vgg11" else 1)


if __name__ == "__main__":
    main()
