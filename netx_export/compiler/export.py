"""A trained checkpoint -> the chip's integers (``NetSpec``) -> a NetX HDF5 file stock NetX loads.

The file's layout and input encoding are ``netx_file``'s; here the model is quantized:
dense networks as they were trained (QAT on the chip's grids), conv networks after folding
(``folding``).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from loihi_stable import fixed_point as fx
from loihi_stable.blocks import READOUT_NEURON
from loihi_stable.errors import UserError
from loihi_stable.io import load_checkpoint
from loihi_stable.models import ModelConfig, SpikingClassifier, build_model
from netx_export.fileformat.netx_file import LayerSpec, NetSpec, write_netx_file


def model_from_checkpoint(payload: dict) -> SpikingClassifier:
    """The checkpoint's network, after checking its config, the shape of every weight and that all are finite."""
    fix = "retrain it with 'loihi-stable train' (or pass the checkpoint it wrote)"
    try:
        config = ModelConfig.from_dict(payload.get("model_config"))
    except (TypeError, ValueError) as err:
        raise UserError(f"the checkpoint's model_config is invalid ({err}): {fix}") from None
    state = payload.get("state_dict")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"the checkpoint has no state_dict of tensors: {fix}")
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise UserError(f"the checkpoint's '{bad}' holds NaN or infinite values, which no chip format can hold: {fix}")
    try:
        model = build_model(config)
    except (ValueError, UserError) as err:
        raise UserError(f"the checkpoint's model_config is invalid ({err}): {fix}") from None
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = next((line.strip() for line in str(err).splitlines()[1:] if line.strip()), str(err))
        raise UserError(f"the checkpoint's weights do not fit its model_config ({first.rstrip('.')}): {fix}") from None
    model.eval()
    return model


def check_spec_matches(spec: NetSpec, model, checkpoint: dict) -> None:
    """The file's layers must be the export of ``model``: a file edited after export (or paired with
    another checkpoint) would otherwise be run and certified under the wrong name."""
    expected = chip_spec(model, checkpoint)
    fix = "re-export it from the checkpoint with 'loihi-stable export --to netx model.pt'"
    if len(expected.layers) != len(spec.layers) or spec.timesteps != expected.timesteps:
        raise UserError(f"'{spec.path}' has {len(spec.layers)} layers and T={spec.timesteps}, its checkpoint exports to "
                        f"{len(expected.layers)} layers and T={expected.timesteps}: {fix}")
    for i, (got, want) in enumerate(zip(spec.layers, expected.layers)):
        same = (got.kind == want.kind and np.array_equal(got.weight, want.weight)
                and np.array_equal(_or_empty(got.bias), _or_empty(want.bias))
                and np.array_equal(_or_empty(got.dv_schedule)[:spec.timesteps], _or_empty(want.dv_schedule)[:spec.timesteps])
                and (got.neuron.vth_mant, got.neuron.v_decay, got.i_decay)
                == (want.neuron.vth_mant, want.neuron.v_decay, want.i_decay))
        if not same:
            raise UserError(f"'{spec.path}' layer {i} differs from what its checkpoint exports to (edited after export, "
                            f"or a checkpoint of another network): {fix}")


def _or_empty(values) -> np.ndarray:
    return np.zeros(0, dtype=np.int64) if values is None else np.asarray(values)


def _dense_layer(synapse, neuron, schedule=None) -> LayerSpec:
    weight = fx.quantize_weight(synapse.weight, descale=True).detach()
    weight = weight.reshape(weight.shape[0], -1).cpu().numpy().round().astype(np.int64)
    return LayerSpec(weight, neuron, schedule, out_shape=(weight.shape[0],))


def chip_spec(model, checkpoint: dict) -> NetSpec:
    """What Loihi gets: every layer in chip integers, plus the input encoding."""
    model.eval()
    config = model.config
    if config.dlif_form != "leak":
        raise UserError("an input-form DLIF (v = lambda*u + p[t]*I[t], the authors' code) has no Loihi equivalent: a "
                        "CUBA neuron's weights and threshold are the same at every step; train with --dlif-form leak "
                        "(or --neuron lif) to deploy")
    if config.arch == "mlp":
        layers = [_dense_layer(block.synapse, block.neuron.cuba_neuron(), block.neuron.chip_schedule())
                  for block in model.blocks]
        layers.append(_dense_layer(model.readout.synapse, READOUT_NEURON))
        input_shape, bias_channel = (), False
    else:
        from netx_export.compiler.folding import chip_layers, fold_model

        layers = chip_layers(fold_model(model))
        c, h, w = config.input_shape
        input_shape, bias_channel = (c + 1, h, w), True
    train_config = checkpoint.get("train_config") or {}
    return NetSpec(None, layers, config.timesteps, fx.INPUT_SCALE, fx.INPUT_MESSAGE_BITS,
                   str(train_config.get("dataset", "digits")), config.neuron, checkpoint, config.arch,
                   input_shape, bias_channel)


def spec_for(model, checkpoint: dict, network: str | Path | None) -> NetSpec:
    """The NetX file given (checked to hold this checkpoint's network), or the checkpoint exported on the fly."""
    import tempfile

    from netx_export.fileformat.netx_file import read_netx

    if network is None:
        with tempfile.TemporaryDirectory() as folder:
            write_netx(model, checkpoint, Path(folder) / "model.net")
            return read_netx(Path(folder) / "model.net")
    spec = read_netx(network)
    check_spec_matches(spec, model, checkpoint)
    return spec


def write_netx(model, checkpoint: dict, path: str | Path) -> NetSpec:
    """Atomically write ``model`` (and ``checkpoint`` for provenance) to ``path``."""
    spec = chip_spec(model, checkpoint)
    write_netx_file(spec, path)
    return spec


CHECK_CHUNK = 32  # test samples per step of the export checks (memory of a VGG11 forward at 32x32)


def export_checkpoint(checkpoint_path: str | Path, out_path: str | Path, check_samples: int = 256,
                      data_root: str | Path | None = None, progress: bool = False) -> dict:
    """Export, and measure what the file changes. Conv networks: what folding and 8-bit
    quantization changed (needs the test set). DLIF networks: how far stock NetX, which reads one
    averaged vDecay per layer, strays from the per-step schedule ``run`` uses (if the test set is
    at hand). The test data is read before anything is written, so a failure leaves no file."""
    from loihi_stable import threads
    from loihi_stable.data import checkpoint_test_split

    payload = load_checkpoint(checkpoint_path)
    model = model_from_checkpoint(payload)
    threads.configure(model.config.arch)
    report: dict = {}
    test = None
    if model.config.arch != "mlp":
        test = checkpoint_test_split(payload, data_root, limit=check_samples)
    elif model.config.neuron == "dlif":
        try:
            test = checkpoint_test_split(payload, data_root)
        except UserError as err:
            report["stock_netx"] = {"unmeasured": str(err)}
    spec = write_netx(model, payload, out_path)
    if test is None:
        return report
    if model.config.arch == "mlp":  # dense DLIF
        report["stock_netx"] = stock_netx_agreement(out_path, test)
        return report
    report.update(folding_checks(model, spec, test.x, test.y, progress))
    return report


def folding_checks(model, spec: NetSpec, x: torch.Tensor, y: torch.Tensor, progress: bool = False) -> dict:
    """What folding and 8-bit quantization changed on samples ``x`` (and, for DLIF, what stock NetX's
    averaged decay changes), chunk by chunk with one progress bar: {"folding": ..., ["stock_netx": ...]}."""
    from loihi_stable.progress import progress_bar
    from netx_export.runtime.emulator import Emulator
    from netx_export.compiler.folding import fold_model, run_folded

    layers = fold_model(model)
    stock = stock_reading(spec) if model.config.neuron == "dlif" else None
    chips = {"run": Emulator(spec), "stock": None if stock is None else Emulator(stock)}
    predictions: dict[str, list] = {"model": [], "folded": [], "run": [], "stock": []}
    with progress_bar(total=len(x), desc="export checks", unit="sample", disable=not progress) as bar:
        for start in range(0, len(x), CHECK_CHUNK):  # the model, its folded layers and the file's integers
            chunk = x[start:start + CHECK_CHUNK]
            with torch.no_grad():
                predictions["model"].append(model(chunk).argmax(1))
            predictions["folded"].append(run_folded(layers, chunk.reshape(-1, *model.config.input_shape),
                                                    model.config.timesteps).argmax(1))
            for name, chip in chips.items():
                if chip is not None:
                    predictions[name].append(torch.from_numpy(chip(chunk.numpy()).predictions))
            bar.update(len(chunk))
    reference, folded, quantized = (torch.cat(predictions[k]) for k in ("model", "folded", "run"))
    report = {"folding": {"layers": len(layers), "n": len(x),
                          "folded_agreement": float((folded == reference).float().mean()),
                          "quantized_agreement": float((quantized == reference).float().mean()),
                          "model_accuracy": float((reference == y).float().mean()),
                          "quantized_accuracy": float((quantized == y).float().mean())}}
    if stock is not None:
        report["stock_netx"] = _agreement(quantized.numpy(), torch.cat(predictions["stock"]).numpy(), y.numpy())
    return report


def stock_reading(spec):
    """The file as stock NetX reads it: one averaged vDecay per layer, no per-step schedule."""
    import copy

    stock = copy.copy(spec)
    stock.layers = [copy.copy(layer) for layer in spec.layers]
    for layer in stock.layers:
        layer.dv_schedule = None
    return stock


def _agreement(ours: np.ndarray, theirs: np.ndarray, y: np.ndarray) -> dict:
    return {"n": len(y), "agreement": float((ours == theirs).mean()),
            "accuracy_run": float((ours == y).mean()), "accuracy_stock_netx": float((theirs == y).mean())}


def stock_netx_agreement(path: str | Path, test) -> dict:
    """Predictions of the file as ``run`` executes it (per-step vDecay schedule) against stock
    NetX's reading (one averaged vDecay per layer), both on the bit-exact emulator."""
    from netx_export.runtime.emulator import emulate
    from netx_export.fileformat.netx_file import read_netx

    spec = read_netx(path)
    x = test.x.reshape(len(test), -1).numpy()
    return _agreement(emulate(spec, x).predictions, emulate(stock_reading(spec), x).predictions, test.y.numpy())
