"""Convolutional SNNs from the paper's protocol: VGG5, VGG11, WRN16-4 and small CPU-sized nets.

Tensors are slayer-shaped (B, C, H, W, T). A synapse folds time into the batch (one big
conv2d / BatchNorm2d per layer, statistics shared over time as in the authors' code), the
LIF/DLIF neuron then runs its T steps. With direct encoding the first conv sees the same
image at every step, so it runs once and is broadcast over T. Normalisation is the model's
first operation; inputs stay in [0, 1].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .blocks import make_neuron
from .classifier import SpikingClassifier

VGG_LAYOUTS = {
    "vgg5": ([64, "A", 128, 128, "A"], [1024]),
    "vgg11": ([64, "A", 128, 256, "A", 512, 512, 512, "A", 512, 512], [4096, 4096]),
    "convnet": ([16, "A", 32, "A"], [128]),        # 28x28 (mnist5k, fashion-mnist) on a CPU
    "convnet-s": ([16, 32, "A"], [64]),            # 8x8 digits
}
ARCHS = ("mlp", *VGG_LAYOUTS, "wrn16-4")


def fold(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W, T) -> (T*B, C, H, W), time-major: a free view of what the neurons return."""
    return x.permute(4, 0, 1, 2, 3).reshape(-1, *x.shape[1:4])


def unfold(x: torch.Tensor, steps: int) -> torch.Tensor:
    """(T*B, C, H, W) -> (B, C, H, W, T), a view."""
    return x.reshape(steps, -1, *x.shape[1:]).permute(1, 2, 3, 4, 0)


def conv_neuron(config):
    """A LIF/DLIF for conv networks: plain float updates (they are quantized only at export)."""
    neuron = make_neuron(config)
    neuron.arithmetic = "quantized"
    return neuron


class Normalize(torch.nn.Module):
    def __init__(self, mean, std):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x):
        return (x - self.mean) / self.std


class ConvBN(torch.nn.Module):
    """Conv3x3 (bias) -> BatchNorm on every time step: the synapse of a spiking conv layer.

    With ``normalize`` (the first layer) the image is zero-padded in pixels, then normalised,
    so that the normalisation folds into the conv exactly at export, border included.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1, bn: bool = True,
                 normalize: "Normalize | None" = None):
        super().__init__()
        self.normalize = normalize
        self.conv = torch.nn.Conv2d(c_in, c_out, 3, stride=stride, padding=0 if normalize else 1, bias=True)
        self.bn = torch.nn.BatchNorm2d(c_out) if bn else torch.nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalize is not None:
            x = self.normalize(F.pad(x, (1, 1, 1, 1)))
        return self.bn(self.conv(x))


class SpikingConv(torch.nn.Module):
    """ConvBN -> LIF/DLIF on (B, C, H, W, T); a static input (B, C, H, W) is computed once."""

    def __init__(self, neuron, c_in: int, c_out: int, normalize: "Normalize | None" = None):
        super().__init__()
        self.synapse = ConvBN(c_in, c_out, normalize=normalize)
        self.neuron = neuron

    def current(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        if x.dim() == 4:  # the same image at every step
            y = self.synapse(x)
            return y.unsqueeze(-1).expand(*y.shape, steps)
        return unfold(self.synapse(fold(x)), x.shape[-1])

    def forward(self, x: torch.Tensor, steps: int) -> torch.Tensor:
        return self.neuron(self.current(x, steps))


class SpikingLinear(torch.nn.Module):
    """Linear -> LIF/DLIF on (B, N, T)."""

    def __init__(self, neuron, n_in: int, n_out: int):
        super().__init__()
        self.synapse = torch.nn.Linear(n_in, n_out)
        self.neuron = neuron

    def current(self, x: torch.Tensor) -> torch.Tensor:
        return self.synapse(x.transpose(1, 2)).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.neuron(self.current(x))


def avg_pool(x: torch.Tensor) -> torch.Tensor:
    """2x2 average pooling of spikes (B, C, H, W, T) or a static image."""
    if x.dim() == 4:
        return F.avg_pool2d(x, 2)
    return unfold(F.avg_pool2d(fold(x), 2), x.shape[-1])


class SpikingVGG(SpikingClassifier):
    """VGG: [ConvBN -> LIF | AvgPool2d(2)]* -> [Linear -> LIF]* -> Linear (non-spiking, mean over T)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        convs, hidden = VGG_LAYOUTS[config.arch]
        c, h, w = config.input_shape
        normalize = Normalize(config.mean, config.std)
        self.features = torch.nn.ModuleList()
        self.layout = []
        for item in convs:
            if item == "A":
                self.layout.append("A")
                h, w = h // 2, w // 2
                continue
            self.features.append(SpikingConv(conv_neuron(self.config), c, item, normalize if not self.features else None))
            self.layout.append(len(self.features) - 1)
            c = item
        sizes = [c * h * w, *hidden]
        self.classifier = torch.nn.ModuleList(SpikingLinear(conv_neuron(self.config), a, b) for a, b in zip(sizes[:-1], sizes[1:]))
        self.readout = torch.nn.Linear(sizes[-1], config.classes)

    @property
    def spiking_neurons(self):
        return [b.neuron for b in (*self.features, *self.classifier)]

    def forward_time(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.config.timesteps
        h = x.reshape(-1, *self.config.input_shape)
        current = None
        for item in self.layout:
            if item == "A":
                h = avg_pool(h)
            else:
                block = self.features[item]
                current = block.current(h, steps)
                h = block.neuron(current)
        h = h.flatten(1, 3)
        for block in self.classifier:
            current = block.current(h)
            h = block.neuron(current)
        return self.readout(h.transpose(1, 2)).transpose(1, 2), current


class ConvexMerge(torch.nn.Module):
    """out = w0 * shortcut + w1 * branch with (w0, w1) on the simplex (SNN-RAT's residual merge)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.tensor([0.5, 0.5]))

    def forward(self, shortcut: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        return self.weight[0] * shortcut + self.weight[1] * branch


class PreActBlock(torch.nn.Module):
    """BN -> LIF -> conv, twice, added to an analog residual stream by a convex combination."""

    def __init__(self, make_neuron_, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.neuron1 = torch.nn.BatchNorm2d(c_in), make_neuron_()
        self.conv1 = torch.nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.neuron2 = torch.nn.BatchNorm2d(c_out), make_neuron_()
        self.conv2 = torch.nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.shortcut = (torch.nn.Conv2d(c_in, c_out, 1, stride, bias=False)
                         if stride != 1 or c_in != c_out else torch.nn.Identity())
        self.merge = ConvexMerge()

    def forward(self, x: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
        """x: analog (B*T, C, H, W); returns the new stream and the last neuron's input current."""
        current1 = unfold(self.bn1(x), steps)
        s = fold(self.neuron1(current1))
        branch = self.conv1(s)
        current2 = unfold(self.bn2(branch), steps)
        branch = self.conv2(fold(self.neuron2(current2)))
        return self.merge(self.shortcut(x), branch), current2


class SpikingWRN(SpikingClassifier):
    """WRN16-4 (pre-activation, analog residual stream): not exportable to Loihi."""

    def __init__(self, config, depth: int = 16, width: int = 4):
        super().__init__()
        self.config = config
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        make = lambda: conv_neuron(config)  # noqa: E731
        self.normalize = Normalize(config.mean, config.std)
        self.stem = torch.nn.Conv2d(config.input_shape[0], widths[0], 3, 1, 1, bias=False)
        blocks, c = [], widths[0]
        for stage, out in enumerate(widths[1:]):
            for i in range(n):
                blocks.append(PreActBlock(make, c, out, 2 if (stage > 0 and i == 0) else 1))
                c = out
        self.blocks = torch.nn.ModuleList(blocks)
        self.bn, self.neuron = torch.nn.BatchNorm2d(c), make()
        self.readout = torch.nn.Linear(c, config.classes)

    @property
    def spiking_neurons(self):
        return [n for b in self.blocks for n in (b.neuron1, b.neuron2)] + [self.neuron]

    def forward_time(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        steps = self.config.timesteps
        h = self.stem(self.normalize(x.reshape(-1, *self.config.input_shape)))
        h = h.unsqueeze(0).expand(steps, *h.shape).reshape(-1, *h.shape[1:])
        for block in self.blocks:
            h, _ = block(h, steps)
        current = unfold(self.bn(h), steps)
        s = self.neuron(current)                                  # (B, C, H, W, T)
        pooled = s.mean((2, 3))                                   # (B, C, T)
        return self.readout(pooled.transpose(1, 2)).transpose(1, 2), current
