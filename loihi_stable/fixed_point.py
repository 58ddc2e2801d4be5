"""Loihi 2 fixed-point formats, shared by the float model and the exporter.

The float model computes on the same grids the chip uses (straight-through
estimators carry the gradient), so the network that is trained is the network
that ships. Units: a state value of 1.0 (threshold 1.0) is 4096 on the chip.
"""
from __future__ import annotations

import contextlib

import torch

STATE_SCALE = 1 << 12        # chip units per 1.0 of voltage/current (s_scale in slayer)
WEIGHT_SCALE = 1 << 6        # slayer's w_scale: weights are stored x64
DECAY_BITS = 12
DECAY_UNITY = 1 << DECAY_BITS
MAX_DV = DECAY_UNITY - 1     # Lava's dv is 12-bit unsigned: 0..4095
STATE_LIMIT = (1 << 23) - 1  # 24-bit signed voltage
MAX_VTH_MANT = (1 << 17) - 1
INPUT_SCALE = 1 << 6         # analog pixels travel as graded spikes of round(64*x)
INPUT_MESSAGE_BITS = 8
INPUT_WEIGHT_EXP = -6        # first-layer synapse right-shifts the graded sum by 6

_quantized = True


@contextlib.contextmanager
def unquantized():
    """Run the same network in plain float32: no grids, no integer voltage update.

    This is the float reference the robustness checker compares the chip against.
    """
    global _quantized
    previous, _quantized = _quantized, False
    try:
        yield
    finally:
        _quantized = previous


def quantization_enabled() -> bool:
    return _quantized


def quantize_weight(weight: torch.Tensor, descale: bool = False) -> torch.Tensor:
    """slayer's 8-bit weight quantizer (``Neuron.quantize_8bit`` at w_scale 64) as a function.

    Weights on a 1/32 grid in [-4, 3.97]; descaled: even integers in [-256, 254].
    """
    from lava.lib.dl.slayer.utils import quantize

    if not _quantized and not descale:
        return weight
    q = quantize(weight, step=2 / WEIGHT_SCALE).clamp(-256 / WEIGHT_SCALE, 254 / WEIGHT_SCALE)
    return q * WEIGHT_SCALE if descale else q


def ste(exact: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """Value of ``exact``, gradient of ``smooth``."""
    return smooth + (exact - smooth).detach()


def quantize_input(x: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] on the 1/64 grid the chip's graded input spikes carry."""
    x = x.clamp(0.0, 1.0)
    if not _quantized:
        return x
    return ste(torch.round(x * INPUT_SCALE) / INPUT_SCALE, x)


def floor_to_input_grid(current: torch.Tensor) -> torch.Tensor:
    """First-layer current as the chip computes it: (w_int . p) >> 6, i.e. floor on a 1/64 grid."""
    if not _quantized:
        return current
    return ste(torch.floor(current * INPUT_SCALE) / INPUT_SCALE, current)


def decay_to_dv(decay: torch.Tensor) -> torch.Tensor:
    """Multiplicative leak (lambda, or lambda*a[t]) -> Lava's integer voltage decay dv."""
    dv = torch.round(DECAY_UNITY * (1.0 - decay))
    return dv.clamp(0, MAX_DV)


def quantize_decay(decay: torch.Tensor) -> torch.Tensor:
    """Leak on the chip's 12-bit grid, clamped to [1/4096, 1]: no growth, representable."""
    decay = decay.clamp(1.0 / DECAY_UNITY, 1.0)
    if not _quantized:
        return decay
    return ste(1.0 - decay_to_dv(decay) / DECAY_UNITY, decay)


def threshold_mantissa(threshold: float) -> int:
    """vThMant as slayer exports it: truncated to the 1/64 grid."""
    return int(threshold * WEIGHT_SCALE)


def chip_voltage_step(u: torch.Tensor, dv: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
    """One bit-exact Loihi voltage update in float units (no gradient).

    v = sign(u*(4096-dv)) * (|u*(4096-dv)| >> 12) + I, saturated to 24 bits;
    computed in float64, where every intermediate is an exact integer.
    """
    u_int = torch.round(u.double() * STATE_SCALE)
    decayed = torch.trunc(u_int * (DECAY_UNITY - dv.double()) / DECAY_UNITY)
    i_int = torch.trunc(current.double() * STATE_SCALE)
    v_int = (decayed + i_int).clamp(-STATE_LIMIT, STATE_LIMIT)
    return (v_int / STATE_SCALE).to(current.dtype)
