"""The demo's ``run`` now vs at a reference commit, on this machine in one go: seconds and the ratio.

    python benchmarks/demo_run.py [--reference fc21f90] [--epochs 30] [--suites autoattack,snn-adaptive]

Machines differ by 2-3x in these times, so a time alone says little: this checks the reference commit out
(``git worktree``, removed after), trains and exports the demo model with each version's own code (the
demo's commands), and times ``run --backend Loihi2SimCfg --eps 8/255`` with the reference's suite and with
each of ours, one after another. The default reference is the release the speed issue measured (its demo
ran the ``autoattack`` suite, 9 of 11 minutes). Needs the git history; run it on an idle machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# the environment as the user has it: importing loihi_stable sets OpenMP's passive wait, which slows a
# reference that predates the thread policy (two spinning threads) by 1.9x (measured: 470 s vs 247 s): each runs
# in the environment it would get from a shell
USER_ENVIRONMENT = dict(os.environ)

from loihi_stable import script_args  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CLI = "import sys; from loihi_stable.cli import main; sys.argv[0] = 'loihi-stable'; main()"


def command_seconds(code: Path, *args: str) -> float:
    """Seconds one command of the code checked out at ``code`` takes (its output kept out of the table)."""
    env = {**USER_ENVIRONMENT, "PYTHONPATH": str(code)}
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CLI, *args], cwd=code, env=env, capture_output=True, text=True)
    if done.returncode:
        last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise SystemExit(f"error: {args[0]} with the code at {code} failed: {last}")
    return time.perf_counter() - start


def demo_model(code: Path, folder: Path, epochs: int) -> Path:
    """The demo's train and export with the code at ``code``: the .net file its run reads."""
    model, net = folder / "model.pt", folder / "model.net"
    command_seconds(code, "train", "--dataset", "digits", "--neuron", "dlif", "--perturb", "rfgsm", "--rho", "1.0",
                    "--epochs", str(epochs), "--out", str(model))
    command_seconds(code, "export", "--to", "netx", str(model), "-o", str(net))
    return net


def run_seconds(code: Path, net: Path, suite: str) -> float:
    return command_seconds(code, "run", "--backend", "Loihi2SimCfg", "--attack", suite, "--eps", "8/255",
                        "--json", str(net.with_suffix(f".{suite}.json")), str(net))


def main() -> None:
    args = script_args.parse(__doc__, {"reference": ("fc21f90", "the commit to compare against"), "epochs": 30,
                                       "reference_suite": ("autoattack", "the suite the reference's demo ran"),
                                       "suites": ("autoattack,snn-adaptive", "ours, timed one after another")})
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        reference = scratch / "reference"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(reference), args.reference],
                       check=True)
        try:
            (scratch / "theirs").mkdir()
            (scratch / "ours").mkdir()
            theirs = run_seconds(reference, demo_model(reference, scratch / "theirs", args.epochs), args.reference_suite)
            net = demo_model(ROOT, scratch / "ours", args.epochs)
            rows = [[f"reference {args.reference}", args.reference_suite, f"{theirs:.1f}", "1.00x"]]
            for suite in args.suites.split(","):
                ours = run_seconds(ROOT, net, suite)
                rows.append(["ours (this checkout)", suite, f"{ours:.1f}", f"{theirs / ours:.2f}x"])
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(reference)], check=False)
    script_args.print_table(f"the demo's run (Loihi2SimCfg, 360 digits test samples, 8/255), {os.cpu_count()} cores",
                            ["code", "suite", "run (s)", "speed vs reference"], rows)


if __name__ == "__main__":
    main()
