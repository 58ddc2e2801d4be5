"""Certified samples/s: S-IBP, S-CROWN (fixed and alpha-optimised slopes) and the chip certificate,
batched against one sample at a time (the reference: how a per-sample verifier loop runs).

    python benchmarks/certify_speed.py [--samples 128] [--device cpu|cuda]

Networks: the digits DLIF MLP (64-128-64-10, T=8, chip arithmetic) and a digits DLIF convnet-s
(T=4), both IBP-trained for 2 epochs so that some neurons are decided; eps 2/255. Bounds are
checked identical between the batched and the per-sample run before any time is reported.
"""
from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

import loihi_stable  # noqa: F401
from loihi_stable import script_args
from loihi_stable.certify import crown_margin_lower_bound, ibp_bounds, margin_lower_bound
from loihi_stable.data import load_dataset
from loihi_stable.io import CHECKPOINT_FORMAT, CHECKPOINT_VERSION
from loihi_stable.models import ModelConfig, build_model
from loihi_stable.report import table
from loihi_stable.training import TrainConfig, train
from netx_export.analysis.chip_certificate import chip_bounds
from netx_export.compiler.export import write_netx
from netx_export.fileformat.netx_file import read_netx

EPS = 2 / 255


def network(arch: str, train_set):
    torch.manual_seed(0)
    conv = {} if arch == "mlp" else {"arch": arch, "input_shape": [1, 8, 8], "mean": [0.0], "std": [1.0], "timesteps": 4}
    model = build_model(ModelConfig(**conv))
    train(model, train_set, TrainConfig(perturb="ibp", epochs=2, val_eps=0.0), progress=False)
    return model.eval()


def methods(model, spec):
    def ibp(x, y):
        with torch.no_grad():
            return margin_lower_bound(ibp_bounds(model, x, EPS), y).double()

    def crown(steps):
        def run(x, y):
            with torch.no_grad():
                bounds = ibp_bounds(model, x, EPS)
            return crown_margin_lower_bound(model, x, y, EPS, bounds, iterations=steps).double()
        return run

    def chip(x, y):
        return torch.from_numpy(chip_bounds(spec, x.cpu().numpy(), y.cpu().numpy(), EPS).margin_lo).double()
    return {"S-IBP": ibp, "S-CROWN": crown(0), "alpha-CROWN (20 steps)": crown(20), "chip certificate": chip}


def timed(function, x, y, batch: int):
    started = time.perf_counter()
    out = torch.cat([function(x[i:i + batch], y[i:i + batch]) for i in range(0, len(x), batch)])
    return out, len(x) / (time.perf_counter() - started)


def main() -> None:
    args = script_args.parse(__doc__, {"samples": 128, "device": "cpu"})
    train_set, test_set = load_dataset("digits")
    x, y = test_set.x[:args.samples].to(args.device), test_set.y[:args.samples].to(args.device)
    rows = []
    for arch in ("mlp", "convnet-s"):
        model = network(arch, train_set)
        with tempfile.TemporaryDirectory() as folder:
            write_netx(model, {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION,
                               "model_config": model.config.to_dict(), "train_config": {"dataset": "digits"},
                               "state_dict": model.state_dict(), "metrics": {}}, Path(folder) / "m.net")
            spec = read_netx(Path(folder) / "m.net")
        model = model.to(args.device)
        for name, function in methods(model, spec).items():
            if name.startswith("alpha"):  # the optimiser's path depends on the batch: compare against itself
                _, one = timed(function, x[:16], y[:16], 1)
                _, batched = timed(function, x, y, len(x))
            else:
                reference, one = timed(function, x, y, 1)
                bounds, batched = timed(function, x, y, len(x))
                torch.testing.assert_close(bounds.cpu(), reference.cpu(), rtol=1e-6, atol=1e-6, equal_nan=True)
            rows.append([arch, name, f"{batched:,.0f}", f"{one:,.1f}", f"{batched / one:.1f}x"])
    print(f"certified samples/s at eps 2/255, {args.samples} digits test samples, device {args.device}")
    print(table(["network", "method", f"batched ({args.samples})", "one at a time", "ratio"], rows))


if __name__ == "__main__":
    main()
