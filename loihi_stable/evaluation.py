"""Robust accuracy under a suite of attacks, with per-layer perturbation metrics."""
from __future__ import annotations

from .progress import progress_bar

from .attacks import PGD, make_attack
from .data import Split
from .metrics import layer_metrics, record


def evaluate(model, data: Split, attacks: dict, batch_size: int = 512, progress: bool = True) -> dict:
    """``attacks`` maps names to callables ``atk(images, labels)`` (ours or torchattacks').

    Returns {"clean": acc, name: acc, ..., "layers": {name: [per-layer metrics]}}; metrics are
    sample-weighted means over batches.
    """
    leak = model.config.leak
    correct = dict.fromkeys(["clean", *attacks], 0)
    sums: dict[str, list[dict]] = {}
    batches = range(0, len(data), batch_size)
    bar = progress_bar(total=len(batches) * (1 + len(attacks)), desc="eval", unit="attack-batch", disable=not progress)
    for start in batches:
        x, y = data.x[start:start + batch_size], data.y[start:start + batch_size]
        logits, clean_layers = record(model, x)
        correct["clean"] += (logits.argmax(1) == y).sum().item()
        bar.update(1)
        for name, attack in attacks.items():
            bar.set_postfix(attack=name, refresh=False)
            adv = attack(x, y).reshape(x.shape)
            logits_adv, adv_layers = record(model, adv)
            correct[name] += (logits_adv.argmax(1) == y).sum().item()
            metrics = [layer_metrics(c, a, leak) for c, a in zip(clean_layers, adv_layers)]
            acc = sums.setdefault(name, [dict.fromkeys(m, 0.0) for m in metrics])
            for total, layer in zip(acc, metrics):
                for key, value in layer.items():
                    total[key] += value * len(y)
            bar.update(1)
    bar.close()
    n = max(len(data), 1)
    result = {name: count / n for name, count in correct.items()}
    result["layers"] = {name: [{k: v / n for k, v in layer.items()} for layer in layers]
                        for name, layers in sums.items()}
    result["n"] = len(data)
    return result


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

