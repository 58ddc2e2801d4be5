"""Float model vs on-chip model on the same (clean or attacked) inputs."""
from __future__ import annotations

import time

import numpy as np
import torch

from loihi_stable.attacks import PGD, make_attack
from loihi_stable.data import checkpoint_test_split
from loihi_stable.errors import UserError

from netx_export.backends import run_on
from netx_export.chip_model import grid_model
from netx_export.export import check_spec_matches, model_from_checkpoint
from netx_export.lava_runner import NetSpec, resolve_dlif_schedule

ATTACKS = ("none", "fgsm", "pgd", "apgd-ce", "apgd-dlr", "gaussian")
CRAFTING = ("chip-aware", "from-float")


def craft(model, attack: str, x: torch.Tensor, y: torch.Tensor, eps: float, crafting: str = "chip-aware",
          seed: int = 0) -> torch.Tensor:
    """Adversarial inputs through the surrogate gradient of ``model``.

    chip-aware: on the grid model (values bit-exact to the chip), straight-through the quantizers;
    from-float: on the same weights in float arithmetic: a check of what
    quantization does to an attack, not a transfer from another model.
    """
    if attack not in ATTACKS[1:]:
        raise UserError(f"unknown attack '{attack}': choose one of {', '.join(ATTACKS)}")
    if crafting not in CRAFTING:
        raise UserError(f"unknown crafting '{crafting}': choose one of {', '.join(CRAFTING)}")
    atk = (PGD(model, eps=eps, alpha=max(eps / 4, 1 / 255), steps=10, seed=seed) if attack == "pgd"
           else make_attack(attack, model, eps)[1])
    if crafting == "from-float":
        with model.arithmetic("float"):
            return atk(x, y)
    return atk(x, y)


def compare(spec: NetSpec, backend: str, attack: str = "none", eps: float = 8 / 255,
            limit: int | None = None, progress: bool = True, dlif_schedule: str | None = None,
            data_root: str | None = None) -> dict:
    """Accuracy of the three versions of the network, and how often grid and chip agree, per input set.

    Versions: float (the trained weights in plain float), grid (the torch model on the chip's
    integers: the QAT model, or the file's ChipModel for conv networks), chip (Lava or the
    emulator). Input sets: clean, the attack crafted chip-aware on the grid model (named after
    the attack) and, for gradient attacks, crafted on the float version ("<attack>-from-float").
    """
    if attack not in ATTACKS:
        raise UserError(f"unknown attack '{attack}': choose one of {', '.join(ATTACKS)}")
    if not 0.0 <= eps <= 1.0:
        raise UserError(f"eps must be in [0, 1], got {eps}: write it on the /255 scale, e.g. 8/255")
    model = model_from_checkpoint(spec.checkpoint)
    check_spec_matches(spec, model, spec.checkpoint)
    grid = grid_model(spec, model)
    test = checkpoint_test_split(spec.checkpoint, data_root, limit)
    sets = {"clean": test.x}
    if attack != "none":
        sets[attack] = craft(grid, attack, test.x, test.y, eps, "chip-aware")
        if attack != "gaussian":
            sets[f"{attack}-from-float"] = craft(model, attack, test.x, test.y, eps, "from-float")
    start = time.perf_counter()
    inputs = torch.cat(list(sets.values()))
    chip = run_on(spec, inputs.numpy(), backend, progress=progress, dlif_schedule=dlif_schedule).predictions
    chip_seconds = time.perf_counter() - start
    with torch.no_grad():
        grids = grid(inputs).argmax(1).numpy()
        with model.arithmetic("float"):
            floats = model(inputs).argmax(1).numpy()
    y = test.y.numpy()
    results, n = {}, len(test)
    for i, name in enumerate(sets):
        part = slice(i * n, (i + 1) * n)
        f, g, c = floats[part], grids[part], chip[part]
        results[name] = {"accuracy_float": float(np.mean(f == y)), "accuracy_grid": float(np.mean(g == y)),
                         "accuracy_chip": float(np.mean(c == y)), "agreement": float(np.mean(g == c))}
    headline = results[attack if attack != "none" else "clean"]
    return {**headline, "n": n, "backend": backend, "attack": attack, "eps": eps,
            "eps_255": round(eps * 255, 4), "timesteps": spec.timesteps, "neuron": spec.neuron,
            "dataset": spec.dataset,
            "dlif_schedule": ("n/a" if spec.neuron != "dlif" or backend == "emulator"
                              else resolve_dlif_schedule(backend, dlif_schedule)),
            "chip_samples_per_second": len(inputs) / chip_seconds, "results": results}
