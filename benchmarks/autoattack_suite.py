"""Our autoattack suite vs the original AutoAttack code (pyautoattack 0.2.0, version 'standard'):
robust accuracy (worst case per sample) and seconds on the same model, samples and eps, as a ratio.

    python benchmarks/autoattack_suite.py model.pt [--eps 8,16,32] [--limit 360] [--data-root DIR] [--json out.json]
"""
from __future__ import annotations

import time

import torch

import loihi_stable  # noqa: F401
from loihi_stable import script_args
from loihi_stable.allocator import keep_freed_memory
from loihi_stable.attacks import load_suite
from loihi_stable.data import checkpoint_test_split
from loihi_stable.evaluation import build_attacks, evaluate
from loihi_stable.io import load_checkpoint
from loihi_stable.report import table
from netx_export.compiler.export import model_from_checkpoint


class Images(torch.nn.Module):
    """The original code takes (N, C, H, W); our MLPs take flat vectors."""

    def __init__(self, inner, shape):
        super().__init__()
        self.inner, self.shape = inner, shape

    def forward(self, images):
        return self.inner(images.reshape(len(images), *self.shape))


def main() -> None:
    args = script_args.parse(__doc__, {"eps": ("8,16,32", "values on the /255 scale"), "limit": None, "data_root": None,
                                       "json": None}, positional={"checkpoint": (None, "the checkpoint to attack")},
                             types={"limit": int})
    from pyautoattack import AutoAttack
    keep_freed_memory()  # as every command does (cli.friendly_errors)

    payload = load_checkpoint(args.checkpoint)
    model = model_from_checkpoint(payload)
    test = checkpoint_test_split(payload, args.data_root, args.limit)
    shape = tuple(test.x.shape[1:])
    side = int(round(torch.tensor(shape).prod().item() ** 0.5))
    images = test.x.reshape(len(test), 1, side, side) if len(shape) == 1 else test.x
    net = Images(model, shape).eval()
    rows, records = [], []
    for eps255 in [float(v) for v in args.eps.split(",")]:
        eps = eps255 / 255
        start = time.perf_counter()
        ours = evaluate(model, test, build_attacks(model, load_suite("autoattack"), eps), progress=False, cascade=True)
        ours_s = time.perf_counter() - start
        start = time.perf_counter()
        adv, _ = AutoAttack(net, norm="Linf", eps=eps, version="standard", device="cpu", seed=0) \
            .run_standard_evaluation(images, test.y, batch_size=512)
        theirs_s = time.perf_counter() - start
        with torch.no_grad():
            theirs = (net(adv).argmax(1) == test.y).float().mean().item()
        rows.append([f"{eps255:g}/255", f"{100 * ours['robust']:.2f}", f"{100 * theirs:.2f}",
                     f"{100 * (ours['robust'] - theirs):+.2f}", f"{ours_s:.1f}", f"{theirs_s:.1f}", f"{theirs_s / ours_s:.2f}x"])
        records.append({"eps_255": eps255, "robust_ours": ours["robust"], "robust_pyautoattack": theirs,
                        "seconds_ours": ours_s, "seconds_pyautoattack": theirs_s, "columns_ours": {
                            k: v for k, v in ours.items() if isinstance(v, float)}})
    print(f"{args.checkpoint}: {len(test)} test samples, clean {100 * ours['clean']:.2f}%")
    print(table(["eps", "ours robust %", "AutoAttack robust %", "difference", "ours s", "AutoAttack s", "speed-up"], rows))
    if args.json:
        from loihi_stable.io import write_json
        write_json(args.json, {"checkpoint": args.checkpoint, "n": len(test), "rows": records})


if __name__ == "__main__":
    main()
