"""Loihi 2 fixed-point formats, shared by the float model and the exporter.

The float model computes on the same grids the chip uses (straight-through
estimators carry the gradient), so the network that is trained is the network
that ships. Units: a state value of 1.0 (threshold 1.0) is 4096 on the chip, and 4096*64
in the first layer, fed graded pixels. The neuron step itself lives in ``chip_kernel``.
"""
from __future__ import annotations

import torch

from . import chip_kernel as kernel, guards
from .chip_kernel import DECAY_BITS, DECAY_UNITY, MAX_VTH_MANT  # noqa: F401  (re-exported grids)

WEIGHT_SCALE = 1 << 6        # slayer's w_scale: weights are stored x64 (even ints in [-256, 254])
# chip units per 1.0 of voltage/current in a layer fed binary spikes: a weight of 1.0 is 64,
# and the synaptic sum is shifted by 6 more (slayer's s_scale)
STATE_SCALE = WEIGHT_SCALE << kernel.ACTIVATION_SHIFT
MAX_DV = kernel.MAX_DECAY    # Lava's dv is 12-bit unsigned: 0..4095
STATE_LIMIT = kernel.VOLTAGE_LIMIT
INPUT_SCALE = 1 << 6         # analog pixels travel as graded spikes of round(64*x) ...
INPUT_MESSAGE_BITS = 8       # ... of 8 bits; the first layer computes W p unshifted, so its state
#                              runs on a grid 64 times finer (state scale 4096*64, vThMant 4096*th)

# How a model computes; every neuron, synapse and encoder holds one of these (no global switch):
#   chip:  the chip's grids (8-bit weights, 1/64 inputs, 12-bit decays) and its integer voltage
#          update (``chip_kernel``): values bit-exact to Loihi (dense networks train this way);
#   quantized: the grids, with a float voltage update (conv networks, quantized whole at export);
#   float: plain float32, no grids: the float twin reports and checks compare against.
ARITHMETIC = ("chip", "quantized", "float")


def check_arithmetic(mode: str) -> str:
    guards.choice("arithmetic", mode, ARITHMETIC, error=ValueError)
    return mode


def quantize_weight(weight: torch.Tensor, descale: bool = False, enabled: bool = True) -> torch.Tensor:
    """slayer's 8-bit weight quantizer (``Neuron.quantize_8bit`` at w_scale 64) as a function.

    Weights on a 1/32 grid in [-4, 3.97]; descaled: even integers in [-256, 254].
    """
    from lava.lib.dl.slayer.utils import quantize

    if not enabled and not descale:
        return weight
    q = quantize(weight, step=2 / WEIGHT_SCALE).clamp(kernel.WEIGHT_MIN / WEIGHT_SCALE, kernel.WEIGHT_MAX / WEIGHT_SCALE)
    return q * WEIGHT_SCALE if descale else q


def ste(exact: torch.Tensor, smooth: torch.Tensor) -> torch.Tensor:
    """Value of ``exact``, gradient of ``smooth``."""
    return smooth + (exact - smooth).detach()


def graded_payload(x: torch.Tensor, scale: int = INPUT_SCALE) -> torch.Tensor:
    """The chip's input encoding, written once: pixel x -> graded spike round(scale * clamp(x, 0, 1)),
    straight-through (value of the rounding, gradient of scale * x inside [0, 1])."""
    x = x.clamp(0.0, 1.0) * scale
    return ste(torch.round(x), x)


def quantize_input(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Pixels in [0, 1] on the 1/64 grid the chip's graded input spikes carry."""
    if not enabled:
        return x.clamp(0.0, 1.0)
    return graded_payload(x) / INPUT_SCALE


def state_scale(payload_scale: int = 1) -> int:
    """Chip units per 1.0 of a layer's voltage: 4096 for spike inputs, 4096*64 for graded pixels."""
    return STATE_SCALE * int(payload_scale)


def decay_to_dv(decay: torch.Tensor) -> torch.Tensor:
    """Multiplicative leak (lambda, or lambda*a[t]) -> Lava's integer voltage decay dv."""
    dv = torch.round(DECAY_UNITY * (1.0 - decay))
    return dv.clamp(0, MAX_DV)


def quantize_decay(decay: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Leak on the chip's 12-bit grid, clamped to [1/4096, 1]: no growth, representable."""
    decay = decay.clamp(1.0 / DECAY_UNITY, 1.0)
    if not enabled:
        return decay
    return ste(1.0 - decay_to_dv(decay) / DECAY_UNITY, decay)


def threshold_mantissa(threshold: float, payload_scale: int = 1) -> int:
    """vThMant as slayer exports it (truncated to the layer's grid): threshold * 64 * payload scale."""
    return int(threshold * WEIGHT_SCALE * payload_scale)


def chip_voltage_step(u: torch.Tensor, dv: torch.Tensor, current: torch.Tensor,
                      payload_scale: int = 1) -> torch.Tensor:
    """One bit-exact Loihi voltage update of the float model (no gradient), via ``chip_kernel``.

    The current is already on the layer's grid (iDecay = 4096: u[t] = wrap(a << 6)); computed
    in float64, where every intermediate is an exact integer.
    """
    scale = state_scale(payload_scale)
    u_int = torch.round(u.double() * scale)
    i_int = kernel.wrap_current(torch.round(current.double() * scale))
    v_int = kernel.voltage_step(u_int, i_int, dv.double())
    return (v_int / scale).to(current.dtype)


def chip_dynamics(current: torch.Tensor, dv: torch.Tensor, threshold: float, payload_scale: int = 1,
                  bias: torch.Tensor | None = None, scale: int | None = None, voltages: bool = True,
                  states: bool = True):
    """All T steps (time-major, ``current`` (T, ...)) of the bit-exact voltage update with spikes and
    hard reset: (voltage, spikes, voltage after reset) in the dtype of ``current``.

    The same values as T calls of ``chip_voltage_step`` with the spike test in the float model's dtype,
    with fewer passes per step: the state stays in exact integers between steps (no round trip; float32 when
    the layer's drives are small enough, else float64), and the current's 24-bit wrap and the voltage's saturation are skipped
    when no current of the layer can reach them (one check per layer). Step by step, so each step's tensors
    stay in cache. The grid model of a file calls it in chip units (``scale`` 1, ``current`` = a << 6, ``bias`` = bias_mant << 6,
    added after the current's wrap, as Lava adds it). ``voltages=False``: the spikes alone, (None, spikes, None); ``states=False``: no
    voltage after reset, (voltage, spikes, None) (only a gradient for the decay reads it).
    """
    scale = state_scale(payload_scale) if scale is None else scale
    may_wrap = may_saturate = False
    drive_peak = 0.0
    if current.numel():
        low, high = torch.aminmax(current)
        peak = float(torch.maximum(-low, high)) * scale
        may_wrap = peak >= kernel.WRAP
        # |v[t]| <= the sum of |drive| over the steps so far (the leak and the reset only shrink it): below the
        # limit, the 24-bit saturation cannot act and is skipped (one pass fewer per step)
        drive_peak = min(peak + 1, kernel.WRAP) + (float(bias.abs().max()) if bias is not None and bias.numel() else 0)
        may_saturate = drive_peak * current.shape[0] > kernel.VOLTAGE_LIMIT
    # float32 holds every integer below 2^24: with drives below 2^23 (no wrap) a float32 model's state stays in
    # float32, the leak split as kernel.decay_float32_ does; otherwise float64, where the leak is one product
    power_of_two = isinstance(scale, int) and scale & (scale - 1) == 0
    narrow = current.dtype == torch.float32 and not may_wrap and drive_peak <= kernel.WRAP and power_of_two
    state_dtype = torch.float32 if narrow else torch.float64
    threshold_units = float(torch.tensor(threshold, dtype=current.dtype)) * scale  # the float model's comparison
    # a drive the same at every step (a first layer fed one image T times: an expanded view, stride 0 in time)
    # is converted once; otherwise the parts that do not depend on the state run once on all T steps
    constant = current.shape[0] > 1 and current.stride(0) == 0 and bias is None
    source = current[:1] if constant else current
    drive = torch.mul(source, scale, out=torch.empty_like(source, dtype=state_dtype)).round_()
    if may_wrap:
        drive = kernel.wrap_current(drive)
    if bias is not None:
        drive.add_(bias)
    shape = current.shape
    v_pre = torch.empty(shape, dtype=state_dtype, device=current.device) if constant else drive  # starts as drive[t]
    fired, v_post = torch.empty_like(v_pre), torch.empty_like(v_pre)
    drives = drive.expand(shape).unbind(0) if constant else v_pre.unbind(0)
    v, leak = torch.zeros_like(v_pre[0]), torch.empty_like(v_pre[0])
    high_part = torch.empty_like(leak) if narrow else None  # the float32 leak's 4096s
    for d, step_drive, pre, spike, post in zip(dv.tolist(), drives, v_pre.unbind(0), fired.unbind(0), v_post.unbind(0)):
        # kernel.voltage_step: clamp(decay(v, d) + drive)
        if narrow:
            kernel.decay_float32_(v, kernel.DECAY_UNITY - d, leak, high_part)
        else:  # kernel.decay's float path
            kernel.truncate_(torch.mul(v, (kernel.DECAY_UNITY - d) / kernel.DECAY_UNITY, out=leak))
        torch.add(step_drive, leak, out=pre)
        if may_saturate:
            pre.clamp_(-kernel.VOLTAGE_LIMIT, kernel.VOLTAGE_LIMIT)
        torch.gt(pre, threshold_units, out=spike)  # spikes as floats: boolean tensors are slow on the CPU
        v = torch.addcmul(pre, pre, spike, value=-1.0, out=post)  # the hard reset, v (1 - s)

    def to_units(values):  # back to the caller's units and dtype (chip units: a plain copy)
        if narrow:  # our own buffer, already in the caller's dtype: 2^-k in place is exact
            return values if scale == 1 else values.mul_(1.0 / scale)
        if scale == 1:
            return values.to(current.dtype)
        out = torch.empty_like(current)
        if power_of_two:
            # multiplying by 2^-k is the division, exactly; and the copy first is exact too
            # (integers below 2^24, the saturation's bound, fit float32): half the time of a mixed-dtype op
            return out.copy_(values).mul_(1.0 / scale)
        return torch.div(values, scale, out=out)

    if not voltages:  # a query wants the spikes alone: two conversions of T x batch x neurons saved
        return None, fired.to(current.dtype), None
    return to_units(v_pre), fired.to(current.dtype), to_units(v_post) if states else None
