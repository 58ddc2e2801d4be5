"""``loihi-stable-torchrun``: torchrun, ending a failed or interrupted run with one line.

torchrun ends every failed run with its own traceback and a framed failure report, on top of the
line the command's rank 0 already printed. Same arguments as torchrun (it is torchrun's own
``main``); only the ending differs: where rank 0 said what happened (an ``error:`` line, exit 2; an
interrupt, exit 130) nothing is added; where a worker died without a word (killed, out of memory,
a crash) and torchrun stopped the others (which then stay silent, exit 143) one ``error:`` line
names the worker. No JSON is half-written either way:
rank 0 writes its outputs atomically, at the end.
"""
from __future__ import annotations

import logging
import os
import sys

SPOKE = (2, 130)  # rank 0's exit codes after it printed its own last line
QUIET_STOP = "LOIHI_STABLE_QUIET_STOP"  # read by interrupts: say nothing when torchrun stops this worker


def describe(failure) -> str:
    """'was killed by SIGKILL' / 'exited with code 1'."""
    if failure.exitcode < 0:
        return f"was killed by {failure.signal_name()}"
    return f"exited with code {failure.exitcode}"


def main() -> None:
    os.environ.setdefault("LOGLEVEL", "CRITICAL")  # torchrun's per-worker warnings (read when its loggers are made)
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # and its modules' plain loggers

    os.environ[QUIET_STOP] = "1"  # the workers leave the line about torchrun's stop to this launcher
    try:
        torchrun(sys.argv[1:])
    except SignalException:  # Ctrl-C or a kill of the launcher: it stopped the workers, rank 0 said so
        sys.exit(130)
    except ChildFailedError as failed:
        rank0 = failed.failures.get(0)
        if rank0 is not None and rank0.exitcode in SPOKE:
            sys.exit(rank0.exitcode)
        rank, first = failed.get_first_failure()
        print(f"error: torchrun worker rank {rank} {describe(first)}, so the command stopped; no output was "
              "written: rerun it", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
