"""Perturbation metrics per spiking layer: MPPD / MS-MPPD, raw membrane difference, TASAD, STD."""
from .perturbation import membrane_difference, mppd, ms_mppd
from .recording import LayerRecord, record, recording
from .spike_distance import std, tasad


def layer_metrics(clean: LayerRecord, perturbed: LayerRecord, leak: float) -> dict:
    """All distances between one layer's clean and perturbed recordings (batch means)."""
    return {"ms_mppd": ms_mppd(clean.current, perturbed.current, leak).item(),
            "membrane_ms": membrane_difference(clean.voltage, perturbed.voltage).item(),
            "tasad": tasad(clean.spike, perturbed.spike).item(),
            "std": std(clean.spike, perturbed.spike).item()}


__all__ = ["LayerRecord", "layer_metrics", "membrane_difference", "mppd", "ms_mppd", "record",
           "recording", "std", "tasad"]
