"""Float model vs on-chip model on the same (clean or attacked) inputs."""
from __future__ import annotations

import time

import numpy as np
import torch

from loihi_stable.attacks import PGD
from loihi_stable.data import load_dataset
from loihi_stable.errors import UserError

from netx_export.export import model_from_checkpoint
from netx_export.lava_runner import NetSpec, run_network

ATTACKS = ("none", "pgd")


def craft(model, attack: str, x: torch.Tensor, y: torch.Tensor, eps: float, seed: int = 0) -> torch.Tensor:
    """Adversarial inputs crafted on the float model through the surrogate gradient."""
    if attack == "pgd":
        return PGD(model, eps=eps, alpha=max(eps / 4, 1 / 255), steps=10, seed=seed)(x, y)
    raise UserError(f"unknown attack '{attack}': choose one of {', '.join(ATTACKS)}")


def compare(spec: NetSpec, backend: str, attack: str = "none", eps: float = 8 / 255,
            limit: int | None = None, progress: bool = True) -> dict:
    """Accuracy of the float model and the chip, and how often they agree, per input set."""
    if attack not in ATTACKS:
        raise UserError(f"unknown attack '{attack}': choose one of {', '.join(ATTACKS)}")
    if not 0.0 <= eps <= 1.0:
        raise UserError(f"eps must be in [0, 1], got {eps}: write it on the /255 scale, e.g. 8/255")
    model = model_from_checkpoint(spec.checkpoint)
    _, test = load_dataset(spec.dataset)
    test = test.head(limit)
    sets = {"clean": test.x}
    if attack != "none":
        sets[attack] = craft(model, attack, test.x, test.y, eps)
    start = time.perf_counter()
    inputs = torch.cat(list(sets.values()))
    chip = run_network(spec, inputs.numpy(), backend=backend, progress=progress).predictions
    chip_seconds = time.perf_counter() - start
    with torch.no_grad():
        floats = model(inputs).argmax(1).numpy()
    y = test.y.numpy()
    results, n = {}, len(test)
    for i, name in enumerate(sets):
        f, c = floats[i * n:(i + 1) * n], chip[i * n:(i + 1) * n]
        results[name] = {"accuracy_float": float(np.mean(f == y)), "accuracy_chip": float(np.mean(c == y)),
                         "agreement": float(np.mean(f == c))}
    headline = results[attack if attack != "none" else "clean"]
    return {**headline, "n": n, "backend": backend, "attack": attack, "eps": eps,
            "eps_255": round(eps * 255, 4), "timesteps": spec.timesteps, "neuron": spec.neuron,
            "dataset": spec.dataset, "dlif_schedule": "exact" if spec.neuron == "dlif" else "n/a",
            "chip_samples_per_second": len(inputs) / chip_seconds, "results": results}
