"""Does robustness survive the trip onto the chip? Float twin vs deployed network, layer by layer.

For clean and attacked inputs it records every spiking layer's input current per time
step in the plain-float twin of the model and on the chip (emulator or Lava, whose
spikes give the chip's currents exactly), and compares the membrane potential
perturbation dynamics: MS-MPPD float vs chip, their ratio, the correlation of the
eps[t] traces, spike agreement, and the accuracy gap. Layers whose ratio exceeds a
threshold amplify the perturbation on the chip and are flagged.
"""
from __future__ import annotations

import numpy as np
import torch

from loihi_stable import chip_kernel as kernel, sharding
from loihi_stable.evaluation import CRAFT_BATCH
from loihi_stable.metrics import LayerRecord, mppd, record
from netx_export.runtime.backends import run_on
from netx_export.analysis.chip_model import grid_model
from netx_export.analysis.deploy import craft
from netx_export.runtime.emulator import ExactArithmetic
from netx_export.fileformat.netx_file import ChipRun, NetSpec, encode_inputs


def chip_currents(spec: NetSpec, x: np.ndarray, run: ChipRun, thresholds: list[float]) -> list[torch.Tensor]:
    """Each spiking layer's synaptic current I[t] on the chip (B, neurons, T), in the float model's
    units: chip units over the layer's chip threshold, times its float ``thresholds`` (this undoes
    the first layer's finer grid and the scale folding gave each conv layer)."""
    steps, n = spec.timesteps, len(x)
    arithmetic = ExactArithmetic(spec)
    signal = torch.from_numpy(encode_inputs(spec, x))
    first = kernel.activation_current(arithmetic.synaptic_sum(0, spec.layers[0], signal)).flatten(1)
    raw = [first[..., None].expand(-1, -1, steps)]
    for i, (layer, previous, spikes) in enumerate(zip(spec.layers[1:-1], spec.layers, run.spikes[:-1]), 1):
        rows = torch.from_numpy(spikes).permute(2, 0, 1).reshape(steps * n, *previous.out_shape)  # time-major
        current = kernel.activation_current(arithmetic.synaptic_sum(i, layer, rows))
        raw.append(current.reshape(steps, n, -1).permute(1, 2, 0))
    return [c.double() / layer.threshold * th for c, layer, th in zip(raw, spec.layers, thresholds)]


def _on_cpu(logits: torch.Tensor, layers: list[LayerRecord]) -> tuple[torch.Tensor, list[LayerRecord]]:
    return logits.cpu(), [LayerRecord(**{k: getattr(r, k).cpu() for k in ("current", "voltage", "spike")})
                          for r in layers]


def _on_chip(spec: NetSpec, parts: list[dict], backend: str, progress: bool) -> list[dict]:
    """This process's batches (each its clean samples, then its attacked ones) in one chip run with probes,
    handed back per batch, and (off the emulator) whether the emulator reproduces every probed value."""
    inputs = [torch.cat([p["x"], p["adv"]]).numpy() for p in parts]
    both = np.concatenate(inputs)
    run = run_on(spec, both, backend, progress=progress, probe_layers=True)
    matches = None
    if backend != "emulator":
        from netx_export.runtime.emulator import emulate

        emu = emulate(spec, both, probe_layers=True)
        matches = bool(np.array_equal(emu.readout, run.readout)
                       and all(np.array_equal(a, b) for a, b in zip(emu.spikes, run.spikes))
                       and all(np.array_equal(a, b) for a, b in zip(emu.voltage, run.voltage)))
    return [{"adv": p["adv"], "run": r, "emulator_matches_chip": matches}
            for p, r in zip(parts, run.split([len(i) for i in inputs]))]


def _clean_then_attacked(parts: list[dict]) -> ChipRun:
    """The batches' chip runs (each its clean samples, then its attacked ones) as one run over all clean
    samples, then all attacked ones."""
    def joined(arrays: list[np.ndarray], sizes: list[int]) -> np.ndarray:
        return np.concatenate([a[:k] for a, k in zip(arrays, sizes)] + [a[k:] for a, k in zip(arrays, sizes)])

    sizes = [len(p["adv"]) for p in parts]
    runs = [p["run"] for p in parts]
    return ChipRun(readout=joined([r.readout for r in runs], sizes),
                   spikes=[joined(list(layer), sizes) for layer in zip(*(r.spikes for r in runs))],
                   voltage=[joined(list(layer), sizes) for layer in zip(*(r.voltage for r in runs))])


def check(model, spec: NetSpec, x: torch.Tensor, y: torch.Tensor, attack: str = "pgd", eps: float = 8 / 255,
          backend: str = "emulator", ratio_threshold: float = 1.5, progress: bool = True,
          device: str | torch.device = "cpu", batch_size: int = CRAFT_BATCH) -> dict:
    """The float model and the attack run on ``device`` (moved there); the chip and the comparison on the CPU.
    Crafting goes batch by batch, shared out under torchrun (``sharding``); each process runs all its batches
    on the chip at once (one Lava start); the metrics are computed over all samples, as one process computes them."""
    model = model.to(device)
    grid = grid_model(spec, model).to(device)
    progress = progress and sharding.is_main()
    parts = sharding.map_batches(
        len(x), batch_size,
        lambda batch: {"x": x[batch], "adv": craft(grid, attack, x[batch], y[batch], eps, "chip-aware",
                                                   batch_size=max(len(x[batch]), 1))},
        then=lambda mine: _on_chip(spec, mine, backend, progress))
    adv = torch.cat([p["adv"] for p in parts])
    run = _clean_then_attacked(parts)
    leak = model.config.leak
    with model.arithmetic("float"):
        float_logits, float_layers = zip(*(_on_cpu(*record(model, inputs.to(device))) for inputs in (x, adv)))
    both = torch.cat([x, adv]).numpy()
    result: dict = {"backend": backend, "attack": attack, "eps": eps, "eps_255": round(eps * 255, 4),
                    "n": len(x), "ratio_threshold": ratio_threshold}
    if backend != "emulator":
        result["emulator_matches_chip"] = all(p["emulator_matches_chip"] for p in parts)
    currents = chip_currents(spec, both, run, [neuron.threshold for neuron in model.spiking_neurons])
    n = len(x)
    layers, traces = [], {}
    for i, (f_clean, f_adv, chip) in enumerate(zip(*float_layers, currents)):
        eps_float = mppd(f_clean.current.double().flatten(1, -2), f_adv.current.double().flatten(1, -2), leak)
        eps_chip = mppd(chip[:n], chip[n:], leak)
        ms_float, ms_chip = eps_float.pow(2).mean().item(), eps_chip.pow(2).mean().item()
        ratio = ms_chip / ms_float if ms_float > 0 else (1.0 if ms_chip == 0 else float("inf"))
        correlation = float(np.corrcoef(eps_float.flatten().numpy(), eps_chip.flatten().numpy())[0, 1]) \
            if eps_float.std() > 0 and eps_chip.std() > 0 else float("nan")
        chip_spikes = np.concatenate([run.spikes[i][:n], run.spikes[i][n:]])
        float_spikes = torch.cat([f_clean.spike, f_adv.spike]).flatten(1, -2).numpy()
        layers.append({"layer": i + 1, "ms_mppd_float": ms_float, "ms_mppd_chip": ms_chip, "ratio": ratio,
                       "correlation": correlation, "spike_agreement": float(np.mean(chip_spikes == float_spikes)),
                       "amplified": bool(ratio > ratio_threshold)})
        traces[i + 1] = {"float": eps_float[0].numpy(), "chip": eps_chip[0].numpy()}
    labels = y.numpy()
    preds_chip = run.predictions
    acc = {"float_clean": float((float_logits[0].argmax(1) == y).float().mean()),
           "float_adv": float((float_logits[1].argmax(1) == y).float().mean()),
           "chip_clean": float(np.mean(preds_chip[:n] == labels)),
           "chip_adv": float(np.mean(preds_chip[n:] == labels))}
    acc["gap_clean"] = acc["chip_clean"] - acc["float_clean"]
    acc["gap_adv"] = acc["chip_adv"] - acc["float_adv"]
    result.update(layers=layers, accuracy=acc, robust=acc["chip_adv"], amplified_layers=[l["layer"] for l in layers if l["amplified"]])
    result["_traces"] = traces
    return result


def plot_check(result: dict, path, neurons: int = 3, title: str = "") -> None:
    """Figure-1-style eps[t] traces (float solid, chip dashed) and per-layer MS-MPPD bars."""
    from loihi_stable.plots import drawing

    drawing(_plot_check)(result, path, neurons, title)


def _plot_check(result: dict, path, neurons: int, title: str) -> None:
    from loihi_stable.plots import panels, save_figure

    last = max(result["_traces"])
    trace = result["_traces"][last]
    strongest = np.argsort(-np.abs(trace["float"]).sum(-1))[:neurons]
    fig, (ax_t, ax_b) = panels(2, (12, 4))
    steps = np.arange(1, trace["float"].shape[-1] + 1)
    for k, neuron in enumerate(strongest):
        color = f"C{k}"
        ax_t.plot(steps, trace["float"][neuron], "-o", color=color, label=f"neuron {neuron} float")
        ax_t.plot(steps, trace["chip"][neuron], "--x", color=color, label=f"neuron {neuron} chip")
    ax_t.set_xlabel("time step t")
    ax_t.set_ylabel("eps[t]")
    ax_t.set_title(f"perturbation dynamics, layer {last}, sample 0")
    ax_t.legend(fontsize=7)
    layers = result["layers"]
    xs = np.arange(len(layers))
    ax_b.bar(xs - 0.2, [l["ms_mppd_float"] for l in layers], 0.4, label="float")
    ax_b.bar(xs + 0.2, [l["ms_mppd_chip"] for l in layers], 0.4, label="chip",
             color=["#c44e52" if l["amplified"] else "#dd8452" for l in layers])
    ax_b.set_xticks(xs, [f"layer {l['layer']}" for l in layers])
    ax_b.set_ylabel("MS-MPPD")
    ax_b.set_title("float vs chip (red: amplified)")
    ax_b.legend()
    fig.suptitle(title)
    save_figure(fig, path)
