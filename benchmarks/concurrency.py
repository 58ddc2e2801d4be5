"""Two commands side by side: each should keep at least half its speed alone (the thread policy).

    python benchmarks/concurrency.py [--epochs 2] [--arch mlp]

Runs one small ``loihi-stable train`` alone, then two at once, with the project's thread policy
(``loihi_stable.threads``: passive OpenMP wait, one thread for dense networks, free cores for conv)
and with torch's defaults as they were before it (every core, spinning wait: OMP_WAIT_POLICY=ACTIVE,
LOIHI_STABLE_THREADS = all cores). Prints wall times and the side-by-side / alone ratio. Run it on an
otherwise idle machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from loihi_stable import script_args


def command(folder: Path, name: str, args) -> list[str]:
    return [sys.executable, "-m", "loihi_stable.cli", "train", "-o", str(folder / f"{name}.pt"), "--arch", args.arch,
            "--epochs", str(args.epochs), "--limit", str(args.limit), "--val-size", "0", "--val-eps", "0", "--quiet"]


def wall(folder: Path, copies: int, env: dict, args) -> float:
    """Seconds until the last of ``copies`` simultaneous trainings ends."""
    start = time.perf_counter()
    procs = [subprocess.Popen(command(folder, f"m{i}", args), env=env, stdout=subprocess.DEVNULL) for i in range(copies)]
    if any(p.wait() for p in procs):
        raise SystemExit("a training failed")
    return time.perf_counter() - start


def main() -> None:
    args = script_args.parse(__doc__, {"epochs": 2, "limit": 1000, "arch": "mlp"})
    cores = len(os.sched_getaffinity(0))
    base = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOIHI_STABLE_THREADS", "OMP_WAIT_POLICY")}
    policies = {"thread policy (ours)": base,
                "torch defaults (before)": {**base, "OMP_WAIT_POLICY": "ACTIVE", "LOIHI_STABLE_THREADS": str(cores)}}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, env in policies.items():
            alone = wall(Path(folder), 1, env, args)
            both = wall(Path(folder), 2, env, args)
            rows.append([name, f"{alone:.1f}", f"{both:.1f}", f"{alone / both:.2f}"])
    script_args.print_table(f"train --arch {args.arch} --epochs {args.epochs} --limit {args.limit}, {cores} cores",
                            ["threads", "alone (s)", "two side by side (s)", "speed beside another / alone"], rows)


if __name__ == "__main__":
    main()
