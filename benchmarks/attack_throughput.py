"""Attack throughput (images/s): loihi-stable vs torchattacks 3.5.1 on the same SNN, as a ratio.

    python benchmarks/attack_throughput.py [model.pt] [--repeats 3]

Without a checkpoint it trains the default digits model for 5 epochs first. Each cell
is the best of ``--repeats`` runs over the whole digits test set (360 images).
"""
from __future__ import annotations

import time

import torch

import loihi_stable  # noqa: F401
from loihi_stable import script_args
from loihi_stable.attacks import APGD, PGD
from loihi_stable.data import load_dataset
from loihi_stable.io import load_checkpoint
from loihi_stable.models import ModelConfig, build_model
from loihi_stable.training import TrainConfig, train
from netx_export.compiler.export import model_from_checkpoint


def best_rate(attack, x, y, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        attack(x, y)
        times.append(time.perf_counter() - start)
    return len(x) / min(times)


def main() -> None:
    import torchattacks

    args = script_args.parse(__doc__, {"repeats": 3}, positional={"checkpoint": ("?", "a checkpoint (default: train one)")})
    train_set, test = load_dataset("digits")
    if args.checkpoint:
        model = model_from_checkpoint(load_checkpoint(args.checkpoint))
    else:
        torch.manual_seed(0)
        model = build_model(ModelConfig())
        train(model, train_set, TrainConfig(epochs=5), progress=False)
    model.eval()
    x, y = test.x.reshape(-1, 1, 8, 8), test.y
    eps = 8 / 255
    pairs = {
        "PGD-10": (PGD(model, eps=eps, alpha=2 / 255, steps=10),
                   torchattacks.PGD(model, eps=eps, alpha=2 / 255, steps=10)),
        "APGD-CE": (APGD(model, eps=eps, steps=10, loss="ce"),
                    torchattacks.APGD(model, eps=eps, steps=10, loss="ce")),
    }
    rows = []
    for name, (ours, theirs) in pairs.items():
        r_ours, r_theirs = best_rate(ours, x, y, args.repeats), best_rate(theirs, x, y, args.repeats)
        rows.append([name, f"{r_ours:.0f}", f"{r_theirs:.0f}", f"{r_ours / r_theirs:.2f}x"])
    script_args.print_table(f"attack throughput on {len(x)} digits test images, eps 8/255, torch threads="
                            f"{torch.get_num_threads()}", ["attack", "loihi-stable img/s", "torchattacks img/s", "ratio"], rows)


if __name__ == "__main__":
    main()
