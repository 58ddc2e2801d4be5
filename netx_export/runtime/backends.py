"""Where an exported network runs: Lava (simulator or Loihi 2) or the fixed-point emulator."""
from __future__ import annotations

import numpy as np

from loihi_stable import guards

from netx_export.runtime.lava_runner import BACKENDS as LAVA_BACKENDS
from netx_export.runtime.lava_runner import run_config, run_network
from netx_export.fileformat.netx_file import ChipRun, NetSpec

BACKENDS = (*LAVA_BACKENDS, "emulator")


def check_backend(backend: str) -> None:
    """Fail early (one line) for an unknown backend or missing hardware libraries."""
    guards.choice("backend", backend, BACKENDS)
    if backend != "emulator":
        run_config(backend)


def run_on(spec: NetSpec, x: np.ndarray, backend: str, progress: bool = True,
           probe_layers: bool = False, dlif_schedule: str | None = None) -> ChipRun:
    check_backend(backend)
    if backend == "emulator":
        from netx_export.runtime.emulator import emulate

        return emulate(spec, x, probe_layers=probe_layers)
    return run_network(spec, x, backend=backend, progress=progress, probe_layers=probe_layers,
                       dlif_schedule=dlif_schedule)
