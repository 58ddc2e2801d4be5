"""Certified against attacked: natural, adversarial (RFGSM + MS-MPPD) and IBP training, at 2/255 and 8/255.

Per training and eps: clean accuracy, the worst case per sample over an attack suite (default
snn-adaptive, the strongest; an upper bound of what any sound verifier can verify), S-IBP, S-CROWN (alpha-optimised slopes), their per-margin
best ("verified") and the integer certificate of the exported network ("verified on chip").

    python experiments/certification_table.py                                  # digits MLP (about 15 min on 2 cores)
    python experiments/certification_table.py --dataset fashion-mnist --arch convnet --limit 10000 \\
        --epochs 5 --test-limit 200 --crown-steps 0                            # Fashion-MNIST convnet, reduced
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from loihi_stable import script_args
from loihi_stable.attacks.registry import suite_description
from loihi_stable.io import atomic_path, write_json

TRAININGS = {"natural": ["--perturb", "none", "--rho", "0"],
             "AT (RFGSM + MS-MPPD)": ["--perturb", "rfgsm", "--rho", "1"],
             "IBP": ["--perturb", "ibp", "--rho", "0"]}
EPS = (2, 8)  # /255


def cli() -> str:
    return str(Path(sys.executable).parent / "loihi-stable")


def run(command: list[str]) -> float:
    """Run a CLI command with one thread; its wall time in seconds."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed: {' '.join(command)}\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
    return time.perf_counter() - start


def measure(job) -> list[dict]:
    name, options, args = job
    folder = Path(args.runs) / f"certification-{args.dataset}-{args.arch}" / name.split()[0].lower()
    folder.mkdir(parents=True, exist_ok=True)
    model = folder / "model.pt"
    if not (folder / "done").exists():
        run([cli(), "train", "--dataset", args.dataset, "--arch", args.arch, "--epochs", str(args.epochs),
             "--timesteps", str(args.timesteps), "--seed", "0", "--quiet", "--out", str(model), "--device", "cpu",
             *options, *(["--train-eps", args.ibp_train_eps] if name == "IBP" else []),
             *(["--limit", str(args.limit)] if args.limit else []),
             *(["--resume"] if (folder / "model.last.pt").exists() else [])])
        (folder / "done").write_text("")
    limit = ["--limit", str(args.test_limit)] if args.test_limit else []
    rows = []
    for eps in EPS:
        attacked, certified = folder / f"{args.suite}-{eps}.json", folder / f"certify-{eps}.json"
        if not attacked.exists():
            seconds = run([cli(), "eval", str(model), "--suite", args.suite, "--eps", f"{eps}/255", "--device", "cpu",
                           "--quiet", "--json", str(attacked), *limit])
            write_json(attacked, {**json.loads(attacked.read_text()), "seconds": seconds})
        if not certified.exists():
            run([cli(), "certify", str(model), "--eps", f"{eps}/255", "--crown-steps", str(args.crown_steps),
                 "--batch-size", str(args.batch_size), "--device", "cpu", "--quiet", "--json", str(certified), *limit])
        a, c = json.loads(attacked.read_text()), json.loads(certified.read_text())
        rows.append({"training": name, "eps_255": eps, "clean": a["clean"], "attacked": a["robust"],
                     "attack_seconds": a.get("seconds"),
                     "ibp": c["ibp"], "crown": c["crown"], "verified": c["verified"],
                     "verified_chip": c.get("verified_chip"), "clean_chip": c.get("clean_chip", c["clean"]),
                     "broken": c.get("verified_but_broken_by_pgd", 0) + c.get("verified_chip_but_broken_by_pgd", 0),
                     "n": c["n"]})
    return rows


def main(argv=None) -> None:
    args = script_args.parse(__doc__, {
        "dataset": "digits", "arch": "mlp", "epochs": 30, "timesteps": 8, "limit": None, "test_limit": None,
        "crown_steps": 20, "ibp_train_eps": ("8/255", "the IBP training radius"), "batch_size": 128, "jobs": 2,
        "out": "results", "runs": "runs",
        "suite": ("snn-adaptive", "the attack suite of the attacked column (an upper bound of any verifier)"),
    }, argv, types={"limit": int, "test_limit": int})
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = [row for rows in pool.map(measure, [(n, o, args) for n, o in TRAININGS.items()]) for row in rows]
    lines = [f"# Certified vs attacked: {args.dataset}, {args.arch}",
             "",
             f"T={args.timesteps}, {args.epochs} epochs{f', {args.limit} training images' if args.limit else ''}, seed 0, "
             f"IBP trained at {args.ibp_train_eps}, RFGSM at 4/255; "
             f"{rows[0]['n']} test samples. Accuracy in %. Attacked = worst case per sample over the {args.suite} "
             f"suite ({suite_description(args.suite)}), an upper bound of any sound verifier. S-CROWN with "
             f"{args.crown_steps} alpha-CROWN steps; verified = the better of S-IBP and S-CROWN per margin; "
             f"S-IBP/S-CROWN bound the {'chip-arithmetic' if args.arch == 'mlp' else 'float'} model; verified on chip = "
             f"the integer certificate of the exported network, clean on chip its accuracy. Verified samples broken by PGD: "
             f"{sum(r['broken'] for r in rows)} (must be 0).",
             f"Command: `python experiments/certification_table.py {' '.join(sys.argv[1:])}`",
             "",
             f"| training | eps | clean | attacked ({args.suite}) | S-IBP | S-CROWN | verified | clean on chip | verified on chip |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        chip = "-" if r["verified_chip"] is None else f"{100 * r['verified_chip']:.2f}"
        lines.append(f"| {r['training']} | {r['eps_255']}/255 | {100 * r['clean']:.2f} | {100 * r['attacked']:.2f} | "
                     f"{100 * r['ibp']:.2f} | {100 * r['crown']:.2f} | {100 * r['verified']:.2f} | "
                     f"{100 * r['clean_chip']:.2f} | {chip} |")
    stem = script_args.output_stem(args.out, f"certification-{args.dataset}-{args.arch}")
    write_json(stem.with_suffix(".json"), {"settings": vars(args), "rows": rows})
    with atomic_path(stem.with_suffix(".md")) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
