"""Write a trained checkpoint as a NetX HDF5 network that stock ``netx.hdf5.Network`` loads.

Format (stock NetX keys, plus an extension stock NetX ignores):
  layer/<i>/{type, shape, inFeatures, outFeatures, weight, neuron/{type=CUBA, iDecay,
      vDecay, vThMant, refDelay, gradedSpike}}      -- written by slayer's block export
  layer/<i>/neuron/vDecaySchedule  (DLIF only)        -- dv per time step, int32 [T]
  loihi_stable/  attrs: format_version, timesteps, input_scale (graded pixel = round(64 x)),
      input_message_bits, input_weight_exp (first synapse right-shifts by 6), dataset,
      neuron; dataset ``checkpoint``: the source checkpoint, so the file is self-contained.
"""
from __future__ import annotations

import io
from pathlib import Path

import h5py
import numpy as np
import torch

from loihi_stable import fixed_point as fx
from loihi_stable.io import atomic_path, load_checkpoint
from loihi_stable.models import ModelConfig, SpikingMLP, build_model

FORMAT_VERSION = 1
EXTENSION_GROUP = "loihi_stable"


def model_from_checkpoint(payload: dict) -> SpikingMLP:
    model = build_model(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model


def write_netx(model: SpikingMLP, checkpoint: dict, path: str | Path) -> None:
    """Atomically write ``model`` (and ``checkpoint`` for provenance) to ``path``."""
    model.eval()
    with torch.no_grad():  # slayer's export needs one forward pass to fix shapes
        model(torch.zeros(1, model.config.in_features))
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            layers = handle.create_group("layer")
            for i, block in enumerate(model.blocks):
                block.export_hdf5(layers.create_group(str(i)))
            model.readout.export_hdf5(layers.create_group(str(len(model.blocks))))
            meta = handle.create_group(EXTENSION_GROUP)
            meta.attrs.update({
                "format_version": FORMAT_VERSION,
                "timesteps": model.config.timesteps,
                "input_scale": fx.INPUT_SCALE,
                "input_message_bits": fx.INPUT_MESSAGE_BITS,
                "input_weight_exp": fx.INPUT_WEIGHT_EXP,
                "neuron": model.config.neuron,
                "dataset": checkpoint.get("train_config", {}).get("dataset", "digits"),
            })
            meta.create_dataset("checkpoint", data=np.void(buffer.getvalue()))


def export_checkpoint(checkpoint_path: str | Path, out_path: str | Path) -> None:
    payload = load_checkpoint(checkpoint_path)
    write_netx(model_from_checkpoint(payload), payload, out_path)
