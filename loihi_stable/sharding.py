"""Samples split over the processes ``torchrun`` starts, gathered so that every number is one process's.

The unit of work is a whole batch, at the same boundaries a single process uses, and every attack
seeds its generator afresh per batch: so a batch gives the same per-sample results wherever it runs.
Batches go round-robin to the ranks (a rank may get none), each rank's results come back to every
rank in batch order, and only rank 0 prints and writes. gloo on CPUs, NCCL on GPUs.
"""
from __future__ import annotations

import os


def world() -> tuple[int, int]:
    """(rank, world size) as torchrun describes them; (0, 1) without it."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's index on its machine (its GPU under torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main() -> bool:
    return world()[0] == 0


def init(use_cuda: bool = False) -> tuple[int, int]:
    """Join the process group torchrun describes (WORLD_SIZE > 1) once: NCCL on GPUs, gloo on CPUs."""
    rank, size = world()
    if size <= 1:
        return 0, 1
    import torch
    import torch.distributed as dist

    if not dist.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank())
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist.get_rank(), dist.get_world_size()


def my_share(n_batches: int) -> range:
    """The batch indices this rank works on."""
    rank, size = world()
    return range(rank, n_batches, size)


def share_size(n: int, batch_size: int) -> int:
    """How many of the batches of ``batch_size`` out of ``n`` samples this rank works on (for progress bars)."""
    return len(my_share(len(range(0, n, batch_size))))


def map_batches(n: int, batch_size: int, work, then=None) -> list[object]:
    """``work(batch)`` (a slice of the samples) on this rank's batches; every rank's results, in batch order.

    ``then(results)`` runs once on all of this rank's results and returns them anew, one per batch: the
    place for work that costs a start-up per call (Lava compiles and forks its processes once, not per batch).
    """
    starts = range(0, n, batch_size)
    mine = list(my_share(len(starts)))
    results = [work(slice(starts[i], starts[i] + batch_size)) for i in mine]
    if then is not None and results:
        results = then(results)
    return gather(list(zip(mine, results)))


def gather(results: list[tuple[int, object]]) -> list[object]:
    """Every rank's (batch index, result) pairs, on every rank, as one list in batch order."""
    rank, size = world()
    if size > 1:
        import torch.distributed as dist

        parts: list = [None] * size
        try:
            dist.all_gather_object(parts, results)
        except (RuntimeError, ConnectionError, OSError) as err:  # gloo/NCCL: a peer died or was stopped
            from .errors import UserError

            raise UserError(f"a torchrun worker stopped before the results were gathered ({type(err).__name__}): "
                            "nothing was written; rerun the command") from None
        results = [pair for part in parts for pair in part]
    return [result for _, result in sorted(results, key=lambda pair: pair[0])]


def close() -> None:
    """Leave the process group (every rank, after its last gather), not to the interpreter's exit, where
    gloo's threads can abort a rank that finished first ("terminate called without an active exception")."""
    if world()[1] <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
