"""The spike's backward, chosen by the attacker: surrogate shape x sharpness, reset detached or not,
or a backward through the firing rate (BPTR).

The spike is not differentiable, so every white-box attack on an SNN picks a backward for it, and the
model's own training surrogate is the weakest choice (HART, ICLR 2024; Ozdenizci & Legenstein, TMLR
2024; ASSG, 2025). The backward is a parameter of the attack, never of the model: the forward (spikes,
voltages, logits, chip arithmetic) is untouched, bit for bit.

Every shape is a density in z = (v - threshold) / width, where width is the neuron's own surrogate
width (1.0 on the torch side, the threshold in chip units on the grid model): it integrates to 1 and
peaks at ``sharpness``; triangle at sharpness 1 is the training surrogate.
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch

from . import guards

SHAPES = ("triangle", "sigmoid", "rectangle", "arctan", "exponential", "ste", "rate")
SHARPNESS_RANGE = (0.05, 100.0)


@dataclass(frozen=True)
class Backward:
    """``shape:sharpness[:detach]`` on the command line and in suite files, e.g. ``sigmoid:4``, ``rate``."""

    shape: str = "triangle"
    sharpness: float = 1.0
    detach_reset: bool = False

    def __post_init__(self):
        guards.choice("surrogate", self.shape, SHAPES, error=ValueError)
        low, high = SHARPNESS_RANGE
        if not (isinstance(self.sharpness, (int, float)) and math.isfinite(self.sharpness)
                and low <= self.sharpness <= high):
            raise ValueError(f"surrogate sharpness must be in [{low:g}, {high:g}], got {self.sharpness!r}")

    @property
    def name(self) -> str:
        if self.shape == "rate":
            return "rate"
        return f"{self.shape}:{self.sharpness:g}" + (":detach" if self.detach_reset else "")

    @property
    def is_training_default(self) -> bool:
        return self == TRAINING

    def density(self, z: torch.Tensor) -> torch.Tensor:
        """dS/dz for z = (v - threshold) / width."""
        k = self.sharpness
        if self.shape == "triangle":
            return (1 - k * z.abs()).clamp(min=0) * k
        if self.shape == "sigmoid":
            s = torch.sigmoid(4 * k * z)
            return 4 * k * s * (1 - s)
        if self.shape == "rectangle":
            return (z.abs() < 0.5 / k).to(z.dtype) * k
        if self.shape == "arctan":
            return k / (1 + (math.pi * k * z) ** 2)
        if self.shape == "exponential":
            return k * torch.exp(-2 * k * z.abs())
        if self.shape == "ste":
            return torch.full_like(z, k)
        raise ValueError("the rate backward has no per-step density")

    def primitive(self, z: torch.Tensor) -> torch.Tensor:
        """A smooth step whose derivative is ``density`` (the definition the tests check gradients against)."""
        k = self.sharpness
        if self.shape == "triangle":
            a = (k * z).clamp(-1, 1)
            return a - a * a.abs() / 2
        if self.shape == "sigmoid":
            return torch.sigmoid(4 * k * z)
        if self.shape == "rectangle":
            return (k * z).clamp(-0.5, 0.5)
        if self.shape == "arctan":
            return torch.atan(math.pi * k * z) / math.pi
        if self.shape == "exponential":
            return torch.sign(z) * (1 - torch.exp(-2 * k * z.abs())) / 2
        if self.shape == "ste":
            return k * z
        raise ValueError("the rate backward has no per-step primitive")


TRAINING = Backward()


def parse(text) -> Backward:
    """'sigmoid:4', 'rectangle:0.5:detach', 'triangle' (sharpness 1), 'rate', or a Backward."""
    if isinstance(text, Backward):
        return text
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a surrogate is written shape[:sharpness][:detach] (e.g. sigmoid:4), got {text!r:.40}")
    parts = text.strip().lower().split(":")
    detach = parts[-1] == "detach"
    if detach:
        parts = parts[:-1]
    if len(parts) > 2 or not parts:
        raise ValueError(f"cannot read surrogate '{text}': write shape[:sharpness][:detach], e.g. arctan:2:detach")
    try:
        sharpness = float(parts[1]) if len(parts) == 2 else 1.0
    except ValueError:
        raise ValueError(f"cannot read the sharpness of surrogate '{text}': e.g. sigmoid:4") from None
    if parts[0] == "rate" and (len(parts) == 2 or detach):
        raise ValueError("the rate backward takes no sharpness and no :detach (write rate)")
    return Backward(parts[0], sharpness, detach)


# the sharpness a per-model search tries, smooth to sharp. The sharp end matters: on the demo MLP,
# backwards at 16 broke 6 samples (of 360) that the best at 4 and every one below left robust; on a
# Fashion convnet, 4 samples of 100 fell only to backwards at 8, between 4 and 16
SEARCH_SHARPNESS = (0.25, 1.0, 4.0, 8.0, 16.0)


def search_space(sharpness=SEARCH_SHARPNESS, shapes=SHAPES, resets=(False, True)) -> list[Backward]:
    """Shapes x sharpness x reset, and the rate backward: the candidates a per-model search ranks."""
    found = [Backward(shape, k, reset) for shape in shapes if shape != "rate" for k in sharpness for reset in resets]
    return found + ([Backward("rate")] if "rate" in shapes else [])


@contextlib.contextmanager
def backward_through(model: torch.nn.Module | None, backward: Backward | None):
    """Differentiate every spike of ``model`` through ``backward`` inside the block (None: the model's own).

    Any module with a ``spike_backward`` attribute takes it (the DLIF/LIF neurons, the grid model).
    """
    if model is None or backward is None:
        yield
        return
    modules = [m for m in model.modules() if hasattr(m, "spike_backward")]
    if not modules:
        raise ValueError(f"{type(model).__name__} has no spiking neuron whose backward can be chosen")
    previous = [m.spike_backward for m in modules]
    for m in modules:
        m.spike_backward = None if backward == TRAINING else backward
    try:
        yield
    finally:
        for m, old in zip(modules, previous):
            m.spike_backward = old


# --- the backward pass of T steps of v = d*u + I, s = H(v - th), u = v*(1 - s) -----------------
def surrogate_density(backward: Backward | None, voltage: torch.Tensor, threshold: float, width: float) -> torch.Tensor:
    """dS/dv at every voltage: ``backward``'s, or for None the training one (triangle,
    max(0, width - |v - th|) / width^2, written out: the same values as Backward().density, fewer passes)."""
    if backward is not None:
        return backward.density((voltage - threshold) / width) / width
    surrogate = (voltage - threshold).abs_().neg_().add_(width).relu_()
    return surrogate.div_(width**2) if width != 1.0 else surrogate


def rate_gradient(current: torch.Tensor, grad_spike: torch.Tensor, threshold: float) -> torch.Tensor:
    """BPTR, time-major: s[t] treated as the rate clamp(mean_{t'<=t} I[t'] / th, 0, 1) of the current
    so far; the gradient flows to each I[t] through every later step's running mean, not through v."""
    steps = current.shape[0]
    count = torch.arange(1, steps + 1, dtype=current.dtype, device=current.device).view(-1, *[1] * (current.dim() - 1))
    running = current.cumsum(0) / count
    active = ((running > 0) & (running < threshold)).to(current.dtype)
    through = grad_spike * active / (count * threshold)  # dL/d(running mean at t') / (t'+1)
    return through.flip(0).cumsum(0).flip(0)  # sum over t' >= t


def step_spike(voltage: torch.Tensor, threshold: float, width: float, backward: Backward,
               running_current: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of a step-by-step autograd unroll (the grid model): spikes H(v - th) with ``backward``'s
    gradient, and the state after the hard reset, u = v*(1 - s), with the reset detached if it says so.

    The rate backward needs ``running_current`` (the mean input current up to this step); the spikes'
    gradient then comes from the rate alone, and the voltage keeps only its linear integration (which
    matters for a readout that never fires).
    """
    exact = (voltage > threshold).to(voltage.dtype)
    if backward.shape == "rate":
        active = ((running_current > 0) & (running_current < threshold)).to(voltage.dtype)
        smooth = running_current * active / threshold
        spikes = exact + (smooth - smooth.detach())
        return spikes, voltage * (1 - exact)
    smooth = backward.primitive((voltage - threshold) / width)
    spikes = exact + (smooth - smooth.detach())
    return spikes, voltage * (1 - (spikes.detach() if backward.detach_reset else spikes))
