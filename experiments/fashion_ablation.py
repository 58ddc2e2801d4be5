"""Fashion-MNIST ablation: rho x {LIF, DLIF (leak form), DLIF (input form)} x MS-MPPD gradient, RFGSM.

Settles whether DLIF beats LIF, in which form, and whether the authors' perturbed-only MS-MPPD
gradient matters. Every run trains with ``loihi-stable train`` and is evaluated with
``loihi-stable eval``: a strong suite at 8/255 (default snn-adaptive; worst case per sample, the headline), the
``fast`` suite over eps for the robust-accuracy curve (the paper's Figure 3), and Gaussian noise.
Runs resume: a finished run is read back, a cut one continues from its last epoch.

    python experiments/fashion_ablation.py            # reduced CPU version (see --help for its size)
    python experiments/fashion_ablation.py --full     # the full grid: 60k images, convnet, 3 seeds (a GPU)
"""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loihi_stable import script_args
from loihi_stable.attacks.registry import suite_description
from loihi_stable.io import atomic_path, write_json

MODELS = [("LIF", "lif", "leak"), ("DLIF (leak)", "dlif", "leak"), ("DLIF (input)", "dlif", "input")]
CURVE_EPS = (2, 4, 8, 16)   # /255, fast suite
HEADLINE_EPS = 8            # /255, the headline suite (--suite)
GAUSSIAN_SIGMA = 16         # /255
REDUCED = {"limit": 15_000, "val_size": 1000, "epochs": 4, "arch": "mlp", "hidden": "256,128", "timesteps": 4,
           "seeds": "0,1", "rhos": "0,0.5,1,2", "test_limit": 200}  # 46 runs, about 60 min on 2 cores
FULL = {"limit": None, "val_size": 5000, "epochs": 5, "arch": "convnet", "hidden": "128,64", "timesteps": 4,
        "seeds": "0,1,2", "rhos": "0,0.5,1,2", "test_limit": 1000}


def configs(rhos: list[float]) -> list[dict]:
    """The grid (rho = 0 has no gradient to choose), plus a natural and a Gaussian-trained DLIF row."""
    grid = [{"name": f"{label}, rho={rho:g}" + ("" if rho == 0 else f", {grad}"), "neuron": neuron, "form": form,
             "perturb": "rfgsm", "rho": rho, "grad": grad}
            for rho in rhos for label, neuron, form in MODELS for grad in (["both"] if rho == 0 else ["both", "perturbed"])]
    extra = [{"name": "DLIF (leak), natural", "neuron": "dlif", "form": "leak", "perturb": "none", "rho": 0.0, "grad": "both"},
             {"name": "DLIF (leak), Gaussian, rho=1, both", "neuron": "dlif", "form": "leak", "perturb": "gaussian",
              "rho": 1.0, "grad": "both"}]
    return grid + extra


def cli() -> str:
    return str(Path(sys.executable).parent / "loihi-stable")


def folder_name(config: dict, seed: int) -> str:
    return (f"{config['neuron']}-{config['form']}-{config['perturb']}-rho{config['rho']:g}"
            f"{'-' + config['grad'] if config['rho'] else ''}-seed{seed}")


def evaluate(model: Path, out: Path, options: list[str], args, env) -> dict:
    if not out.exists():
        subprocess.run([cli(), "eval", str(model), *options, "--json", str(out), "--quiet", "--device", "cpu",
                        *(["--limit", str(args.test_limit)] if args.test_limit else [])],
                       check=True, env=env, capture_output=True, text=True)
    return json.loads(out.read_text())


def run_one(job: dict) -> dict:
    config, seed, args = job["config"], job["seed"], job["args"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    folder = Path(args.runs) / "ablation-fashion-mnist" / folder_name(config, seed)
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.pt"
    started = time.perf_counter()
    if not model.exists() or (folder / "model.last.pt").exists() and not (folder / "done").exists():
        train = [cli(), "train", "--dataset", "fashion-mnist", "--arch", args.arch, "--hidden", args.hidden,
                 "--neuron", config["neuron"], "--perturb", config["perturb"], "--rho", str(config["rho"]),
                 "--mppd-grad", config["grad"], "--epochs", str(args.epochs), "--timesteps", str(args.timesteps),
                 "--seed", str(seed), "--val-size", str(args.val_size), "--quiet", "--out", str(model),
                 "--device", "cpu" if not args.gpu else "cuda",
                 *(["--data-root", args.data_root] if args.data_root else []),
                 *(["--dlif-form", config["form"]] if config["neuron"] == "dlif" else []),
                 *(["--train-eps", f"{GAUSSIAN_SIGMA}/255"] if config["perturb"] == "gaussian" else []),
                 *(["--limit", str(args.limit)] if args.limit else []),
                 *(["--resume"] if (folder / "model.last.pt").exists() else [])]
        subprocess.run(train, check=True, env=env, capture_output=True, text=True)
        (folder / "done").write_text("")
    headline = evaluate(model, folder / f"{args.suite}.json", ["--suite", args.suite, "--eps", f"{HEADLINE_EPS}/255"],
                        args, env)
    curve = {eps: evaluate(model, folder / f"fast-{eps}.json", ["--suite", "fast", "--eps", f"{eps}/255"], args, env)["robust"]
             for eps in CURVE_EPS}
    noise = evaluate(model, folder / "gaussian.json", ["--attacks", "gaussian", "--eps", f"{GAUSSIAN_SIGMA}/255"], args, env)
    spent = folder / "seconds.txt"  # the compute a run took, kept for the summary of later invocations
    if not spent.exists() or time.perf_counter() - started > 1:
        spent.write_text(f"{time.perf_counter() - started:.1f}")
    last = json.loads((folder / "model.metrics.json").read_text())["epochs"][-1]
    schedule = last.get("input_scale") or last.get("leak_scale")
    return {"config": config["name"], "seed": seed, "clean": headline["clean"], "headline": headline["robust"],
            "gaussian": noise["gaussian"], "curve": curve, "ms_mppd": headline["layers"]["robust"][-1]["ms_mppd"],
            "schedule": schedule, "seconds": float(spent.read_text())}


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {spread:.2f}"


def schedule_summary(rows: list[dict]) -> str:
    """Mean learned a[t] (or p[t]) of the last spiking layer over seeds, and its smallest value."""
    last = [r["schedule"][-1] for r in rows if r["schedule"]]
    if not last or all(v == 1.0 for s in last for v in s):
        return "-"
    steps = len(last[0])
    means = [statistics.mean(s[t] for s in last) for t in range(steps)]
    return " ".join(f"{m:.2f}" for m in means)


def summarize(rows: list[dict], args, names: list[str]) -> str:
    size = f"{args.limit or 60000 - args.val_size} training images" + ("" if args.limit else "")
    lines = [f"# Fashion-MNIST ablation: rho x neuron x MS-MPPD gradient ({'full' if args.full else 'reduced CPU version'})",
             "",
             f"{args.arch} ({args.hidden if args.arch == 'mlp' else 'conv'}), T={args.timesteps}, {args.epochs} epochs, "
             f"{size}, {args.val_size} held out for checkpoint selection; SGD lr 0.1 cosine, batch 64; RFGSM at 4/255; "
             f"seeds {args.seeds}; {args.test_limit or 10000} test images. Accuracy in %, mean ± std over seeds.",
             f"**{args.suite}** = worst case per sample over the {args.suite} suite ({suite_description(args.suite)}) "
             f"at {HEADLINE_EPS}/255; **fast @e** = worst case over the fast suite (APGD-CE 20, APGD-T 20 x 3 targets, "
             f"Square 500) at e/255; **Gaussian** = accuracy under N(0, ({GAUSSIAN_SIGMA}/255)^2) noise. "
             f"MS-MPPD: last spiking layer at the {args.suite} points. a[t] / p[t]: the last spiking layer's learned "
             f"schedule (leak form: a[t]; input form: p[t]), mean over seeds. 'both' differentiates MS-MPPD through "
             f"both branches (the term as written); 'perturbed' detaches the clean branch (the authors' code).",
             f"Command: `python experiments/fashion_ablation.py {' '.join(sys.argv[1:])}`",
             "",
             f"| model | clean | {args.suite} | " + " | ".join(f"fast @{e}" for e in CURVE_EPS)
             + " | Gaussian | MS-MPPD | a[t] / p[t] |",
             "|---|---|---|" + "---|" * len(CURVE_EPS) + "---|---|---|"]
    for name in names:
        mine = [r for r in rows if r["config"] == name]
        if not mine:
            continue
        cells = [mean_std([100 * r["clean"] for r in mine]), mean_std([100 * r["headline"] for r in mine]),
                 *[mean_std([100 * r["curve"][e] for r in mine]) for e in CURVE_EPS],
                 mean_std([100 * r["gaussian"] for r in mine]),
                 f"{statistics.mean(r['ms_mppd'] for r in mine):.3g}", schedule_summary(mine)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    total = sum(r["seconds"] for r in rows)
    lines += ["", f"Compute: {total / 60:.1f} min summed over {len(rows)} runs, one thread each, {args.jobs} at a time "
                  "(runs finished earlier are read back, not recomputed)."]
    return "\n".join(lines) + "\n"


def plot(rows: list[dict], names: list[str], path: Path) -> None:
    """Robust accuracy (fast suite) against eps, mean over seeds: the paper's Figure 3."""
    from loihi_stable.plots import save_figure
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(MODELS), figsize=(5 * len(MODELS), 4), sharey=True)
    for ax, (label, *_) in zip(axes, MODELS):
        for name in names:
            mine = [r for r in rows if r["config"] == name]
            if not mine or not name.startswith(label + ","):
                continue
            xs = [0, *CURVE_EPS]
            ys = [100 * statistics.mean(r["clean"] for r in mine),
                  *[100 * statistics.mean(r["curve"][e] for r in mine) for e in CURVE_EPS]]
            ax.plot(xs, ys, marker="o", label=name[len(label) + 2:], linestyle="--" if "perturbed" in name else "-")
        ax.set_title(label)
        ax.set_xlabel("eps (/255)")
        ax.legend(fontsize=7)
    axes[0].set_ylabel("robust accuracy (%), fast suite, worst case per sample")
    fig.suptitle("Fashion-MNIST: robust accuracy vs eps (RFGSM training)")
    save_figure(fig, path)


def main(argv=None) -> None:
    args = script_args.parse(__doc__, {
        "full": (False, f"the full grid: {FULL}"), "seeds": None, "rhos": None, "epochs": None, "arch": None,
        "hidden": None, "timesteps": None, "limit": (None, "training images (reduced default 10,000)"),
        "val_size": None, "test_limit": None,
        "data_root": (None, "folder of the Fashion-MNIST IDX files (default: where make fashion-mnist puts them)"),
        "gpu": (False, "train on CUDA"), "jobs": 2,
        "suite": ("snn-adaptive", "the attack suite of the headline column, at 8/255"), "out": "results", "runs": "runs",
    }, argv, types={k: int for k in ("epochs", "timesteps", "limit", "val_size", "test_limit")})
    for key, value in (FULL if args.full else REDUCED).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    grid = configs([float(r) for r in args.rhos.split(",")])
    names = [c["name"] for c in grid]
    jobs = [{"config": c, "seed": int(s), "args": args} for s in args.seeds.split(",") for c in grid]
    rows = []
    from loihi_stable.progress import progress_bar

    with ThreadPoolExecutor(args.jobs) as pool, progress_bar(total=len(jobs), desc="ablation", unit="run") as bar:
        for row in pool.map(run_one, jobs):
            rows.append(row)
            bar.update(1)
            bar.write(f"{row['config']:<36} seed {row['seed']}: clean {row['clean']:.3f} "
                      f"{args.suite} {row['headline']:.3f} ({row['seconds']:.0f} s)")
    stem = script_args.output_stem(args.out, f"ablation-fashion-mnist{'' if args.full else '-reduced'}")
    write_json(stem.with_suffix(".json"), {"settings": {k: v for k, v in vars(args).items()}, "runs": rows})
    table = summarize(rows, args, names)
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text(table)
    plot(rows, names, stem.with_suffix(".png"))
    print(table)


if __name__ == "__main__":
    main()
