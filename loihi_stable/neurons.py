"""LIF and DLIF neurons on lava-dl SLAYER's neuron machinery.

DLIF (Ding et al., ICML 2024) scales the leak by a trainable a[t] per layer and
time step: v[t] = lambda*a[t]*u[t-1] + I[t] (the paper's equation, ``form="leak"``);
a[0] acts on u[-1] = 0, so it is fixed at 1 and not a parameter. The authors' code
scales the input instead, v[t] = lambda*u[t-1] + p[t]*I[t] (``form="input"``): that
form trains in float and grid arithmetic but has no Loihi equivalent (a CUBA neuron's
weights and threshold are the same at every step), so it is not exported. LIF is the
leak form with a[t] = 1 frozen. All spike on v > threshold (strict, as Loihi), reset hard to 0, use the
triangle surrogate, and update the voltage with Loihi's integer arithmetic so the
exported CUBA neuron reproduces them spike for spike.
"""
from __future__ import annotations

import torch
from lava.lib.dl.slayer.neuron.base import Neuron as SlayerNeuron

from . import chip_kernel as kernel, fixed_point as fx, guards, surrogates


class TriangleSpike(torch.autograd.Function):
    """Heaviside(v - threshold) with dS/dv = max(0, width - |v - threshold|) / width^2."""

    @staticmethod
    def forward(ctx, voltage, threshold, width):
        ctx.save_for_backward(voltage)
        ctx.threshold, ctx.width = threshold, width
        return (voltage > threshold).to(voltage.dtype)

    @staticmethod
    def backward(ctx, grad_output):
        (voltage,) = ctx.saved_tensors
        width = ctx.width
        surrogate = (width - (voltage - ctx.threshold).abs()).clamp(min=0) / width**2
        return grad_output * surrogate, None, None


def triangle_spike(voltage: torch.Tensor, threshold: float, width: float = 1.0) -> torch.Tensor:
    return TriangleSpike.apply(voltage, threshold, width)


def spike_dynamics(current: torch.Tensor, decay: torch.Tensor, threshold: float, dv: torch.Tensor | None = None,
                   payload_scale: int = 1, bias=None, scale=None, voltages: bool = True, states: bool = True):
    """All T steps of a layer, time-major (``current`` (T, ...), contiguous, or a view constant in time: stride 0):
    (voltage, spikes, state after reset).

    With ``dv`` the chip's integers (``fixed_point.chip_dynamics``: one conversion per layer), else float.
    Results are written in place (out=), spikes straight as floats, to keep each step at three passes.
    ``voltages=False`` (``states=False``) lets the chip path skip converting what a caller that wants only spikes
    (no state after reset) drops.
    """
    if dv is not None:
        return fx.chip_dynamics(current, dv, threshold, payload_scale, bias, scale, voltages, states)
    voltage, state, spike = torch.empty_like(current), torch.empty_like(current), torch.empty_like(current)
    u = torch.zeros_like(current[0])
    for t in range(current.shape[0]):
        torch.addcmul(current[t], u, decay[t], out=voltage[t])
        torch.gt(voltage[t], threshold, out=spike[t])
        u = torch.addcmul(voltage[t], voltage[t], spike[t], value=-1.0, out=state[t])  # v*(1 - s)
    return voltage, spike, state


class FusedDynamics(torch.autograd.Function):
    """All T steps of v[t] = d[t]*u[t-1] + I[t], s = H(v - th), u = v*(1 - s) with a hand-written BPTT.

    Same values and gradients as the step-by-step autograd loop (triangle surrogate, reset not
    detached, straight-through chip arithmetic), without building a graph of 10 nodes per step:
    less memory and less overhead. Returns spikes and (non-differentiable) voltages.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # dynamics stay fp32 under AMP
    def forward(ctx, current, decay, threshold, width, dv, payload_scale=1, backward=None, bias=None, scale=None):
        current = current.movedim(-1, 0)
        if current.stride(0) != 0:  # an input the same at every step stays one view (its drive computed once)
            current = current.contiguous()
        # the state after reset serves only the decay's gradient (training); attacks freeze the decay
        voltage, spike, state = spike_dynamics(current, decay, threshold, dv, payload_scale, bias, scale,
                                               states=ctx.needs_input_grad[1])
        ctx.save_for_backward(voltage, spike, state, decay, current if backward is not None else None)
        ctx.threshold, ctx.width, ctx.backward = threshold, width, backward
        ctx.mark_non_differentiable(voltage)
        ctx.set_materialize_grads(False)  # no zero-filled gradient for the voltage output
        return spike.movedim(0, -1), voltage.movedim(0, -1)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad_spike, _grad_voltage):
        if grad_spike is None:  # the spikes were not used
            return (None,) * 9
        voltage, spike, state, decay, current = ctx.saved_tensors
        th, width, chosen = ctx.threshold, ctx.width, ctx.backward
        grad_spike = grad_spike.movedim(-1, 0)
        grad_decay = torch.zeros_like(decay)
        if chosen is not None and chosen.shape == "rate":  # BPTR: through the firing rate, not the voltage
            grad_current = surrogates.rate_gradient(current, grad_spike, th)
            return (grad_current.movedim(0, -1), grad_decay) + (None,) * 7
        # what does not depend on the gradient flowing back runs once on all T steps
        surrogate = surrogates.surrogate_density(chosen, voltage, th, width)
        keep = 1 - spike  # u = v*(1 - s)
        detached = chosen is not None and chosen.detach_reset
        grad_current = torch.empty_like(voltage)
        want_decay = ctx.needs_input_grad[1]
        grad_u = None
        steps = zip(surrogate.unbind(0), voltage.unbind(0), keep.unbind(0), grad_spike.unbind(0), grad_current.unbind(0))
        for t, (sur, v, kept, g_s, grad_v) in reversed(list(enumerate(steps))):  # each step's tensors stay in cache
            if grad_u is None:  # last step: nothing flows back through the reset
                torch.mul(sur, g_s, out=grad_v)
            elif detached:  # u = v*(1 - s) with s a constant: dL/dv = sur*g_s + g_u*(1 - s)
                torch.mul(sur, g_s, out=grad_v).addcmul_(grad_u, kept)
            else:  # reset not detached: dL/dv = sur*(g_s - g_u*v) + g_u*(1 - s)
                torch.addcmul(g_s, grad_u, v, value=-1.0, out=grad_v).mul_(sur).addcmul_(grad_u, kept)
            if t > 0:
                if want_decay:
                    grad_decay[t] = torch.dot(grad_v.flatten(), state[t - 1].flatten())
                grad_u = grad_v * decay[t]
        return (grad_current.movedim(0, -1), grad_decay) + (None,) * 7


DLIF_FORMS = ("leak", "input")


class DLIF(SlayerNeuron):
    """Dynamic LIF with a per-timestep leak scaling a[t] (init 1), exported as a CUBA neuron.

    Input and output use slayer's layout: (batch, features..., time). ``leak_scale`` holds
    a[1..T-1]; ``input_scale`` (input form only) holds p[0..T-1].
    """

    neuron_type = "dlif"
    spike_backward = None  # an attack's surrogates.Backward (surrogates.backward_through); None: the training one

    def __init__(self, threshold: float = 1.0, leak: float = 0.99, timesteps: int = 8,
                 surrogate_width: float = 1.0, learn_leak_scale: bool = True, arithmetic: str = "chip",
                 form: str = "leak"):
        super().__init__(threshold=threshold, p_scale=fx.DECAY_UNITY, w_scale=fx.WEIGHT_SCALE,
                         s_scale=fx.STATE_SCALE, persistent_state=False,
                         requires_grad=learn_leak_scale)
        if not 0.0 < leak <= 1.0:
            raise ValueError(f"leak must be in (0, 1], got {leak}")
        self.leak = float(leak)
        self.timesteps = int(timesteps)
        self.surrogate_width = float(surrogate_width)
        # fixed_point.ARITHMETIC: "chip" for networks that ship bit-exact (dense), "quantized" for conv
        # networks (quantized whole at export), "float" for the float twin
        self.arithmetic = fx.check_arithmetic(arithmetic)
        # graded payload per 1.0 of input (64 in a layer fed pixels): sets the layer's state grid
        self.payload_scale = 1
        guards.choice("DLIF form", form, DLIF_FORMS, error=ValueError)
        self.form = form
        scale = torch.ones(self.timesteps - 1)  # a[1..T-1]
        if learn_leak_scale and form == "leak":
            self.leak_scale = torch.nn.Parameter(scale)
        else:
            self.register_buffer("leak_scale", scale)
        if form == "input":
            self.input_scale = torch.nn.Parameter(torch.ones(self.timesteps))
        self.record = False
        self.recording: dict[str, torch.Tensor] = {}

    def quantize_8bit(self, weight, descale=False):
        """slayer's 8-bit weight quantizer (off in float arithmetic)."""
        return fx.quantize_weight(weight, descale, enabled=self.arithmetic != "float")

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # checkpoints written before a[0] stopped being a parameter hold all T values
        key = prefix + "leak_scale"
        if key in state_dict and state_dict[key].shape == (self.timesteps,):
            state_dict[key] = state_dict[key][1:]
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # --- parameters as the chip sees them -------------------------------------------
    def leak_schedule(self) -> torch.Tensor:
        """a[t] for t = 0..T-1, with a[0] = 1."""
        return torch.cat([self.leak_scale.new_ones(1), self.leak_scale])

    def learned_schedule(self) -> tuple[str, torch.Tensor]:
        """What this neuron learns per time step: ("a", a[t]) in the leak form, ("p", p[t]) in the input form."""
        return ("p", self.input_scale) if self.form == "input" else ("a", self.leak_schedule())

    def effective_decay(self) -> torch.Tensor:
        """lambda*a[t] on the 12-bit grid, clamped to [1/4096, 1] (trained as shipped)."""
        return fx.quantize_decay(self.leak * self.leak_schedule(), enabled=self.arithmetic != "float")

    def dv_schedule(self) -> torch.Tensor:
        """Integer voltage decay per time step, as exported (dv[0] acts on u[-1] = 0)."""
        with torch.no_grad():
            return fx.decay_to_dv(self.leak * self.leak_schedule()).long()

    def clamp(self) -> None:
        """Keep a[t] where lambda*a[t] is representable and p[t] >= 0 (call after each optimizer step)."""
        with torch.no_grad():
            if isinstance(self.leak_scale, torch.nn.Parameter):
                self.leak_scale.clamp_(1.0 / (fx.DECAY_UNITY * self.leak), 1.0 / self.leak)
            if self.form == "input":
                self.input_scale.clamp_(min=0.0)

    def cuba_neuron(self) -> kernel.CubaNeuron:
        """The Loihi CUBA neuron this layer ships as (the per-step schedule apart: ``chip_schedule``)."""
        if self.form != "leak":
            raise ValueError("an input-form DLIF has no Loihi CUBA equivalent")
        dv = self.dv_schedule().cpu().numpy()
        # stock NetX reads one vDecay: the schedule's typical value (exact for LIF)
        typical = int(round(float(dv[1:].mean()))) if len(dv) > 1 else int(dv[0])
        return kernel.CubaNeuron(vth_mant=fx.threshold_mantissa(self.threshold, self.payload_scale), v_decay=typical)

    def chip_schedule(self):
        """DLIF's vDecay per time step (an extension key stock NetX ignores); None for LIF."""
        return self.dv_schedule().cpu().numpy().astype("int32") if self.neuron_type == "dlif" else None

    @property
    def device_params(self) -> dict:
        """The NetX neuron keys of ``cuba_neuron``, with DLIF's ``vDecaySchedule``."""
        params = self.cuba_neuron().to_netx()
        schedule = self.chip_schedule()
        if schedule is not None:
            params["vDecaySchedule"] = schedule
        return params

    @property
    def device(self):
        return self.leak_scale.device

    # --- dynamics -------------------------------------------------------------------
    def forward(self, current: torch.Tensor) -> torch.Tensor:
        steps = current.shape[-1]
        if steps > self.timesteps:
            raise ValueError(f"neuron built for {self.timesteps} time steps, got {steps}")
        if self.shape is None:
            self.shape = current.shape[1:-1]
        decay = self.effective_decay()[:steps].to(current.dtype)
        if self.form == "input":
            current = current * self.input_scale[:steps].to(current.dtype)
        dv = fx.decay_to_dv(decay.detach()) if self.arithmetic == "chip" and self.form == "leak" else None
        out, voltage = FusedDynamics.apply(current, decay, self.threshold, self.surrogate_width, dv,
                                           self.payload_scale, self.spike_backward)
        if self.record:
            self.recording = {"current": current, "voltage": voltage, "spike": out}
        return out

    def reference_forward(self, current: torch.Tensor) -> torch.Tensor:
        """The same dynamics as a step-by-step autograd loop (the check for FusedDynamics)."""
        decay = self.effective_decay()
        exact = self.arithmetic == "chip" and self.form == "leak"
        dv = fx.decay_to_dv(decay.detach())
        if self.form == "input":
            current = current * self.input_scale[:current.shape[-1]]
        u = torch.zeros_like(current[..., 0])
        spikes = []
        for t in range(current.shape[-1]):
            v = decay[t] * u + current[..., t]
            if exact:
                v = fx.ste(fx.chip_voltage_step(u.detach(), dv[t], current[..., t].detach(), self.payload_scale), v)
            s = triangle_spike(v, self.threshold, self.surrogate_width)
            u = v * (1.0 - s)
            spikes.append(s)
        return torch.stack(spikes, dim=-1)


class LIF(DLIF):
    """Leaky integrate-and-fire: DLIF with a[t] frozen at 1."""

    neuron_type = "lif"

    def __init__(self, threshold: float = 1.0, leak: float = 0.99, timesteps: int = 8,
                 surrogate_width: float = 1.0, arithmetic: str = "chip"):
        super().__init__(threshold, leak, timesteps, surrogate_width, learn_leak_scale=False,
                         arithmetic=arithmetic)


NEURONS = {"lif": LIF, "dlif": DLIF}
