"""Training throughput (samples/s): loihi-stable's DLIF networks vs a straightforward per-time-step
loop of the same network in plain torch (the structure of the authors' reference code), as a ratio.

    python benchmarks/training_throughput.py [--batch 64] [--iters 6] [--device cpu|cuda]

The reference copies our weights and runs, for each t: synapse -> (BatchNorm) -> neuron
update through autograd. Numerics are checked first (eval-mode logits and the gradients of
one backward pass must match) and printed with the table. Ours folds time into the batch
for every synapse, computes the first conv once (the image is the same at every step) and
runs the neuron's T steps with a hand-written BPTT (``neurons.FusedDynamics``).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F

import loihi_stable  # noqa: F401
from loihi_stable import script_args
from loihi_stable import fixed_point as fx
from loihi_stable.allocator import keep_freed_memory
from loihi_stable.convnets import SpikingVGG
from loihi_stable.models import ModelConfig, build_model
from loihi_stable.neurons import triangle_spike
from loihi_stable.report import table


class PerStepReference(torch.nn.Module):
    """The same network, one time step at a time (mem = d[t]*mem + I[t]; s = H(mem - th); reset)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def _neuron_step(self, neuron, current, mem, t):
        decay = neuron.effective_decay()
        if not torch.is_tensor(mem):
            mem = torch.zeros_like(current)
        v = decay[t] * mem + current
        if neuron.arithmetic == "chip":
            dv = fx.decay_to_dv(decay.detach())
            v = fx.ste(fx.chip_voltage_step(mem.detach(), dv[t], current.detach(), neuron.payload_scale), v)
        s = triangle_spike(v, neuron.threshold, neuron.surrogate_width)
        return s, v * (1 - s)

    def forward(self, x):
        m, steps = self.model, self.model.config.timesteps
        mems: dict[int, torch.Tensor] = {}
        logits = 0
        for t in range(steps):
            if isinstance(m, SpikingVGG):
                h, k = x.reshape(-1, *m.config.input_shape), 0
                for item in m.layout:
                    if item == "A":
                        h = F.avg_pool2d(h, 2)
                        continue
                    block = m.features[item]
                    h, mems[k] = self._neuron_step(block.neuron, block.synapse(h), mems.get(k, 0), t)
                    k += 1
                h = h.flatten(1)
                for block in m.classifier:
                    h, mems[k] = self._neuron_step(block.neuron, block.synapse(h), mems.get(k, 0), t)
                    k += 1
                logits = logits + m.readout(h)
            else:
                h = m.encode(x)[..., 0]
                for k, block in enumerate(m.blocks):
                    current = block.current(h.unsqueeze(-1))[..., 0]
                    h, mems[k] = self._neuron_step(block.neuron, current, mems.get(k, 0), t)
                logits = logits + m.readout(h.unsqueeze(-1))[..., 0]
        return logits / steps


def check_numerics(model, reference, x, y) -> float:
    """Largest difference of logits (eval) and of parameter gradients between the two."""
    model.eval()
    worst = 0.0
    with torch.no_grad():
        worst = max(worst, float((model(x) - reference(x)).abs().max()))
    grads = []
    for net in (model, reference):
        model.zero_grad()
        F.cross_entropy(net(x), y).backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    for a, b in zip(*grads):
        worst = max(worst, float((a - b).abs().max() / (b.abs().max() + 1e-12)))
    model.zero_grad()
    return worst


def throughput(net, params, x, y, iters: int) -> float:
    optimizer = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    net.train()
    times = []
    for i in range(iters + 1):
        start = time.perf_counter()
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if x.is_cuda:
            torch.cuda.synchronize()
        if i:  # the first iteration warms up
            times.append(time.perf_counter() - start)
    return len(x) / sorted(times)[len(times) // 2]


def main() -> None:
    args = script_args.parse(__doc__, {"batch": 64, "iters": 6, "device": "cpu", "nets": "mlp,convnet,vgg5",
                                       "system_allocator": (False, "leave glibc's mmap policy alone (what `train` "
                                                                   "changes with allocator.keep_freed_memory)")})
    cached = False if args.system_allocator else keep_freed_memory()
    nets = {"mlp": ModelConfig(in_features=784, hidden=[256, 128]),
            "convnet": ModelConfig(arch="convnet", input_shape=[1, 28, 28]),
            "vgg5": ModelConfig(arch="vgg5", input_shape=[3, 32, 32], mean=[0.49, 0.48, 0.45], std=[0.2] * 3),
            "vgg11": ModelConfig(arch="vgg11", input_shape=[3, 32, 32], mean=[0.49, 0.48, 0.45], std=[0.2] * 3)}
    rows = []
    for name in args.nets.split(","):
        torch.manual_seed(0)
        config = nets[name]
        model = build_model(config).to(args.device)
        shape = config.input_shape or [config.in_features]
        x = torch.rand(args.batch, *shape, device=args.device)
        y = torch.randint(0, 10, (args.batch,), device=args.device)
        reference = PerStepReference(model)
        error = check_numerics(model, reference, x[:16], y[:16])
        ours = throughput(model, model.parameters(), x, y, args.iters)
        theirs = throughput(reference, model.parameters(), x, y, args.iters)
        rows.append([f"DLIF {name}", f"{ours:.1f}", f"{theirs:.1f}", f"{ours / theirs:.2f}x", f"{error:.1e}"])
    print(f"training throughput, batch {args.batch}, T=8, {args.device}, {torch.get_num_threads()} threads "
          f"(median of the iterations after a warm-up; freed memory kept for reuse: {cached})")
    print(table(["network", "ours (samples/s)", "per-step loop (samples/s)", "ratio", "max numeric diff"], rows))


if __name__ == "__main__":
    main()
