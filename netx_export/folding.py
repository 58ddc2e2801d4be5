"""Conv SNNs -> Loihi layers: fold normalisation, BatchNorm and average pooling into the weights.

Loihi has no BatchNorm and stock NetX no pooling layer, but all three are linear maps next
to a synapse, so they fold away exactly:
  * BatchNorm (eval statistics): W <- W * g/s per output channel, b <- (b - mu) g/s + beta;
  * 2x2 average pooling followed by a 3x3 conv (stride 1, pad 1) is one 6x6 conv with
    stride 2, pad 2 whose kernel repeats each weight over a 2x2 block, divided by 4;
    followed by flatten -> dense, each dense weight repeats over its 2x2 block, / 4;
  * input normalisation (x - m)/s folds into the first conv (the model pads in pixels,
    before normalising, so this is exact at the border too).
Then every layer is scaled so its weights span the 8 bits; scaling weight, bias and
threshold together leaves the spikes unchanged, which is what the threshold mantissa is for.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from loihi_stable import fixed_point as fx
from loihi_stable.errors import UserError


@dataclass
class FoldedLayer:
    kind: str                       # "conv" or "dense"
    weight: torch.Tensor            # (out, in, kh, kw) or (out, in), float, threshold units
    bias: torch.Tensor              # (out,)
    out_shape: tuple                # (C, H, W) or (N,)
    neuron: object = None           # the DLIF/LIF module (None: the non-spiking readout)
    stride: int = 1
    padding: int = 1
    scale: float = 1.0              # weights, bias and threshold are multiplied by this on the chip
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
    for layer in layers:  # use all 8 bits; the threshold mantissa (17 bits) follows the scale
        peak = float(torch.cat([layer.weight.abs().flatten(), layer.bias.abs()]).max())
        limit = fx.MAX_VTH_MANT / (fx.WEIGHT_SCALE * layer.neuron.threshold) if layer.neuron is not None else 1024.0
        layer.scale = min((254 / fx.WEIGHT_SCALE) / peak, limit) if peak > 0 else 1.0
    return layers


@torch.no_grad()
def run_folded(layers: list[FoldedLayer], x: torch.Tensor, timesteps: int, quantized: bool = False) -> torch.Tensor:
    """Mean logits of the folded network in float (the check that folding changed nothing);
    ``quantized``: with the 8-bit weights, integer biases and threshold mantissas Loihi gets."""
    h = x
    for layer in layers:
        weight, bias = layer.weight * layer.scale, layer.bias * layer.scale
        if quantized:
            weight = torch.round(weight * fx.WEIGHT_SCALE / 2) * 2 / fx.WEIGHT_SCALE
            bias = torch.round(bias * fx.WEIGHT_SCALE) / fx.WEIGHT_SCALE
        if layer.kind == "conv":
            if h.dim() == 4:
                current = F.conv2d(h, weight, bias, stride=layer.stride, padding=layer.padding)
                current = current.unsqueeze(-1).expand(*current.shape, timesteps)
            else:
                folded = h.permute(0, 4, 1, 2, 3).flatten(0, 1)
                current = F.conv2d(folded, weight, bias, stride=layer.stride, padding=layer.padding)
                current = current.view(-1, timesteps, *current.shape[1:]).permute(0, 2, 3, 4, 1)
        else:
            if h.dim() == 5:
                h = h.flatten(1, 3)
            current = (h.transpose(1, 2) @ weight.T + bias).transpose(1, 2)
        if layer.neuron is None:
            return current.mean(-1) / layer.scale
        threshold = layer.neuron.threshold * layer.scale
        if quantized:
            threshold = int(threshold * fx.WEIGHT_SCALE) / fx.WEIGHT_SCALE
        decay = layer.neuron.effective_decay().detach()
        u = torch.zeros_like(current[..., 0])
        spikes = []
        for t in range(timesteps):
            v = decay[t] * u + current[..., t]
            s = (v > threshold).float()
            u = v * (1 - s)
            spikes.append(s)
        h = torch.stack(spikes, -1)
    raise AssertionError("the folded network has no readout")


def layer_arrays(layer: FoldedLayer) -> dict:
    """HDF5 datasets of one layer in stock NetX's keys (chip integers)."""
    weight = torch.round(layer.weight * layer.scale * fx.WEIGHT_SCALE / 2) * 2
    data = {"weight": weight.clamp(-256, 254).numpy().astype(np.int32),
            "bias": torch.round(layer.bias * layer.scale * fx.WEIGHT_SCALE).numpy().astype(np.int32)}
    if layer.kind == "conv":
        data.update({"type": [b"conv"], "shape": np.array(layer.out_shape), "inChannels": weight.shape[1],
                     "outChannels": weight.shape[0], "kernelSize": np.array(weight.shape[2:]),
                     "stride": np.array([layer.stride] * 2), "padding": np.array([layer.padding] * 2),
                     "dilation": np.array([1, 1]), "groups": 1})
    else:
        data.update({"type": [b"dense"], "shape": np.array(layer.out_shape), "inFeatures": weight.shape[1],
                     "outFeatures": weight.shape[0]})
    return data
