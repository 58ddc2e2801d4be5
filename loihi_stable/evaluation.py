"""Robust accuracy under a suite of attacks, with per-layer perturbation metrics."""
from __future__ import annotations

import torch

from . import sharding
from .progress import progress_bar

from .attacks import APGD, PGD, Square, make_attack
from .data import Split
from .metrics import layer_metrics, record


def evaluate(model, data: Split, attacks: dict, batch_size: int = 512, progress: bool = True,
             cascade: bool = False) -> dict:
    """``attacks`` maps names to callables ``atk(images, labels)`` (ours or torchattacks').

    Returns {"clean": acc, name: acc, ..., "robust": worst case per sample, "layers": {...}}.
    Each attack runs on every sample and reports its own accuracy; with ``cascade`` (AutoAttack's
    protocol) each runs only on the samples all earlier ones left robust, and its entry is the
    accuracy after it. ``robust`` (a sample counts only if clean and every attack got it right)
    is the headline either way. Layer metrics are sample-weighted means over batches; in a
    cascade they are measured once, on the worst-case points (under "robust"). Under torchrun the
    batches are shared out (``sharding``): the result is the one a single process computes.
    """
    bar = progress_bar(total=sharding.share_size(len(data), batch_size) * (1 + len(attacks)), desc="eval",
                       unit="attack-batch", disable=not progress or not sharding.is_main())
    parts = sharding.map_batches(len(data), batch_size, lambda batch: _evaluate_batch(
        model, data.x[batch], data.y[batch], attacks, cascade, bar))
    bar.close()
    correct = dict.fromkeys(["clean", *attacks, "robust"], 0)
    sums: dict[str, list[dict]] = {}
    for part in parts:  # in batch order, as one process adds them
        for name, count in part["correct"].items():
            correct[name] += count
        for name, layers in part["layer_sums"].items():
            acc = sums.setdefault(name, [dict.fromkeys(m, 0.0) for m in layers])
            for total, layer in zip(acc, layers):
                for key, value in layer.items():
                    total[key] += value
    for name, attack in attacks.items():
        if hasattr(attack, "merge_summaries"):
            attack.merge_summaries([part["summaries"][name] for part in parts])
    n = max(len(data), 1)
    result = {name: count / n for name, count in correct.items()}
    if cascade:
        result["contributions"] = contributions(attacks, correct, len(data))
    result["layers"] = {name: [{k: v / n for k, v in layer.items()} for layer in layers]
                        for name, layers in sums.items()}
    result["n"] = len(data)
    return result


def _evaluate_batch(model, x: torch.Tensor, y: torch.Tensor, attacks: dict, cascade: bool, bar) -> dict:
    """One batch: correct counts per attack, per-layer metric sums (weighted by the batch size) and what
    stateful attacks (the surrogate search) report about this batch."""
    leak = model.config.leak
    correct = dict.fromkeys(["clean", *attacks, "robust"], 0)
    layer_sums: dict[str, list[dict]] = {}

    def add_layers(name, clean_layers, adv_layers):
        layer_sums[name] = [{k: v * len(y) for k, v in layer_metrics(c, a, leak).items()}
                            for c, a in zip(clean_layers, adv_layers)]

    for attack in attacks.values():
        if hasattr(attack, "reset_summary"):
            attack.reset_summary()
    logits, clean_layers = record(model, x)
    robust = logits.argmax(1) == y
    correct["clean"] += robust.sum().item()
    worst = x.clone()
    bar.update(1)
    for name, idx, adv, broken, newly in _attack_each(model, attacks, x, y, robust, cascade):
        bar.set_postfix(attack=name, refresh=False)
        worst[idx[newly]] = adv[newly]
        if cascade:
            correct[name] += (robust.sum() - newly.sum()).item()
        else:
            correct[name] += (~broken).sum().item()
            add_layers(name, clean_layers, record(model, adv)[1])
        bar.update(1)
    correct["robust"] += robust.sum().item()
    if cascade:
        add_layers("robust", clean_layers, record(model, worst)[1])
    summaries = {name: attack.summary_part() for name, attack in attacks.items() if hasattr(attack, "summary_part")}
    return {"correct": correct, "layer_sums": layer_sums, "summaries": summaries}


def contributions(attacks: dict, correct: dict, n: int) -> dict:
    """Per attack of a cascade: the samples it broke that every earlier one left robust, and for a
    surrogate-adaptive attack what each backward broke (its search's choice)."""
    out, before = {}, correct["clean"]
    for name, attack in attacks.items():
        entry = {"newly_broken": before - correct[name]}
        if hasattr(attack, "summary"):
            entry.update(attack.summary())
        out[name], before = entry, correct[name]
    return out


def merge_contributions(parts: list[dict]) -> dict:
    """The ``contributions`` of one cascade run batch by batch (in batch order), as one call over all of them reports."""
    merged: dict = {}
    for part in parts:
        for name, entry in part.items():
            into = merged.setdefault(name, {**entry, "newly_broken": 0,
                                            **({"chosen": [], "broken": {}, "search": []} if "broken" in entry else {})})
            into["newly_broken"] += entry["newly_broken"]
            if "broken" in entry:  # a surrogate-adaptive attack: what each backward broke, what the searches chose
                into["chosen"] = list(dict.fromkeys(into["chosen"] + entry["chosen"]))
                for backward, count in entry["broken"].items():
                    into["broken"][backward] = into["broken"].get(backward, 0) + count
                into["search"] = into["search"] or entry["search"]
    return merged


def _attack_each(model, attacks: dict, x: torch.Tensor, y: torch.Tensor, robust: torch.Tensor, cascade: bool,
                 before=None):
    """Run each attack on ``x`` (with ``cascade`` only on the samples still ``robust``), yielding
    (name, idx, adv, broken, newly broken); ``robust`` is updated in place after each yield."""
    for name, attack in attacks.items():
        if before is not None:
            before(name)
        idx = robust.nonzero().flatten() if cascade else torch.arange(len(y), device=y.device)
        adv = attack(x[idx], y[idx]).reshape(x[idx].shape) if idx.numel() else x[idx]
        with torch.no_grad():
            broken = model(adv).argmax(1) != y[idx] if idx.numel() else y[idx] != y[idx]
        newly = broken & robust[idx]
        yield name, idx, adv, broken, newly
        robust[idx[broken]] = False


CRAFT_BATCH = 512  # samples attacked at once when crafting inputs (the chip commands' unit of work under torchrun)


def worst_case_inputs(model, attacks: dict, x: torch.Tensor, y: torch.Tensor, batch_size: int = CRAFT_BATCH,
                      report: dict | None = None, progress: bool = False, desc: str = "craft") -> torch.Tensor:
    """AutoAttack's cascade: each attack on the samples the earlier ones left robust; per sample the
    first point that breaks it (the clean input where nothing does). ``report`` receives each
    attack's contribution (``contributions``)."""
    worst = x.clone()
    correct = dict.fromkeys(["clean", *attacks], 0)
    batches = range(0, len(x), batch_size)
    with progress_bar(total=len(batches) * len(attacks), desc=desc, unit="attack-batch", disable=not progress) as bar:
        for start in batches:
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            with torch.no_grad():
                robust = model(xb).argmax(1) == yb
            correct["clean"] += int(robust.sum())
            for name, idx, adv, _, newly in _attack_each(model, attacks, xb, yb, robust, cascade=True,
                                                         before=lambda name: bar.set_postfix(attack=name)):
                worst[start + idx[newly]] = adv[newly]
                correct[name] += int(robust.sum() - newly.sum())
                bar.update(1)
    if report is not None:
        report.update(contributions(attacks, correct, len(x)))
    return worst


def masking_diagnostics(model, data: Split, result: dict, attacks: dict, cascade: bool, sample: int = 100) -> list[str]:
    """AutoAttack's flags for an evaluation that gradient masking may have made look robust."""
    notes = []
    names = list(attacks)
    for i, (name, attack) in enumerate(attacks.items()):
        if cascade and i and isinstance(attack, Square) and result[name] < result[names[i - 1]]:
            broken = round((result[names[i - 1]] - result[name]) * result["n"])
            notes.append(f"Square (query-only) broke {broken} sample(s) the gradient attacks missed: gradients may "
                         "be masked; trust the worst case, not any single white-box number")
    notes += surrogate_notes(result.get("contributions", {}))
    head = data.head(sample)
    unbounded = evaluate(model, head, {"apgd-ce": APGD(model, eps=1.0, steps=10)}, progress=False)["apgd-ce"]
    if unbounded > 0.1:
        notes.append(f"at eps = 1 (any image) APGD-CE still leaves {100 * unbounded:.0f}% of {len(head)} samples "
                     "correct, where ~0% is expected: the gradient does not lead anywhere (masking)")
    return notes


def surrogate_notes(contributions: dict) -> list[str]:
    """Which spike backward broke what the attacks through the training surrogate missed."""
    notes = []
    for name, entry in contributions.items():
        if "broken" not in entry:  # not a surrogate-adaptive attack
            continue
        broken = {k: v for k, v in entry["broken"].items() if v}
        if entry.get("newly_broken"):
            ranked = ", ".join(f"{k} {v}" for k, v in sorted(broken.items(), key=lambda kv: -kv[1]))
            notes.append(f"{name}: attacks through other spike backwards broke {entry['newly_broken']} sample(s) the "
                         f"training surrogate's missed ({ranked}): AutoAttack alone overstates robustness here")
    return notes


def build_attacks(model, specs: list, eps: float) -> dict:
    return dict(make_attack(spec, model, eps) for spec in specs)


def sweep_eps(model, data: Split, eps_values: list[float], steps: int = 10, progress: bool = True) -> list[dict]:
    """PGD robust accuracy and per-layer MS-MPPD against eps (the paper's Figure 3)."""
    rows = []
    for eps in progress_bar(eps_values, desc="eps sweep", unit="eps", disable=not progress):
        result = evaluate(model, data, {"pgd": PGD(model, eps=eps, steps=steps)}, progress=False)
        rows.append({"eps": eps, "eps_255": round(eps * 255, 4), "accuracy": result["pgd"],
                     "ms_mppd": [layer["ms_mppd"] for layer in result["layers"]["pgd"]]})
    return rows

