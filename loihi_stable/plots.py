"""Figures for people: robust accuracy per attack, per-layer MS-MPPD, and the eps sweep."""
from __future__ import annotations

from pathlib import Path

from .io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    _pyplot().close(fig)


def plot_evaluation(result: dict, path: str | Path, title: str = "") -> None:
    plt = _pyplot()
    attacks = [name for name in result["layers"]]
    fig, (ax_acc, ax_mppd) = plt.subplots(1, 2, figsize=(12, 4))
    names = ["clean", *attacks]
    ax_acc.bar(names, [100 * result[n] for n in names], color=["#4c72b0"] + ["#dd8452"] * len(attacks))
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.set_ylim(0, 100)
    ax_acc.tick_params(axis="x", rotation=45)
    ax_acc.set_title("robust accuracy")
    n_layers = len(next(iter(result["layers"].values()), []))
    width = 0.8 / max(n_layers, 1)
    for layer in range(n_layers):
        xs = [i + layer * width for i in range(len(attacks))]
        ax_mppd.bar(xs, [result["layers"][a][layer]["ms_mppd"] for a in attacks], width, label=f"layer {layer + 1}")
    ax_mppd.set_xticks([i + 0.4 - width / 2 for i in range(len(attacks))], attacks, rotation=45)
    values = [m["ms_mppd"] for layers in result["layers"].values() for m in layers]
    if values and min(values) > 0:
        ax_mppd.set_yscale("log")
    ax_mppd.set_ylabel("MS-MPPD")
    ax_mppd.set_title("membrane potential perturbation per layer")
    ax_mppd.legend()
    fig.suptitle(title)
    _save(fig, path)


def plot_sweep(rows: list[dict], path: str | Path, title: str = "") -> None:
    plt = _pyplot()
    eps = [r["eps_255"] for r in rows]
    fig, (ax_acc, ax_mppd) = plt.subplots(1, 2, figsize=(10, 4))
    ax_acc.plot(eps, [100 * r["accuracy"] for r in rows], "o-")
    ax_acc.set_xlabel("eps (/255)")
    ax_acc.set_ylabel("PGD accuracy (%)")
    ax_acc.set_ylim(0, 100)
    for layer in range(len(rows[0]["ms_mppd"])):
        ax_mppd.plot(eps, [r["ms_mppd"][layer] for r in rows], "o-", label=f"layer {layer + 1}")
    ax_mppd.set_xlabel("eps (/255)")
    ax_mppd.set_ylabel("MS-MPPD")
    ax_mppd.legend()
    fig.suptitle(title)
    _save(fig, path)
