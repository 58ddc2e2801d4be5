"""Opt-in recordings of every spiking layer's input current, membrane potential and spikes.

Neurons only keep these while recording is switched on, so an unrecorded forward
pass does no extra work.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass
class LayerRecord:
    current: torch.Tensor  # (B, N, T) synaptic input I[t]
    voltage: torch.Tensor  # (B, N, T) membrane potential v[t] before reset
    spike: torch.Tensor    # (B, N, T)


@contextlib.contextmanager
def recording(model):
    model.set_recording(True)
    try:
        yield
    finally:
        model.set_recording(False)


@torch.no_grad()
def record(model, x: torch.Tensor) -> tuple[torch.Tensor, list[LayerRecord]]:
    """Mean logits and per-layer records for inputs ``x``, in eval mode."""
    was_training = model.training
    model.eval()
    with recording(model):
        logits = model(x)
        layers = [LayerRecord(**{k: n.recording[k] for k in ("current", "voltage", "spike")})
                  for n in model.spiking_neurons]
    model.train(was_training)
    return logits, layers
