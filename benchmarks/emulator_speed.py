"""Samples/s of the fixed-point emulator vs Lava's Loihi2SimCfg on the same exported network.

    python benchmarks/emulator_speed.py [model.net] [--lava-samples 64]

Without a file it trains and exports the default digits DLIF model (5 epochs) first.
Both produce the same readout voltages (checked here too).
"""
from __future__ import annotations

import argparse
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
from netx_export.emulator import emulate
from netx_export.export import write_netx
from netx_export.lava_runner import read_netx, run_network


def default_network(folder: Path) -> Path:
    train_set, _ = load_dataset("digits")
    torch.manual_seed(0)
    model = build_model(ModelConfig())
    train(model, train_set, TrainConfig(epochs=5), progress=False)
    checkpoint = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                  "model_config": model.config.to_dict(), "state_dict": model.state_dict()}
    write_netx(model, checkpoint, folder / "model.net")
    return folder / "model.net"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("network", nargs="?")
    parser.add_argument("--lava-samples", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        spec = read_netx(args.network or default_network(Path(folder)))
        _, test = load_dataset(spec.dataset)
        x = test.x.numpy()
        seconds = []
        for _ in range(5):  # best of 5: one pass over the test set takes milliseconds
            start = time.perf_counter()
            emu = emulate(spec, x)
            seconds.append(time.perf_counter() - start)
        emu_rate = len(x) / min(seconds)
        n = min(args.lava_samples, len(x))
        start = time.perf_counter()
        lava = run_network(spec, x[:n], progress=False)
        lava_rate = n / (time.perf_counter() - start)
    same = np.array_equal(emu.readout[:n], lava.readout)
    print(f"{spec.neuron.upper()} network, T={spec.timesteps}, layers={len(spec.layers)}; readouts identical: {same}")
    print(table(["backend", "samples", "samples/s"],
                [["emulator", len(x), f"{emu_rate:.0f}"], ["Loihi2SimCfg", n, f"{lava_rate:.1f}"]]))
    print(f"speedup: {emu_rate / lava_rate:.0f}x")


if __name__ == "__main__":
    main()
