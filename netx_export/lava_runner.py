"""Build a Lava network from an exported HDF5 file and run it on Loihi2SimCfg (or Loihi 2).

Inputs reach the chip as graded spikes carrying round(64*pixel); the first layer sums
W p unshifted on a 64-times finer state grid, so its current equals the float model's.
Samples stream back to back: each layer resets at the start of its own window of
T steps (layer l lags the input by l+2 steps), so no flush steps are needed
between samples. The prediction is the argmax of the readout voltage, a perfect
integrator of W s[t], read with a Lava Monitor at the end of each window.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from loihi_stable.progress import progress_bar

from loihi_stable import chip_kernel as kernel
from loihi_stable.errors import UserError
from loihi_stable.io import checkpoint_from_bytes

from netx_export.export import EXTENSION_GROUP, FORMAT_VERSION

BACKENDS = ("Loihi2SimCfg", "Loihi2HwCfg")
# how DLIF's per-step voltage decay reaches Lava: inside the DLIFReset process model
# (simulator only), or set on stock LIFReset neurons from the host between steps
# (the only way on Loihi 2, whose neuron cores take one vDecay per compartment)
DLIF_SCHEDULES = ("process", "host")
FIRST_LAYER_LAG = 2  # step at which layer 0 integrates frame 0 (1-based Lava time)


@dataclass
class LayerSpec:
    weight: np.ndarray           # (out, in) even ints in [-256, 254]
    neuron: dict                 # CUBA device parameters
    dv_schedule: np.ndarray | None

    @property
    def i_decay(self) -> int:
        return int(self.neuron.get("iDecay", 4096))

    @property
    def threshold(self) -> int:
        """Voltage (chip units) the neuron must exceed to spike."""
        return kernel.threshold_units(int(self.neuron["vThMant"]))


@dataclass
class NetSpec:
    path: Path
    layers: list[LayerSpec]
    timesteps: int
    input_scale: int
    input_message_bits: int
    dataset: str
    neuron: str
    checkpoint: dict

    @property
    def in_features(self) -> int:
        return self.layers[0].weight.shape[1]


def read_netx(path: str | Path) -> NetSpec:
    """Parse and validate an exported file; any defect is a one-line UserError."""
    path = Path(path)
    fix = "re-export it with 'loihi-stable export --to netx model.pt'"
    if not path.is_file():
        raise UserError(f"network file '{path}' not found: {fix}")
    if not h5py.is_hdf5(path):
        raise UserError(f"'{path}' is not an HDF5 file: {fix}")
    try:
        with h5py.File(path, "r") as handle:
            if "layer" not in handle or EXTENSION_GROUP not in handle:
                raise UserError(f"'{path}' is HDF5 but not a loihi-stable NetX export: {fix}")
            meta = dict(handle[EXTENSION_GROUP].attrs)
            if int(meta.get("format_version", -1)) != FORMAT_VERSION:
                raise UserError(f"'{path}' has format version {meta.get('format_version')}, "
                                f"expected {FORMAT_VERSION}: {fix}")
            if str(meta.get("arch", "mlp")) != "mlp":
                raise UserError(f"'{path}' holds a convolutional network ({meta['arch']}): run, check and the chip certificate "
                                "support dense networks; load the file with lava.lib.dl.netx.hdf5.Network")
            layers = []
            for i in range(len(handle["layer"])):
                group = handle["layer"][str(i)]
                neuron = {k: group["neuron"][k][()] for k in group["neuron"] if k != "vDecaySchedule"}
                schedule = group["neuron"].get("vDecaySchedule")
                if "bias" in group:
                    raise UserError(f"'{path}' layer {i} has a bias, which run, check and the chip certificate "
                                    f"do not model: {fix}")
                if not 1 <= int(neuron.get("iDecay", 4096)) <= kernel.DECAY_UNITY:
                    raise UserError(f"'{path}' layer {i} has iDecay {neuron.get('iDecay')}, outside Lava's "
                                    f"1..{kernel.DECAY_UNITY} (du = iDecay - 1 is 12-bit): {fix}")
                layers.append(LayerSpec(np.asarray(group["weight"][()], dtype=np.int32), neuron,
                                        None if schedule is None else np.asarray(schedule[()])))
            checkpoint = checkpoint_from_bytes(handle[EXTENSION_GROUP]["checkpoint"][()].tobytes(), str(path))
    except UserError:
        raise
    except (OSError, KeyError, ValueError, TypeError) as err:
        raise UserError(f"'{path}' is damaged or truncated ({type(err).__name__}): {fix}") from None
    return NetSpec(path, layers, int(meta["timesteps"]), int(meta["input_scale"]),
                   int(meta["input_message_bits"]),
                   str(meta["dataset"]), str(meta["neuron"]), checkpoint)


def input_payload(x: np.ndarray, input_scale: int) -> np.ndarray:
    """Pixels in [0, 1] -> graded spike payloads (what the float model's quantize_input sees)."""
    return np.round(np.clip(x, 0.0, 1.0) * input_scale).astype(np.int32)


def run_config(backend: str):
    """Lava run configuration for ``backend``; a clear error where it cannot run here."""
    if backend not in BACKENDS:
        raise UserError(f"unknown backend '{backend}': choose one of {', '.join(BACKENDS)}")
    from netx_export.lava_processes.dlif import DLIFReset, PyDLIFResetModelBitAcc

    if backend == "Loihi2HwCfg":
        from lava.utils import loihi

        if not loihi.is_installed():
            raise UserError("Loihi2HwCfg needs Intel's Loihi 2 libraries (lava-loihi, available to INRC "
                            "members), which are not installed: use --backend Loihi2SimCfg")
        from lava.magma.core.run_configs import Loihi2HwCfg

        return Loihi2HwCfg()
    from lava.magma.core.run_configs import Loihi2SimCfg

    return Loihi2SimCfg(select_tag="fixed_pt",
                        exception_proc_model_map={DLIFReset: PyDLIFResetModelBitAcc})


def resolve_dlif_schedule(backend: str, dlif_schedule: str | None) -> str:
    """'process' on the simulator and 'host' on Loihi 2 unless asked otherwise."""
    if dlif_schedule is None:
        return "host" if backend == "Loihi2HwCfg" else "process"
    if dlif_schedule not in DLIF_SCHEDULES:
        raise UserError(f"unknown DLIF schedule '{dlif_schedule}': choose one of {', '.join(DLIF_SCHEDULES)}")
    if backend == "Loihi2HwCfg" and dlif_schedule == "process":
        raise UserError("the DLIFReset process has no Loihi 2 model: use --dlif-schedule host on Loihi2HwCfg")
    return dlif_schedule


def _local_step(time_step: int, offset: int, timesteps: int) -> int:
    """Position in its reset window of a layer at Lava time step ``time_step`` (1-based)."""
    return (time_step - offset) % timesteps


def _build_layers(spec: NetSpec, dlif_schedule: str = "process"):
    from lava.lib.dl.netx.blocks.process import Dense
    from lava.lib.dl.netx.utils import optimize_weight_bits
    from lava.proc.lif.process import LIFReset

    from netx_export.lava_processes.dlif import DLIFReset

    blocks = []
    for i, layer in enumerate(spec.layers):
        weight, bits, exponent, sign_mode = optimize_weight_bits(layer.weight)
        params = {"neuron_proc": LIFReset, "vth": int(layer.neuron["vThMant"]),
                  "du": int(layer.neuron["iDecay"]) - 1, "dv": int(layer.neuron["vDecay"]),
                  "bias_exp": 6, "num_message_bits": 0, "reset_interval": spec.timesteps,
                  "reset_offset": (FIRST_LAYER_LAG + i) % spec.timesteps}
        if layer.dv_schedule is not None and dlif_schedule == "process":
            params.update(neuron_proc=DLIFReset, dv_schedule=layer.dv_schedule)
        elif layer.dv_schedule is not None:  # host: start with the decay of Lava's time step 1
            params["dv"] = int(layer.dv_schedule[_local_step(1, params["reset_offset"], spec.timesteps)])
        blocks.append(Dense(shape=(weight.shape[0],), neuron_params=params, weight=weight,
                            num_weight_bits=bits, sign_mode=sign_mode,
                            weight_exponent=exponent,
                            input_message_bits=spec.input_message_bits if i == 0 else 0))
        if i:
            blocks[i - 1].out.connect(blocks[i].inp)
    return blocks


@dataclass
class ChipRun:
    """Readout voltage per sample (chip units) and, if probed, every layer's state per step."""

    readout: np.ndarray                        # (N, classes)
    spikes: list[np.ndarray] | None = None     # per spiking layer (N, neurons, T)
    voltage: list[np.ndarray] | None = None    # per spiking layer (N, neurons, T), after reset

    @property
    def predictions(self) -> np.ndarray:
        return self.readout.argmax(1)


def _sample_rows(n: int, timesteps: int, layer: int) -> np.ndarray:
    """Monitor rows (N, T) where ``layer`` integrates frame t of sample k.

    Layer l integrates frame t of sample k at 1-based step k*T + t + LAG + l; row = step - 1.
    """
    return (np.arange(n)[:, None] * timesteps + np.arange(timesteps)[None, :]
            + FIRST_LAYER_LAG + layer - 1)


def run_network(spec: NetSpec, x: np.ndarray, backend: str = "Loihi2SimCfg",
                progress: bool = True, probe_layers: bool = False,
                chunk_samples: int = 32, dlif_schedule: str | None = None) -> ChipRun:
    """Run samples ``x`` (N, features) in [0, 1] through Lava, streaming them back to back.

    With ``dlif_schedule='host'`` the network runs one step per call and each DLIF layer's
    ``dv`` is set from the host before every step (slower; what Loihi2HwCfg needs).
    """
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    dlif_schedule = resolve_dlif_schedule(backend, dlif_schedule)
    cfg = run_config(backend)
    x = np.asarray(x, dtype=np.float32).reshape(len(x), -1)
    if x.shape[1] != spec.in_features:
        raise UserError(f"inputs have {x.shape[1]} features, the network expects {spec.in_features}")
    n, steps = len(x), spec.timesteps
    depth = len(spec.layers)
    total = n * steps + depth + FIRST_LAYER_LAG
    frames = np.zeros((spec.in_features, total), dtype=np.int32)
    frames[:, : n * steps] = np.repeat(input_payload(x, spec.input_scale).T, steps, axis=1)

    blocks = _build_layers(spec, dlif_schedule)
    host_set = [(block.neuron.dv, np.asarray(layer.dv_schedule), (FIRST_LAYER_LAG + i) % steps)
                for i, (block, layer) in enumerate(zip(blocks, spec.layers))
                if layer.dv_schedule is not None and dlif_schedule == "host"]
    source = RingBuffer(data=frames)
    source.s_out.connect(blocks[0].inp)
    readout_monitor = Monitor()
    readout_monitor.probe(blocks[-1].neuron.v, total)
    layer_monitors = []
    if probe_layers:
        for block in blocks[:-1]:
            v_mon, s_mon = Monitor(), Monitor()
            v_mon.probe(block.neuron.v, total)
            s_mon.probe(block.neuron.s_out, total)
            layer_monitors.append((v_mon, s_mon))
    bar = progress_bar(total=n, desc=f"lava {backend}", unit="sample", disable=not progress)
    try:
        done = 0
        while done < total:
            step = 1 if host_set else min(chunk_samples * steps, total - done)
            source.run(condition=RunSteps(num_steps=step), run_cfg=cfg)
            done += step
            for dv, schedule, offset in host_set:  # the decay of the next time step
                dv.set(np.array([schedule[_local_step(done + 1, offset, steps)]]))
            bar.update(min(n, done // steps) - bar.n)
        readout = _monitored(readout_monitor, "v")
        traces = [(_monitored(v, "v"), _monitored(s, "s_out")) for v, s in layer_monitors]
    finally:
        bar.close()
        source.stop()
    last = _sample_rows(n, steps, depth - 1)[:, -1]
    run = ChipRun(np.asarray(readout[last], dtype=np.int64))
    if probe_layers:
        rows = [_sample_rows(n, steps, layer) for layer in range(depth - 1)]
        run.voltage = [v[r].transpose(0, 2, 1).astype(np.int64) for (v, _), r in zip(traces, rows)]
        run.spikes = [s[r].transpose(0, 2, 1).astype(np.int64) for (_, s), r in zip(traces, rows)]
    return run


def _monitored(monitor, var_name: str) -> np.ndarray:
    """(steps, neurons) array a Monitor recorded."""
    (data,) = monitor.get_data().values()
    return np.asarray(data[var_name]).reshape(len(data[var_name]), -1)
