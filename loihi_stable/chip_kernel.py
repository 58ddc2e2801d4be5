"""What one Loihi CUBA neuron computes in one time step: the chip's arithmetic, written once.

The definition is Lava's bit-accurate LIF model (lava/proc/lif/models.py,
``AbstractPyLifModelFixed``), which NetX builds from a file's neuron group
(du = iDecay - 1, dv = vDecay, vth = vThMant, bias_exp = 6):

  a[t] = sum_j w_ij s_j[t]                                   (synapse; graded spikes carry payloads;
                                                              a conv synapse wraps a to 24 bits)
  i[t] = wrap24(decay(i[t-1], iDecay) + (a[t] << 6))         (current; wraps, never saturates)
  v[t] = clip24(decay(v[t-1], vDecay) + i[t] + (bias << 6))  (voltage; saturates)
  s[t] = v[t] > (vThMant << 6);  v[t] = 0 where s[t]         (strict >, hard reset)
  decay(x, d) = sign(x (4096 - d)) * (|x (4096 - d)| >> 12)  (truncation toward zero)

Every function takes int64 tensors, or float64 tensors holding integers (exact below 2^53),
so the QAT forward, the emulator, the grid model and the certificates (interval ends), all float64
on any device, and the int64 reference the tests keep share one code path. The interval versions are sound because each map is
monotone, except the current's wrap, which they report instead of modelling.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

DECAY_BITS = 12
DECAY_UNITY = 1 << DECAY_BITS          # a decay of 4096 keeps nothing, 0 keeps everything
MAX_DECAY = DECAY_UNITY - 1            # vDecay is 12-bit unsigned
ACTIVATION_SHIFT = 6                   # act_shift: synaptic sums are MSB-aligned by 6 bits
THRESHOLD_SHIFT = 6                    # vth_shift: vThMant is MSB-aligned by 6 bits
BIAS_SHIFT = 6                         # NetX's bias_exp
STATE_BITS = 24
WRAP = 1 << (STATE_BITS - 1)           # Lava's max_uv_val: the current wraps by 2*WRAP
VOLTAGE_LIMIT = WRAP - 1               # the voltage saturates to [-VOLTAGE_LIMIT, VOLTAGE_LIMIT]
MAX_VTH_MANT = (1 << 17) - 1           # vThMant is 17-bit unsigned
MAX_BIAS_MANT = (1 << 12) - 1          # bias_mant is 13-bit signed
WEIGHT_MIN, WEIGHT_MAX = -256, 254     # 8-bit weights at weight_exp 0: even integers in [-256, 254]


@dataclass(frozen=True)
class CubaNeuron:
    """One layer's CUBA neuron parameters, in the chip's integers; ``to_netx``/``from_netx`` are the one
    place NetX's neuron keys (layer/<i>/neuron/...) are spelled."""

    vth_mant: int                 # vThMant: threshold mantissa (threshold = vth_mant << 6)
    v_decay: int                  # vDecay: voltage decay (0 keeps everything, 4096 nothing)
    i_decay: int = DECAY_UNITY    # iDecay: current decay (4096: the current does not persist)
    ref_delay: int = 1            # refDelay
    graded_spike: bool = False    # gradedSpike
    type: str = "CUBA"

    NETX = {"type": "type", "iDecay": "i_decay", "vDecay": "v_decay", "vThMant": "vth_mant",
            "refDelay": "ref_delay", "gradedSpike": "graded_spike"}

    @property
    def threshold(self) -> int:
        """The voltage (chip units) a neuron must exceed to spike."""
        return threshold_units(self.vth_mant)

    def to_netx(self) -> dict:
        values = asdict(self)
        return {key: values[field] for key, field in self.NETX.items()}

    @classmethod
    def from_netx(cls, keys: dict) -> "CubaNeuron":
        """From NetX keys as a file or a dict holds them (numpy scalars, bytes); missing ones take Lava's defaults."""
        def number(value):
            return np.asarray(value).reshape(-1)[0].item()

        found = {field: keys[key] for key, field in cls.NETX.items() if key in keys}
        kind = found.pop("type", "CUBA")
        kind = number(kind) if not isinstance(kind, (str, bytes)) else kind
        return cls(**{field: (bool if field == "graded_spike" else int)(number(value)) for field, value in found.items()},
                   type=kind.decode() if isinstance(kind, bytes) else str(kind))


def truncate_(x: torch.Tensor) -> torch.Tensor:
    """x rounded toward zero, in place. Not ``trunc_``: torch's CPU trunc (and remainder) kernels are not
    vectorized, 4-8x slower than division's trunc rounding (``benchmarks/grid_model_speed.py`` prints both);
    x / 1 is exact, so the values are the same."""
    return x.div_(1.0, rounding_mode="trunc")


def decay(x: torch.Tensor, d) -> torch.Tensor:
    """sign(x (4096 - d)) * (|x (4096 - d)| >> 12): the leak, truncating toward zero.

    On float64 integers it is one multiply and a trunc, exact while |x| < 2^41: (4096 - d) / 4096 is
    a 12-bit fraction, so x (4096 - d) / 4096 is computed without rounding.
    """
    if x.is_floating_point():
        return truncate_(x * ((DECAY_UNITY - d) / DECAY_UNITY))
    kept = x * (DECAY_UNITY - d)
    return torch.sign(kept) * torch.div(kept.abs(), DECAY_UNITY, rounding_mode="floor")


def decay_float32_(v: torch.Tensor, keep: float, out: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """trunc(v keep / 4096) into ``out`` in float32 arithmetic, exact for integer |v| < 2^23 (the saturated
    voltage), where the one product v keep would need 35 bits: v = 4096 h + l with h = trunc(v / 4096) and
    |l| < 4096 of v's sign, so the result is h keep + trunc(l keep / 4096), every term an integer (or a 12-bit
    fraction) below 2^24 (keep = 4096 - dv). Half the time of the float64 product on the CPU, and no float64
    state to convert to and from."""
    torch.div(v, DECAY_UNITY, rounding_mode="trunc", out=high)
    torch.sub(v, high, alpha=DECAY_UNITY, out=out)
    truncate_(out.mul_(keep / DECAY_UNITY))
    return out.add_(high, alpha=keep)


def activation_current(activation: torch.Tensor) -> torch.Tensor:
    """A synaptic sum as the neuron adds it (a << 6)."""
    return activation * (1 << ACTIVATION_SHIFT)


def wrap_conv_activation(activation: torch.Tensor) -> torch.Tensor:
    """Lava's conv synapse sends its sum as a signed 24-bit value (utils.signed_clamp): it wraps.

    remainder(a + W, 2W) - W written as a - 2W floor((a + W) / 2W): the same integers (the division is by a
    power of two, exact), without torch's slow CPU remainder (``truncate_``)."""
    return activation - 2 * WRAP * torch.div(activation + WRAP, 2 * WRAP, rounding_mode="floor")


def cannot_wrap(x: torch.Tensor) -> bool:
    """True when no value of a CPU tensor reaches the wrap (one reduction instead of two selects);
    False on other devices, where asking would wait for the device."""
    return x.device.type == "cpu" and x.is_floating_point() and (x.numel() == 0 or bool(x.abs().max() < WRAP))


def wrap_current(current: torch.Tensor) -> torch.Tensor:
    """Lava's 24-bit current wrap, as written there (two one-sided corrections of the unwrapped sum)."""
    if cannot_wrap(current):
        return current
    once = torch.where(current > WRAP, current - 2 * WRAP, current)
    return torch.where(once <= -WRAP, current + 2 * WRAP, once)


def current_step(current: torch.Tensor, activation: torch.Tensor, i_decay) -> torch.Tensor:
    """i[t] from i[t-1] and this step's synaptic sum; iDecay = 4096 makes i[t] = wrap(a << 6)."""
    if isinstance(i_decay, int) and i_decay == DECAY_UNITY:  # nothing of i[t-1] is kept
        return wrap_current(activation_current(activation))
    return wrap_current(decay(current, i_decay) + activation_current(activation))


def voltage_step(v: torch.Tensor, current: torch.Tensor, dv, bias=0) -> torch.Tensor:
    """v[t] before the spike test: leak, current, bias (bias_mant << 6), 24-bit saturation."""
    total = decay(v, dv) + current
    if not (isinstance(bias, int) and bias == 0):
        total = total + bias * (1 << BIAS_SHIFT)
    return total.clamp(-VOLTAGE_LIMIT, VOLTAGE_LIMIT)


def threshold_units(vth_mant) -> int:
    """The voltage a neuron must exceed to spike (vThMant << 6)."""
    return int(vth_mant) << THRESHOLD_SHIFT


def fire(v: torch.Tensor, threshold: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Spikes and the voltage after the hard reset: bool spikes for integer v, 0/1 in v's dtype for
    float v (boolean masks are several times slower than arithmetic on the CPU)."""
    if v.is_floating_point():
        spikes = torch.gt(v, threshold, out=torch.empty_like(v))
        return spikes, torch.addcmul(v, v, spikes, value=-1.0)
    spikes = v > threshold
    return spikes, torch.where(spikes, torch.zeros_like(v), v)


def neuron_step(current, v, activation, i_decay, dv, threshold: int, bias=0):
    """One full step: (i[t], v[t] after reset, s[t], v[t] before reset)."""
    current = current_step(current, activation, i_decay)
    v_pre = voltage_step(v, current, dv, bias)
    spikes, v = fire(v_pre, threshold)
    return current, v, spikes, v_pre


# --- interval versions (certification) ---------------------------------------------------
def current_step_interval(u_lo, u_hi, a_lo, a_hi, i_decay):
    """Bounds of i[t] and a mask of where the wrap may fire (there the bounds do not hold)."""
    lo = decay(u_lo, i_decay) + activation_current(a_lo)
    hi = decay(u_hi, i_decay) + activation_current(a_hi)
    may_wrap = (hi > WRAP) | (lo <= -WRAP)
    return lo, hi, may_wrap


def voltage_step_interval(v_lo, v_hi, u_lo, u_hi, dv, bias=0):
    """Bounds of v[t] before the spike test (every map in it is monotone)."""
    return voltage_step(v_lo, u_lo, dv, bias), voltage_step(v_hi, u_hi, dv, bias)


def fire_interval(v_lo, v_hi, threshold: int):
    """Spike bounds and sound bounds of the voltage after reset for any v in [v_lo, v_hi]."""
    s_lo, s_hi = (v_lo > threshold).to(v_lo.dtype), (v_hi > threshold).to(v_hi.dtype)
    return (s_lo, s_hi, *reset_interval(v_lo, v_hi, s_lo, s_hi, threshold))


def reset_interval(v_lo, v_hi, s_lo, s_hi, threshold):
    """Sound bounds of the voltage after the hard reset u = v * 1[v <= threshold] for any v in [v_lo, v_hi],
    given bounds of the spike (hard, or a surrogate's: S-IBP training differentiates through them):
    surely spiking 0, surely silent v, undecided [min(v_lo, 0), threshold]."""
    undecided = s_hi - s_lo
    return (1 - s_hi) * v_lo + undecided * v_lo.clamp(max=0), (1 - s_hi) * v_hi + undecided * max(threshold, 0)
