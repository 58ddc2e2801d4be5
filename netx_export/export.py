"""Write a trained checkpoint as a NetX HDF5 network that stock ``netx.hdf5.Network`` loads.

Format (stock NetX keys, plus an extension stock NetX ignores):
  layer/<i>/{type, shape, inFeatures, outFeatures, weight, neuron/{type=CUBA, iDecay,
      vDecay, vThMant, refDelay, gradedSpike}}      -- written by slayer's block export
  layer/<i>/neuron/vDecaySchedule  (DLIF only)        -- dv per time step, int32 [T]
  loihi_stable/  attrs: format_version, timesteps, input_scale (graded pixel = round(64 x)),
      input_message_bits, dataset, neuron; dataset ``checkpoint``: the source checkpoint,
      so the file is self-contained.
The first layer computes W p on graded payloads p = round(64 x) without any shift (its
threshold and state are 64 times finer instead), so stock NetX, which derives every weight
exponent from the weights, computes exactly what ``run`` does.
"""
from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import torch

from loihi_stable import fixed_point as fx
from loihi_stable.io import atomic_path, load_checkpoint
from loihi_stable.blocks import READOUT_NEURON
from loihi_stable.models import ModelConfig, SpikingMLP, build_model

FORMAT_VERSION = 2  # 2: no first-layer input exponent (stock NetX runs the file as is)
EXTENSION_GROUP = "loihi_stable"


def model_from_checkpoint(payload: dict) -> SpikingMLP:
    model = build_model(ModelConfig.from_dict(payload["model_config"]))
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError:
        from loihi_stable.errors import UserError
        raise UserError(f"the checkpoint's weights do not fit a {model.config.arch} network of this loihi-stable "
                        "version (written by another version?): retrain it with 'loihi-stable train'") from None
    model.eval()
    return model


def _neuron_arrays(neuron, scale: float) -> dict:
    params = dict(neuron.device_params)
    params["vThMant"] = int(neuron.threshold * scale * fx.WEIGHT_SCALE)
    return params


def _write_meta(handle, model, checkpoint: dict) -> None:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    meta = handle.create_group(EXTENSION_GROUP)
    meta.attrs.update({
        "format_version": FORMAT_VERSION,
        "timesteps": model.config.timesteps,
        "input_scale": fx.INPUT_SCALE,
        "input_message_bits": fx.INPUT_MESSAGE_BITS,
        "neuron": model.config.neuron,
        "arch": model.config.arch,
        "dataset": checkpoint.get("train_config", {}).get("dataset", "digits"),
    })
    meta.create_dataset("checkpoint", data=np.void(buffer.getvalue()))


def write_conv_netx(model, checkpoint: dict, path: str | Path) -> list:
    """A conv SNN with normalisation, BatchNorm and pooling folded away (see ``folding``)."""
    from netx_export.folding import fold_model, layer_arrays

    layers = fold_model(model)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            group = handle.create_group("layer")
            entries = [{"type": [b"input"], "shape": np.array(model.config.input_shape)}]
            for i, layer in enumerate(layers):
                if layer.kind == "dense" and (i == 0 or layers[i - 1].kind == "conv"):
                    entries.append({"type": [b"flatten"]})
                arrays = layer_arrays(layer)
                neuron = _neuron_arrays(layer.neuron, layer.scale) if layer.neuron is not None else READOUT_NEURON
                entries.append({**arrays, **{f"neuron/{k}": v for k, v in neuron.items()}})
            for i, entry in enumerate(entries):
                sub = group.create_group(str(i))
                for key, value in entry.items():
                    if key == "type":
                        sub.create_dataset("type", (1,), "S10", value)
                    else:
                        sub.create_dataset(key, data=value)
            _write_meta(handle, model, checkpoint)
    return layers


def write_netx(model: SpikingMLP, checkpoint: dict, path: str | Path) -> None:
    """Atomically write ``model`` (and ``checkpoint`` for provenance) to ``path``."""
    model.eval()
    if getattr(model.config, "arch", "mlp") != "mlp":
        write_conv_netx(model, checkpoint, path)
        return
    with torch.no_grad():  # slayer's export needs one forward pass to fix shapes
        model(torch.zeros(1, model.config.in_features))
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            layers = handle.create_group("layer")
            for i, block in enumerate(model.blocks):
                block.export_hdf5(layers.create_group(str(i)))
            model.readout.export_hdf5(layers.create_group(str(len(model.blocks))))
            _write_meta(handle, model, checkpoint)


def export_checkpoint(checkpoint_path: str | Path, out_path: str | Path, check_samples: int = 256,
                      data_root: str | Path | None = None) -> dict:
    """Export, and measure what the file changes. Conv networks: what folding and 8-bit
    quantization changed (needs the test set). DLIF networks: how far stock NetX, which reads one
    averaged vDecay per layer, strays from the per-step schedule ``run`` uses (if the test set is
    at hand). The test data is read before anything is written, so a failure leaves no file."""
    from loihi_stable.data import checkpoint_test_split
    from loihi_stable.errors import UserError

    payload = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(payload)
    report: dict = {}
    test = None
    if model.config.arch != "mlp":
        test = checkpoint_test_split(payload, data_root, limit=check_samples)
    elif model.config.neuron == "dlif":
        try:
            test = checkpoint_test_split(payload, data_root)
        except UserError as err:
            report["stock_netx"] = {"unmeasured": str(err)}
    write_netx(model, payload, out_path)
    if test is None:
        return report
    if model.config.arch == "mlp":
        report["stock_netx"] = stock_netx_agreement(out_path, test)
        return report
    from netx_export.folding import fold_model, run_folded

    x = test.x.reshape(-1, *model.config.input_shape)
    layers = fold_model(model)
    with torch.no_grad():
        reference = model(test.x).argmax(1)
    folded = run_folded(layers, x, model.config.timesteps).argmax(1)
    quantized = run_folded(layers, x, model.config.timesteps, quantized=True).argmax(1)
    report["folding"] = {"layers": len(layers), "n": len(test),
                         "folded_agreement": float((folded == reference).float().mean()),
                         "quantized_agreement": float((quantized == reference).float().mean()),
                         "model_accuracy": float((reference == test.y).float().mean()),
                         "quantized_accuracy": float((quantized == test.y).float().mean())}
    return report


def stock_netx_agreement(path: str | Path, test) -> dict:
    """Predictions of the file as ``run`` executes it (per-step vDecay schedule) against stock
    NetX's reading (one averaged vDecay per layer), both on the bit-exact emulator."""
    import copy

    from netx_export.emulator import emulate
    from netx_export.lava_runner import read_netx

    spec = read_netx(path)
    stock = copy.copy(spec)
    stock.layers = [copy.copy(layer) for layer in spec.layers]
    for layer in stock.layers:
        layer.dv_schedule = None
    x, y = test.x.reshape(len(test), -1).numpy(), test.y.numpy()
    ours, theirs = emulate(spec, x).predictions, emulate(stock, x).predictions
    return {"n": len(test), "agreement": float((ours == theirs).mean()),
            "accuracy_run": float((ours == y).mean()), "accuracy_stock_netx": float((theirs == y).mean())}
