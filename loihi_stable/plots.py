"""Figures for people: robust accuracy per attack, per-layer MS-MPPD, and the eps sweep."""
from __future__ import annotations

import functools
from pathlib import Path

from . import interrupts
from .io import atomic_path


def drawing(plot):
    """A figure is drawn whole: a Ctrl-C inside matplotlib can break its transforms mid-draw and come
    out as a ValueError, so it waits until the file is written (about a second)."""
    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with interrupts.deferred():
            return plot(*args, **kwargs)
    return wrapper


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def panels(count: int, size: tuple[float, float]):
    """A figure of ``count`` panels side by side: (figure, axes)."""
    return pyplot().subplots(1, count, figsize=size)


def save_figure(fig, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=Path(path).suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")
    pyplot().close(fig)


@drawing
def plot_evaluation(result: dict, path: str | Path, title: str = "") -> None:
    attacks = [name for name in result["layers"]]
    fig, (ax_acc, ax_mppd) = panels(2, (12, 4))
    names = [n for n, v in result.items() if isinstance(v, float)]  # clean, each attack, robust (worst case)
    colours = ["#4c72b0" if n == "clean" else "#c44e52" if n == "robust" else "#dd8452" for n in names]
    ax_acc.bar(names, [100 * result[n] for n in names], color=colours)
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
    ax_mppd.set_title("membrane potential perturbation per layer")
    _finish(fig, ax_mppd, "MS-MPPD", title, path)


def _finish(fig, ax, ylabel: str, title: str, path: str | Path) -> None:
    """Label the right-hand panel, title the figure and write it."""
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.suptitle(title)
    save_figure(fig, path)


@drawing
def plot_sweep(rows: list[dict], path: str | Path, title: str = "") -> None:
    eps = [r["eps_255"] for r in rows]
    fig, (ax_acc, ax_mppd) = panels(2, (10, 4))
    ax_acc.plot(eps, [100 * r["accuracy"] for r in rows], "o-")
    ax_acc.set_xlabel("eps (/255)")
    ax_acc.set_ylabel("PGD accuracy (%)")
    ax_acc.set_ylim(0, 100)
    for layer in range(len(rows[0]["ms_mppd"])):
        ax_mppd.plot(eps, [r["ms_mppd"][layer] for r in rows], "o-", label=f"layer {layer + 1}")
    ax_mppd.set_xlabel("eps (/255)")
    _finish(fig, ax_mppd, "MS-MPPD", title, path)


@drawing
def plot_training(history: list[dict], path: str | Path, title: str = "") -> None:
    """Loss parts, clean/PGD validation accuracy, MS-MPPD and the DLIF a[t] over epochs."""
    epochs = [row["epoch"] for row in history]
    fig, axes = panels(4, (18, 3.8))
    for key in ("loss", "ce_clean", "ce_pert", "ce_ibp"):
        if key in history[0]:
            axes[0].plot(epochs, [row[key] for row in history], label=key)
    axes[0].set_title("loss parts")
    for key in ("val_clean", "val_pgd"):
        values = [row.get(key) for row in history]
        if any(v is not None for v in values):
            axes[1].plot(epochs, [100 * v if v is not None else float("nan") for v in values], label=key)
    axes[1].set_title("validation accuracy (%)")
    if "ms_mppd" in history[0]:
        axes[2].plot(epochs, [row["ms_mppd"] for row in history], color="#c44e52")
    axes[2].set_title("MS-MPPD (last spiking layer)")
    symbol, key = ("p", "input_scale") if "input_scale" in history[-1] else ("a", "leak_scale")
    for layer, scales in enumerate(history[-1].get(key, [])):
        axes[3].plot(range(len(scales)), scales, marker="o", label=f"layer {layer + 1}")
    axes[3].set_title(f"DLIF {symbol}[t] after epoch {epochs[-1]}")
    axes[3].set_xlabel("time step t")
    for ax in axes:
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    axes[0].set_xlabel("epoch")
    fig.suptitle(title)
    save_figure(fig, path)
