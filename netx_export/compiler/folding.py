"""Conv SNNs -> Loihi layers: fold normalisation, BatchNorm and average pooling into the weights.

Loihi has no BatchNorm and stock NetX no pooling layer, but all three are linear maps next
to a synapse, so they fold away exactly:
  * BatchNorm (eval statistics): W <- W * g/s per output channel, b <- (b - mu) g/s + beta;
  * 2x2 average pooling followed by a 3x3 conv (stride 1, pad 1) is one 6x6 conv with
    stride 2, pad 2 whose kernel repeats each weight over a 2x2 block, divided by 4;
    followed by flatten -> dense, each dense weight repeats over its 2x2 block, / 4;
  * input normalisation (x - m)/s folds into the first conv (the model pads in pixels,
    before normalising, so this is exact at the border too).
``chip_layers`` then quantizes them (once) into the integers the file holds.
"""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from loihi_stable import chip_kernel as kernel
from loihi_stable import fixed_point as fx
from loihi_stable.blocks import READOUT_NEURON
from loihi_stable.errors import UserError
from loihi_stable.neurons import FusedDynamics
from netx_export.fileformat.netx_file import LayerSpec


@dataclass
class FoldedLayer:
    kind: str                       # "conv" or "dense"
    weight: torch.Tensor            # (out, in, kh, kw) or (out, in), float, threshold units
    bias: torch.Tensor              # (out,)
    out_shape: tuple                # (C, H, W) or (N,)
    neuron: object = None           # the DLIF/LIF module (None: the non-spiking readout)
    stride: int = 1
    padding: int = 1
    scale: float = 1.0              # weights, bias and threshold are multiplied by this on the chip (chip_layers)
    extra: dict = field(default_factory=dict)


def _fold_bn(conv: torch.nn.Conv2d, bn) -> tuple[torch.Tensor, torch.Tensor]:
    weight = conv.weight.detach().clone()
    bias = conv.bias.detach().clone() if conv.bias is not None else torch.zeros(weight.shape[0])
    if isinstance(bn, torch.nn.BatchNorm2d):
        gain = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
        weight = weight * gain.view(-1, 1, 1, 1)
        bias = (bias - bn.running_mean) * gain + bn.bias.detach()
    return weight, bias


def _pool_into_conv(weight: torch.Tensor) -> torch.Tensor:
    """3x3 kernel after 2x2 average pooling -> 6x6 kernel (stride 2, padding 2) on the unpooled map."""
    return weight.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3) / 4


def fold_model(model) -> list[FoldedLayer]:
    """The Loihi layers of a SpikingVGG; raises UserError for what Loihi cannot run."""
    from loihi_stable.convnets import SpikingVGG

    if not isinstance(model, SpikingVGG):
        raise UserError(f"{model.config.arch} cannot be exported to Loihi: its residual stream carries analog "
                        "(non-spike) values between layers, which Loihi's spiking synapses cannot carry; "
                        "train a vgg5, vgg11, convnet or mlp model for the chip")
    model.eval()
    c, h, w = model.config.input_shape
    normalize = model.features[0].synapse.normalize
    mean, std = normalize.mean.flatten(), normalize.std.flatten()
    layers: list[FoldedLayer] = []
    pooled, first = False, True
    for item in model.layout:
        if item == "A":
            if pooled:
                raise UserError("two average poolings in a row do not fold into one conv: change the layout")
            pooled, h, w = True, h // 2, w // 2
            continue
        block = model.features[item]
        weight, bias = _fold_bn(block.synapse.conv, block.synapse.bn)
        if first:  # (x - m)/s: scale the input channels, move the mean into the bias
            bias = bias - (weight * (mean / std).view(1, -1, 1, 1)).sum((1, 2, 3))
            weight = weight / std.view(1, -1, 1, 1)
            first = False
        stride, padding = 1, 1
        if pooled:
            weight, stride, padding, pooled = _pool_into_conv(weight), 2, 2, False
        layers.append(FoldedLayer("conv", weight, bias, (weight.shape[0], h, w), block.neuron, stride, padding))
        c = weight.shape[0]
    for i, block in enumerate([*model.classifier, None]):
        linear = block.synapse if block is not None else model.readout
        weight, bias = linear.weight.detach().clone(), linear.bias.detach().clone()
        if i == 0 and pooled:  # flatten after a pooling: spread each weight over its 2x2 block
            weight = weight.view(-1, c, h, w).repeat_interleave(2, 2).repeat_interleave(2, 3).flatten(1) / 4
            pooled = False
        layers.append(FoldedLayer("dense", weight, bias, (weight.shape[0],), block.neuron if block else None))
    return layers


@torch.no_grad()
def run_folded(layers: list[FoldedLayer], x: torch.Tensor, timesteps: int) -> torch.Tensor:
    """Mean logits of the folded network in plain float: the check that folding changed nothing.
    (The quantized network is what ``chip_layers`` writes, run by the emulator.)"""
    h = x
    for layer in layers:
        if layer.kind == "conv":
            if h.dim() == 4:
                current = F.conv2d(h, layer.weight, layer.bias, stride=layer.stride, padding=layer.padding)
                current = current.unsqueeze(-1).expand(*current.shape, timesteps)
            else:
                folded = h.permute(0, 4, 1, 2, 3).flatten(0, 1)
                current = F.conv2d(folded, layer.weight, layer.bias, stride=layer.stride, padding=layer.padding)
                current = current.view(-1, timesteps, *current.shape[1:]).permute(0, 2, 3, 4, 1)
        else:
            if h.dim() == 5:
                h = h.flatten(1, 3)
            current = (h.transpose(1, 2) @ layer.weight.T + layer.bias).transpose(1, 2)
        if layer.neuron is None:
            return current.mean(-1)
        decay = layer.neuron.effective_decay().detach()
        h, _ = FusedDynamics.apply(current, decay, layer.neuron.threshold, 1.0, None)  # the float neuron step
    raise AssertionError("the folded network has no readout")


def _even_weights(weight: torch.Tensor) -> np.ndarray:
    """Weights (already x64 and scaled) on Loihi's 8-bit grid: even integers in [-256, 254]."""
    return (torch.round(weight / 2) * 2).clamp(kernel.WEIGHT_MIN, kernel.WEIGHT_MAX).numpy().astype(np.int64)


def chip_layers(layers: list[FoldedLayer]) -> list[LayerSpec]:
    """The folded float layers in chip integers; the only place a conv SNN is quantized.

    Each layer is scaled so its weights span the 8 bits (scaling weight, bias and threshold
    together leaves the spikes unchanged), limited so the threshold mantissa (17 bits) and the
    bias mantissa (13 bits) fit. The first layer reads graded payloads round(64 x) on a grid 64
    times finer; its bias would not fit there, so it rides on the constant bias channel as the
    centre tap of an extra input channel (always inside the image for a 3x3, pad 1 kernel).
    """
    specs = []
    for i, layer in enumerate(layers):
        first = i == 0
        payload = fx.INPUT_SCALE if first else 1
        weight, bias = layer.weight.double(), layer.bias.double()
        weight_peak = float(weight.abs().max()) if weight.numel() else 0.0
        if first:
            weight_peak = max(weight_peak, float(bias.abs().max()))
        limits = [(kernel.WEIGHT_MAX / fx.WEIGHT_SCALE) / weight_peak if weight_peak > 0 else 1.0]
        if layer.neuron is not None:
            limits.append(kernel.MAX_VTH_MANT / (fx.WEIGHT_SCALE * payload * layer.neuron.threshold))
        if not first and float(bias.abs().max()) > 0:
            limits.append(kernel.MAX_BIAS_MANT / (fx.WEIGHT_SCALE * float(bias.abs().max())))
        scale = min(limits)
        layer.scale = scale
        w_int = _even_weights(weight * scale * fx.WEIGHT_SCALE)
        b_int = None
        if first:
            if layer.kind != "conv" or weight.shape[2:] != (3, 3) or layer.padding != 1 or layer.stride != 1:
                raise UserError("the first layer of a conv SNN must be a 3x3 conv, stride 1, padding 1")
            centre = torch.zeros(weight.shape[0], 1, 3, 3, dtype=torch.float64)
            centre[:, 0, 1, 1] = bias * scale * fx.WEIGHT_SCALE
            w_int = np.concatenate([w_int, _even_weights(centre)], 1)
        else:
            b_int = torch.round(bias * scale * fx.WEIGHT_SCALE).numpy().astype(np.int64)
        if layer.neuron is None:
            neuron, schedule = READOUT_NEURON, None
        else:  # the threshold on the folded layer's scale
            neuron = dataclasses.replace(layer.neuron.cuba_neuron(),
                                         vth_mant=fx.threshold_mantissa(layer.neuron.threshold * scale, payload))
            schedule = layer.neuron.chip_schedule()
        specs.append(LayerSpec(w_int, neuron, schedule, b_int, layer.kind, layer.stride, layer.padding,
                               tuple(int(v) for v in layer.out_shape)))
    return specs
