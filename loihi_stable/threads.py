"""How many threads a command computes with, chosen so that it holds up beside other processes.

Measured here (issue 23): two small trainings side by side with torch's default threads took 7x as
long as one alone, and with one thread each less than one alone. OpenMP threads spin while they
wait, so an oversubscribed core is lost to spinning: the wait is made passive (before torch loads
OpenMP; see ``loihi_stable/__init__``), and a command takes only the cores that are free, those it
may run on less the load already on them. Dense networks take one thread: their ops are too small
to split, and a second thread only adds waiting. ``LOIHI_STABLE_THREADS`` or ``OMP_NUM_THREADS`` set
by the user wins.
"""
from __future__ import annotations

import os

WAIT_POLICY = {"OMP_WAIT_POLICY": "PASSIVE"}


def passive_wait() -> None:
    """Idle OpenMP threads sleep instead of spinning (read when OpenMP starts: call before importing torch)."""
    for key, value in WAIT_POLICY.items():
        os.environ.setdefault(key, value)


def free_cores() -> int:
    """Cores this process may run on, less the run-queue load already there (1-minute average)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = 0.0
    return max(1, min(cores, int(cores - load + 0.5)))


def choose(arch: str) -> int:
    """Threads for a network of this architecture ('mlp' or a conv architecture)."""
    for key in ("LOIHI_STABLE_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1 if arch == "mlp" else free_cores()


def configure(arch: str) -> int:
    """Set torch's thread count for a command that runs a network of ``arch``; returns it."""
    import torch

    threads = choose(arch)
    torch.set_num_threads(threads)
    return threads
