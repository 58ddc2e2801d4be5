"""Build a Lava network from an exported HDF5 file and run it on Loihi2SimCfg (or Loihi 2).

Inputs reach the chip as graded spikes carrying round(64*pixel); the first layer sums
W p unshifted on a 64-times finer state grid, so its current equals the float model's.
Samples stream back to back: each layer resets at the start of its own window of
T steps (layer l lags the input by l+2 steps), so no flush steps are needed
between samples. The prediction is the argmax of the readout voltage, a perfect
integrator of W s[t], read with a Lava Monitor at the end of each window.
"""
from __future__ import annotations


import numpy as np

from loihi_stable import guards
from loihi_stable import chip_kernel as kernel
from loihi_stable.errors import UserError
from loihi_stable.progress import progress_bar
from netx_export.runtime.lava_session import run_in_own_group
from netx_export.fileformat.netx_file import ChipRun, NetSpec, encode_inputs

BACKENDS = ("Loihi2SimCfg", "Loihi2HwCfg")
# how DLIF's per-step voltage decay reaches Lava: inside the DLIFReset process model
# (simulator only), or set on stock LIFReset neurons from the host between steps
# (the only way on Loihi 2, whose neuron cores take one vDecay per compartment)
DLIF_SCHEDULES = ("process", "host")
FIRST_LAYER_LAG = 2  # step at which layer 0 integrates frame 0 (1-based Lava time)


def run_config(backend: str):
    """Lava run configuration for ``backend``; a clear error where it cannot run here."""
    guards.choice("backend", backend, BACKENDS)
    from netx_export.runtime.lava_processes.dlif import DLIFReset, PyDLIFResetModelBitAcc

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
    guards.choice("DLIF schedule", dlif_schedule, DLIF_SCHEDULES)
    if backend == "Loihi2HwCfg" and dlif_schedule == "process":
        raise UserError("the DLIFReset process has no Loihi 2 model: use --dlif-schedule host on Loihi2HwCfg")
    return dlif_schedule


def _local_step(time_step: int, offset: int, timesteps: int) -> int:
    """Position in its reset window of a layer at Lava time step ``time_step`` (1-based)."""
    return (time_step - offset) % timesteps


def _xyz(shape) -> tuple:
    """(C, H, W) -> Lava's (X, Y, Z) = (W, H, C)."""
    return tuple(int(v) for v in shape[::-1])


def _build_layers(spec: NetSpec, dlif_schedule: str = "process"):
    """Stock NetX blocks (Dense, Conv) with the neuron NetX would give them, made as NetX's
    ``hdf5.Network`` makes them; only DLIF layers get the DLIFReset process (or host-set dv)."""
    from lava.lib.dl.netx.blocks.process import Conv, Dense
    from lava.lib.dl.netx.utils import optimize_weight_bits
    from lava.proc.lif.process import LIFReset

    from netx_export.runtime.lava_processes.dlif import DLIFReset

    blocks, shape = [], spec.input_shape
    for i, layer in enumerate(spec.layers):
        params = {"neuron_proc": LIFReset, "bias_key": "bias_mant", "vth": layer.neuron.vth_mant,
                  "du": layer.i_decay - 1, "dv": layer.neuron.v_decay,
                  "bias_exp": kernel.BIAS_SHIFT, "num_message_bits": 0, "reset_interval": spec.timesteps,
                  "reset_offset": (FIRST_LAYER_LAG + i) % spec.timesteps}
        if layer.dv_schedule is not None and dlif_schedule == "process":
            params.update(neuron_proc=DLIFReset, dv_schedule=layer.dv_schedule[:spec.timesteps])
        elif layer.dv_schedule is not None:  # host: start with the decay of Lava's time step 1
            params["dv"] = int(layer.dv_schedule[_local_step(1, params["reset_offset"], spec.timesteps)])
        message_bits = spec.input_message_bits if i == 0 else 0
        extra = {} if layer.bias is None else {"bias": layer.bias}
        if layer.kind == "conv":  # NetX's create_conv: Lava convolves (flipped kernel), in XYZ order
            weight = layer.weight[:, :, ::-1, ::-1].transpose((0, 3, 2, 1))
            block = Conv(shape=_xyz(layer.out_shape), input_shape=_xyz(shape), neuron_params=params,
                         weight=np.ascontiguousarray(weight), stride=np.array([layer.stride] * 2),
                         padding=np.array([layer.padding] * 2), dilation=np.array([1, 1]), groups=1,
                         input_message_bits=message_bits, **extra)
        else:
            weight, bits, exponent, sign_mode = optimize_weight_bits(layer.weight)
            block = Dense(shape=(weight.shape[0],), neuron_params=params, weight=weight, num_weight_bits=bits,
                          sign_mode=sign_mode, weight_exponent=exponent, input_message_bits=message_bits, **extra)
        if i and spec.layers[i - 1].kind == "conv" and layer.kind == "dense":
            blocks[-1].out.transpose([2, 1, 0]).flatten().connect(block.inp)
        elif i:
            blocks[-1].out.connect(block.inp)
        blocks.append(block)
        shape = layer.out_shape
    return blocks


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
    ``dv`` is set from the host before every step (slower; what Loihi2HwCfg needs). Lava runs in
    a process group of its own (``lava_session``), so Ctrl-C stops it and its workers at once.
    """
    dlif_schedule = resolve_dlif_schedule(backend, dlif_schedule)
    run_config(backend)  # a missing library is a one-line error before anything is forked
    return run_in_own_group(_run_network, spec, x, backend, progress, probe_layers, chunk_samples,
                            dlif_schedule)


def _run_network(spec: NetSpec, x: np.ndarray, backend: str, progress: bool, probe_layers: bool,
                 chunk_samples: int, dlif_schedule: str) -> ChipRun:
    from lava.magma.core.run_conditions import RunSteps
    from lava.proc.io.source import RingBuffer
    from lava.proc.monitor.process import Monitor

    cfg = run_config(backend)
    payload = encode_inputs(spec, x)
    n, steps = len(payload), spec.timesteps
    depth = len(spec.layers)
    total = n * steps + depth + FIRST_LAYER_LAG
    payload = payload.transpose(0, 3, 2, 1) if payload.ndim == 4 else payload  # Lava's (X, Y, Z)
    frames = np.zeros((*payload.shape[1:], total), dtype=np.int32)
    frames[..., : n * steps] = np.repeat(np.moveaxis(payload, 0, -1), steps, axis=-1)

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
        traces = [(_monitored(v, "v", layer.out_shape), _monitored(s, "s_out", layer.out_shape))
                  for (v, s), layer in zip(layer_monitors, spec.layers)]
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


def _monitored(monitor, var_name: str, shape: tuple = ()) -> np.ndarray:
    """(steps, neurons) array a Monitor recorded, neurons in (C, H, W) order for conv layers."""
    (data,) = monitor.get_data().values()
    values = np.asarray(data[var_name])
    if len(shape) == 3:  # Lava records (X, Y, Z) = (W, H, C)
        return values.reshape(len(values), *_xyz(shape)).transpose(0, 3, 2, 1).reshape(len(values), -1)
    return values.reshape(len(values), -1)
