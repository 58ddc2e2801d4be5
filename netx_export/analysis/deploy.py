"""Float model vs on-chip model on the same (clean or attacked) inputs."""
from __future__ import annotations

import time

import numpy as np
import torch

from loihi_stable import guards, sharding
from loihi_stable.attacks import SUITES, Square, load_suite
from loihi_stable.budget import check_eps
from loihi_stable.evaluation import CRAFT_BATCH, build_attacks, merge_contributions, surrogate_notes, worst_case_inputs
from loihi_stable.data import Split, checkpoint_test_split
from loihi_stable.errors import UserError

from netx_export.runtime.backends import run_on
from netx_export.analysis.chip_model import grid_model
from netx_export.runtime.emulator import Emulator
from netx_export.compiler.export import check_spec_matches, model_from_checkpoint
from netx_export.runtime.lava_runner import resolve_dlif_schedule
from netx_export.fileformat.netx_file import NetSpec

ATTACKS = ("none", "snn-adaptive", "autoattack", "fast", "fgsm", "pgd", "apgd-ce", "apgd-dlr", "apgd-t", "square", "gaussian",
           "adaptive")
CRAFTING = ("chip-aware", "from-float")


def craft(model, attack: str, x: torch.Tensor, y: torch.Tensor, eps: float, crafting: str = "chip-aware",
          report: dict | None = None, progress: bool = False, batch_size: int = CRAFT_BATCH) -> torch.Tensor:
    """Adversarial inputs for ``model``: one attack of the registry (``pgd`` is pgd10, the same
    attack as ``eval``'s), or a suite's cascade, the worst case per sample.

    chip-aware: on the grid model (values bit-exact to the chip), straight-through the quantizers;
    from-float: on the same weights in float arithmetic: a check of what quantization does to an
    attack, not a transfer from another model (``transfer_from`` is that).
    """
    if attack not in ATTACKS[1:]:
        raise UserError(f"unknown attack '{attack}': choose one of {', '.join(ATTACKS)}")
    guards.choice("crafting", crafting, CRAFTING)
    specs = load_suite(attack) if attack in SUITES else ["pgd10" if attack == "pgd" else attack]
    attacks = build_attacks(model, specs, eps)
    device = model_device(model)  # the attack runs where the model is; the chip takes CPU inputs
    x, y = x.to(device), y.to(device)
    options = {"report": report, "progress": progress, "desc": f"craft {attack} ({crafting})", "batch_size": batch_size}
    if crafting == "from-float":
        with model.arithmetic("float"):
            return worst_case_inputs(model, attacks, x, y, **options).cpu()
    return worst_case_inputs(model, attacks, x, y, **options).cpu()


def model_device(model: torch.nn.Module) -> torch.device:
    return next(iter([*model.parameters(), *model.buffers()]), torch.empty(0)).device


def square_on_chip(spec: NetSpec, x: torch.Tensor, y: torch.Tensor, eps: float, queries: int,
                   progress: bool = False) -> torch.Tensor:
    """Square run against the chip itself (the emulator, bit-exact to Loihi2SimCfg): logits only,
    no model, no gradient; the check that the white-box attacks are not fooled by the surrogate."""
    chip = Emulator(spec)

    def chip_logits(images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(chip(images.reshape(len(images), -1).numpy()).readout).double()

    square = Square(None, eps=eps, n_queries=queries, logits=chip_logits)
    square.progress = "square on chip" if progress else ""
    return square.perturb(x, y, None)


CHIP_SQUARE_QUERIES = (5000, 5000)  # dense, conv: each query is one emulator pass over the robust samples


def compare(spec: NetSpec, backend: str, attack: str = "none", eps: float = 8 / 255,
            limit: int | None = None, progress: bool = True, dlif_schedule: str | None = None,
            data_root: str | None = None, transfer_from=None, device: str | torch.device = "cpu",
            batch_size: int = CRAFT_BATCH) -> dict:
    """Accuracy of the three versions of the network, and how often grid and chip agree, per input set.

    Versions: float (the trained weights in plain float), grid (the torch model on the chip's
    integers: the QAT model, or the file's ChipModel for conv networks), chip (Lava or the
    emulator). Input sets: clean, the attack (or a suite's cascade) crafted chip-aware on the grid
    model (named after it), crafted on the float version ("<attack>-from-float"), on an independently
    trained model (``transfer_from``: "<attack>-transfer") and, for suites, Square against the chip
    itself ("square<q>-on-chip", query-only). ``robust`` is the chip's worst case per sample over
    every set; ``robust_float`` and ``robust_grid`` the same for the other two versions. The float
    and grid models and their attacks run on ``device``; the chip and Square against it on the CPU.
    Batches of ``batch_size`` samples are the unit of crafting, shared out under torchrun (``sharding``),
    and each process runs all its batches on the chip at once (Lava starts once, not per batch): every
    per-sample result is the one a single process computes.
    """
    guards.choice("attack", attack, ATTACKS)
    eps = check_eps(eps, error=UserError)
    model, grid = _versions(spec, device)
    if transfer_from is not None:
        transfer_from = transfer_from.to(device)
    test = checkpoint_test_split(spec.checkpoint, data_root, limit)
    progress = progress and sharding.is_main()

    def one_batch(batch: slice) -> dict:
        sets, crafted = input_sets(spec, model, grid, Split(test.x[batch], test.y[batch]), attack, eps,
                                   transfer_from, progress, batch_size)
        return {"sets": sets, "crafted": crafted}

    def predict_share(parts: list[dict]) -> list[dict]:  # one chip run for all of this process's batches
        inputs = [torch.cat(list(p["sets"].values())) for p in parts]
        predictions, seconds = _predict(spec, model, grid, torch.cat(inputs), backend, dlif_schedule, device,
                                        progress)
        sizes = [len(i) for i in inputs]
        split = {version: np.split(p, np.cumsum(sizes)[:-1]) for version, p in predictions.items()}
        return [{"sets": list(p["sets"]), "crafted": p["crafted"], "chip_seconds": seconds * size / sum(sizes),
                 "predictions": {version: split[version][k] for version in split}}
                for k, (p, size) in enumerate(zip(parts, sizes))]

    parts = sharding.map_batches(len(test), batch_size, one_batch, then=predict_share)
    sets = parts[0]["sets"]
    predictions = {version: np.concatenate([p["predictions"][version].reshape(len(sets), -1) for p in parts],
                                           axis=1).reshape(-1) for version in parts[0]["predictions"]}
    crafted = {name: merge_contributions([p["crafted"][name] for p in parts]) for name in parts[0]["crafted"]}
    chip_seconds = sum(p["chip_seconds"] for p in parts)  # summed over processes: per-process throughput
    results, worst = _score(sets, predictions, test.y.numpy())
    return {**results[attack if attack != "none" else "clean"], **worst, "robust": worst["robust_chip"],
            "diagnostics": _masking_notes(crafted, sets, attack, predictions["chip"], test.y.numpy()),
            "sets": sets, "n": len(test), "backend": backend, "attack": attack, "eps": eps,
            "eps_255": round(eps * 255, 4), "timesteps": spec.timesteps, "neuron": spec.neuron,
            "dataset": spec.dataset,
            "dlif_schedule": ("n/a" if spec.neuron != "dlif" or backend == "emulator"
                              else resolve_dlif_schedule(backend, dlif_schedule)),
            "chip_samples_per_second": len(sets) * len(test) / chip_seconds, "chip_seconds": chip_seconds,
            "contributions": crafted, "results": results}


def _versions(spec: NetSpec, device) -> tuple[torch.nn.Module, torch.nn.Module]:
    """The float model of the file's checkpoint (checked against the file) and its grid model, on ``device``."""
    model = model_from_checkpoint(spec.checkpoint)
    check_spec_matches(spec, model, spec.checkpoint)
    model = model.to(device)
    return model, grid_model(spec, model).to(device)


def input_sets(spec: NetSpec, model, grid, test, attack: str, eps: float, transfer_from=None,
               progress: bool = False, batch_size: int = CRAFT_BATCH) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """The named input sets of ``compare`` (clean first), and per crafted set each attack's contribution."""
    sets = {"clean": test.x}
    crafted: dict[str, dict] = {}
    if attack == "none":
        return sets, crafted
    sets[attack] = craft(grid, attack, test.x, test.y, eps, "chip-aware", report=crafted.setdefault(attack, {}),
                         progress=progress, batch_size=batch_size)
    if attack != "gaussian":
        sets[f"{attack}-from-float"] = craft(model, attack, test.x, test.y, eps, "from-float",
                                             report=crafted.setdefault(f"{attack}-from-float", {}), progress=progress,
                                             batch_size=batch_size)
    if transfer_from is not None:
        sets[f"{attack}-transfer"] = craft(transfer_from, attack, test.x, test.y, eps, "chip-aware",
                                           batch_size=batch_size)
    if attack in SUITES:
        square = next(a for a in build_attacks(grid, load_suite(attack), eps).values() if isinstance(a, Square))
        queries = min(square.n_queries, CHIP_SQUARE_QUERIES[spec.arch != "mlp"])
        sets[f"square{queries}-on-chip"] = square_on_chip(spec, test.x, test.y, eps, queries, progress)
    return sets, crafted


def _predict(spec: NetSpec, model, grid, inputs: torch.Tensor, backend: str, dlif_schedule, device,
             progress: bool) -> tuple[dict[str, np.ndarray], float]:
    """Predicted classes of ``inputs`` per version (float, grid, chip); the chip's seconds."""
    start = time.perf_counter()
    chip = run_on(spec, inputs.numpy(), backend, progress=progress, dlif_schedule=dlif_schedule).predictions
    chip_seconds = time.perf_counter() - start
    with torch.no_grad():
        on_device = inputs.to(device)
        grids = grid(on_device).argmax(1).cpu().numpy()
        with model.arithmetic("float"):
            floats = model(on_device).argmax(1).cpu().numpy()
    return {"float": floats, "grid": grids, "chip": chip}, chip_seconds


def _score(sets: dict, predictions: dict[str, np.ndarray], y: np.ndarray) -> tuple[dict, dict]:
    """Per set each version's accuracy and grid-chip agreement; per version the worst case over all sets."""
    results, n = {}, len(y)
    for i, name in enumerate(sets):
        f, g, c = (predictions[v][i * n:(i + 1) * n] for v in ("float", "grid", "chip"))
        results[name] = {"accuracy_float": float(np.mean(f == y)), "accuracy_grid": float(np.mean(g == y)),
                         "accuracy_chip": float(np.mean(c == y)), "agreement": float(np.mean(g == c))}
    worst = {f"robust_{version}": float((p.reshape(len(sets), n) == y).all(0).mean())  # clean and every attack
             for version, p in predictions.items()}
    return results, worst


def _masking_notes(crafted: dict, sets: dict, attack: str, chip: np.ndarray, y: np.ndarray) -> list[str]:
    """What the surrogate search found, and whether Square on the chip broke what the white-box suite missed."""
    notes = [f"{name} (crafted on the {'float' if name.endswith('-from-float') else 'grid'} model): {note}"
             for name, report in crafted.items() for note in surrogate_notes(report)]
    square_set = next((name for name in sets if name.endswith("-on-chip")), None)
    if square_set:
        by_set = chip.reshape(len(sets), len(y)) == y
        missed = int((by_set[list(sets).index(attack)] & ~by_set[list(sets).index(square_set)]).sum())
        if missed:
            notes.append(f"Square against the chip (query-only) broke {missed} sample(s) the white-box suite "
                         "missed: gradients may be masked; trust the worst case")
    return notes
