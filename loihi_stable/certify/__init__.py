"""Certified robustness for SNNs (Liang et al., NeurIPS 2022): S-IBP, S-CROWN, on-chip certificates."""
from .intervals import Box, module_bounds
from .sibp import SpikingBounds, ibp_bounds, margin_lower_bound, spike_input_bounds
from .scrown import crown_margin_lower_bound
from .verify import certify, verified

__all__ = ["Box", "module_bounds", "SpikingBounds", "ibp_bounds", "margin_lower_bound", "spike_input_bounds",
           "crown_margin_lower_bound", "certify", "verified"]
