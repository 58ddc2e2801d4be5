"""Samples/s of the fixed-point emulator vs Lava's Loihi2SimCfg on the same exported network.

    python benchmarks/emulator_speed.py [model.net ...] [--lava-samples 64]

Without files it trains and exports two digits DLIF networks first: the default MLP (5
epochs) and a convnet-s (3 epochs). The
emulator is timed with 1 and 2 torch threads (it pins itself to one; the 2-thread row is what
it did before), on an idle machine and with a competing busy process per core; Lava's rate
is split into start-up (compile, spawn) and steady state. Readouts are checked identical.
"""
from __future__ import annotations

import argparse
import contextlib
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import loihi_stable  # noqa: F401
from loihi_stable.data import load_dataset
from loihi_stable.io import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from loihi_stable.models import ModelConfig, build_model
from loihi_stable.report import table
from loihi_stable.training import TrainConfig, train
from netx_export import emulator
from netx_export.export import write_netx
from netx_export.lava_runner import run_network
from netx_export.netx_file import read_netx


def default_network(folder: Path, arch: str) -> Path:
    train_set, _ = load_dataset("digits")
    torch.manual_seed(0)
    conv = {} if arch == "mlp" else {"arch": arch, "input_shape": [1, 8, 8], "mean": [0.0], "std": [1.0]}
    model = build_model(ModelConfig(**conv))
    train(model, train_set, TrainConfig(epochs=5 if arch == "mlp" else 3), progress=False)
    checkpoint = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                  "model_config": model.config.to_dict(), "state_dict": model.state_dict()}
    write_netx(model, checkpoint, folder / f"{arch}.net")
    return folder / f"{arch}.net"


def _spin(stop) -> None:
    while not stop.is_set():
        pass


@contextlib.contextmanager
def busy_machine(processes: int):
    """``processes`` busy-looping processes competing for the cores while the block runs."""
    stop = multiprocessing.Event()
    workers = [multiprocessing.Process(target=_spin, args=(stop,), daemon=True) for _ in range(processes)]
    for worker in workers:
        worker.start()
    try:
        yield
    finally:
        stop.set()
        for worker in workers:
            worker.join()


@contextlib.contextmanager
def unpinned(threads: int):
    """The emulator as it was before it pinned itself: ``threads`` torch threads."""
    pinned = emulator.one_thread
    emulator.one_thread = contextlib.nullcontext
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        emulator.one_thread = pinned
        torch.set_num_threads(previous)


def emulator_rate(spec, x, repeats: int = 7) -> tuple[float, float]:
    """(median, worst) samples/s over ``repeats`` passes: a busy machine shows in the spread."""
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        emulator.emulate(spec, x)
        rates.append(len(x) / (time.perf_counter() - start))
    return statistics.median(rates), min(rates)


def lava_rates(spec, x, n: int) -> tuple[float, float, np.ndarray]:
    """(start-up seconds, steady-state samples/s, readout of n samples) from runs of n/8 and n samples."""
    small = max(1, n // 8)
    start = time.perf_counter()
    run_network(spec, x[:small], progress=False)
    t_small = time.perf_counter() - start
    start = time.perf_counter()
    run = run_network(spec, x[:n], progress=False)
    t_full = time.perf_counter() - start
    steady = (n - small) / max(t_full - t_small, 1e-9)
    return max(t_small - small / steady, 0.0), steady, run.readout


def measure(spec, lava_samples: int) -> None:
    _, test = load_dataset(spec.dataset)
    x = test.x.reshape(len(test), -1).numpy()
    batch = np.tile(x, (-(-4096 // len(x)), 1))[:4096]  # one emulator batch, long enough to time
    rows = []
    cores = os.cpu_count() or 2
    for machine, load in (("idle", 0), (f"busy ({cores} spinning processes)", cores)):
        with busy_machine(load):
            pinned = emulator_rate(spec, batch)
            for threads in (1, 2):
                with unpinned(threads):
                    median, worst = emulator_rate(spec, batch)
                rows.append([f"emulator, {threads} thread(s)", machine, f"{median:.0f}", f"{worst:.0f}"])
            rows.append(["emulator as shipped (pinned)", machine, f"{pinned[0]:.0f}", f"{pinned[1]:.0f}"])
    n = min(lava_samples, len(x))
    startup, steady, lava_readout = lava_rates(spec, x, n)
    same = np.array_equal(emulator.emulate(spec, x[:n]).readout, lava_readout)
    shipped_idle = float(rows[2][2])
    rows.append(["Loihi2SimCfg (steady state)", "idle", f"{steady:.1f}", ""])
    kinds = "-".join(layer.kind for layer in spec.layers)
    print(f"\n{spec.neuron.upper()} {spec.arch} ({kinds}), T={spec.timesteps}, emulator on {len(batch)} samples, "
          f"Lava on {n}; readouts identical to Lava: {same}")
    print(table(["backend", "machine", "samples/s (median)", "samples/s (worst)"], rows))
    print(f"Lava start-up: {startup:.2f} s; emulator (pinned, idle) / Lava steady state: {shipped_idle / steady:.0f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("networks", nargs="*")
    parser.add_argument("--lava-samples", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        paths = args.networks or [default_network(Path(folder), arch) for arch in ("mlp", "convnet-s")]
        for path in paths:
            measure(read_netx(path), args.lava_samples)


if __name__ == "__main__":
    main()
