"""The paper's VGG11 (DLIF, 32x32, T=4) through export: time, file size against the checkpoint, stock NetX.

    python benchmarks/vgg11_export.py [--check-samples 256] [--lava]

Random weights (BatchNorm statistics randomized, folded at export) on random inputs, since CIFAR-10
cannot be had here. Rows: writing the file (folding + quantization + HDF5), the export's checks on
``--check-samples`` samples (model, folded model and emulator, as ``export`` runs them), the file as
written before (int32 weights, uncompressed) and now (int16, gzip), each against the checkpoint's
size; stock NetX (``netx.hdf5.Network``) must build from the new file. ``--lava`` also times one sample
on Loihi2SimCfg (minutes).
"""
from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import loihi_stable  # noqa: F401
from loihi_stable import script_args
from loihi_stable.io import save_checkpoint
from netx_export.fileformat import netx_file
from netx_export.compiler.export import folding_checks, write_netx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_folding import checkpoint_of, randomized  # noqa: E402


def main() -> None:
    args = script_args.parse(__doc__, {"check_samples": 256, "lava": False})
    torch.manual_seed(0)
    model = randomized("vgg11", (3, 32, 32), [0.45, 0.5, 0.55], [0.25, 0.25, 0.25])
    checkpoint = checkpoint_of(model, "cifar10")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        save_checkpoint(folder / "vgg11.pt", checkpoint)
        size_pt = (folder / "vgg11.pt").stat().st_size
        start = time.perf_counter()
        spec = write_netx(model, checkpoint, folder / "vgg11.net")
        rows.append(["export: fold, quantize, write", f"{time.perf_counter() - start:.1f} s", ""])
        x = torch.from_numpy(np.random.default_rng(0).random((args.check_samples, 3 * 32 * 32)).astype(np.float32))
        y = torch.zeros(len(x), dtype=torch.long)
        start = time.perf_counter()
        folding_checks(model, spec, x, y, progress=True)
        rows.append([f"export checks on {len(x)} samples", f"{time.perf_counter() - start:.1f} s", ""])
        netx_file.write_netx_file(spec, folder / "old.net", weight_dtype=np.int32, weight_storage={})  # as before
        size_old, size_new = (folder / "old.net").stat().st_size, (folder / "vgg11.net").stat().st_size
        rows.append(["file before (int32, uncompressed)", f"{size_old / 1e6:.0f} MB", f"{size_old / size_pt:.2f}x"])
        rows.append(["file now (int16, gzip)", f"{size_new / 1e6:.0f} MB", f"{size_new / size_pt:.2f}x"])
        rows.append(["checkpoint (.pt)", f"{size_pt / 1e6:.0f} MB", "1.00x"])
        from lava.lib.dl import netx

        start = time.perf_counter()
        net = netx.hdf5.Network(net_config=str(folder / "vgg11.net"))
        rows.append([f"stock NetX builds it ({len(net.layers)} blocks)", f"{time.perf_counter() - start:.1f} s", ""])
        if args.lava:
            from netx_export.runtime.lava_runner import run_network

            start = time.perf_counter()
            run_network(spec, x[:1].numpy(), progress=False)
            rows.append(["Loihi2SimCfg: 1 sample", f"{time.perf_counter() - start:.0f} s", ""])
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    script_args.print_table(f"VGG11 (DLIF, 3x32x32, T={spec.timesteps}, {len(spec.layers)} Loihi layers), "
                            f"{torch.get_num_threads()} threads; peak memory {peak:.0f} MB",
                            ["step", "time / size", "x checkpoint"], rows)


if __name__ == "__main__":
    main()
