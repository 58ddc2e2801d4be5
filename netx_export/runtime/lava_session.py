"""Run Lava in a process group of its own, so that Ctrl-C always stops it, whole.

Lava's runtime forks a worker per process plus a shared-memory manager, and a SIGINT that
reaches them (Ctrl-C signals the terminal's whole process group) can leave the runtime waiting
forever on a worker that already died. So the Lava run happens in a forked child that leads its
own process group: Ctrl-C reaches only the command's own process, which kills that group with
SIGKILL, unlinks the shared-memory segments the group created, and re-raises. The child records
every segment it (or a worker) creates in a small file beside them, so segments left by a run
whose parent was SIGKILLed are removed by the next run; a watchdog thread in the child kills its
group when the parent disappears. Named semaphores are recorded the same way; the one thing no
name can be known for in advance is glibc's ``sem.XXXXXX`` temp file of a ``sem_open`` cut short
by the kill, so those are swept by age once the group is dead.
"""
from __future__ import annotations

import multiprocessing.connection
import os
import re
import secrets
import signal
import sys
import threading
import time
import traceback
from pathlib import Path

from loihi_stable import interrupts

SHM_DIR = Path("/dev/shm")
RECORD_PREFIX = "loihi-stable-lava-"  # <prefix><parent pid>-<child pid>: one segment name per line
SEM_OPEN_TEMP = re.compile(r"sem\.[A-Za-z0-9]{6}")  # glibc's sem_open: temp file, then link to the name


def _alive(pid: int) -> bool:
    """True for a running process; a zombie (killed, not yet reaped) counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _append(record: Path, name: str) -> None:
    """Add ``name`` to the record the Lava child created; never create it. A record that is gone means the
    run was already cleaned up: a process still running then (a straggler the group kill missed)
    stops its group rather than make a segment no one would remove."""
    try:
        descriptor = os.open(record, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        if SHM_DIR.is_dir():
            _kill_group(os.getpgid(0))
        return  # no /dev/shm here (shm_open without a folder): nothing can be cleaned up by name
    except OSError:
        return
    try:
        os.write(descriptor, (name + "\n").encode())
    finally:
        os.close(descriptor)


def _record_segments(record: Path) -> None:
    """Write the name of every SharedMemory and semaphore this process (and its forks) creates to
    ``record``, before it exists, so a kill at any moment leaves nothing unlisted."""
    from multiprocessing import shared_memory, synchronize

    original_init = shared_memory.SharedMemory.__init__
    original_name = synchronize.SemLock._make_name

    try:
        record.touch()  # created once, here; every process of the run only appends (``_append``)
    except OSError:  # no /dev/shm
        pass

    def recording_init(self, name=None, create=False, size=0):
        if create and name is None:
            name = f"psm_{secrets.token_hex(8)}"
            _append(record, name)
        original_init(self, name, create, size)

    def recording_name():
        name = original_name()  # "/mp-xxxxxxxx", a file "sem.mp-xxxxxxxx" under /dev/shm
        _append(record, "sem." + name.lstrip("/"))
        return name

    shared_memory.SharedMemory.__init__ = recording_init
    synchronize.SemLock._make_name = staticmethod(recording_name)


def remove_sem_open_temps(since: float, settle: float = 0.1) -> None:
    """Unlink glibc ``sem.XXXXXX`` temp files made since ``since`` (a time.time()) that outlive
    ``settle`` seconds: a live sem_open links and unlinks its temp within microseconds, so one
    still there is the leftover of a process killed inside sem_open."""
    if not SHM_DIR.is_dir():
        return

    def temps() -> set[str]:
        found = set()
        for path in SHM_DIR.iterdir():
            try:
                if SEM_OPEN_TEMP.fullmatch(path.name) and path.stat().st_ctime >= since - 1:
                    found.add(path.name)
            except OSError:
                continue
        return found

    first = temps()
    if not first:
        return
    time.sleep(settle)
    for name in first & temps():
        (SHM_DIR / name).unlink(missing_ok=True)


def remove_segments(record: Path) -> None:
    """Unlink the segments listed in ``record`` that still exist, then the record."""
    try:
        names = record.read_text().split()
    except OSError:
        names = []
    for name in names:
        if "/" not in name and name:
            (SHM_DIR / name).unlink(missing_ok=True)
    record.unlink(missing_ok=True)


def remove_stale_segments() -> None:
    """Segments of earlier runs whose command and Lava child are both gone (killed with SIGKILL)."""
    if not SHM_DIR.is_dir():
        return
    for record in SHM_DIR.glob(f"{RECORD_PREFIX}*"):
        try:
            parent, child = (int(p) for p in record.name[len(RECORD_PREFIX):].split("-"))
        except ValueError:
            continue
        if not _alive(parent) and not _alive(child):
            try:
                started = record.stat().st_ctime
            except OSError:
                continue
            remove_segments(record)
            remove_sem_open_temps(since=started)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_group_gone(pgid: int, timeout: float = 5.0) -> None:
    """SIGKILL is asynchronous: wait until no live member of ``pgid`` is left (zombies are dead)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = False
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                alive = True
                break
        if not alive:
            return
        time.sleep(0.02)


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.2)
    _kill_group(os.getpgid(0))


def _one_thread_after_fork() -> None:
    """The forked child computes with one torch thread.

    GNU OpenMP is not fork-safe: a child that enters a parallel region the parent's thread pool
    served waits forever for threads that were not forked (seen: the notebook's chip run hung in
    the first large torch op). One thread never enters a parallel region.
    """
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _child(function, args, kwargs, sender, parent: int, record: Path) -> None:
    os.setpgid(0, 0)
    interrupts.install()  # a fresh record, not the parent's hold over the fork
    _one_thread_after_fork()
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    _record_segments(record)
    try:
        result = ("ok", function(*args, **kwargs))
    except BaseException as err:  # noqa: BLE001  (everything goes back to the parent)
        result = ("error", err, traceback.format_exc())
    try:
        sender.send(result)
    except Exception:  # an exception that does not pickle
        sender.send(("error", RuntimeError(result[-1]), result[-1]))


def run_in_own_group(function, *args, **kwargs):
    """``function(*args, **kwargs)`` in a forked child leading its own process group.

    Its result (or exception) comes back through a pipe. Whatever ends the wait (Ctrl-C, an
    error) kills the whole group and unlinks its shared memory before it propagates.
    """
    remove_stale_segments()
    started = time.time()
    parent = os.getpid()
    receiver, sender = multiprocessing.connection.Pipe(duplex=False)
    with interrupts.held():  # a Ctrl-C between the fork and the try below would leave the child to run on
        pid = os.fork()
        if pid == 0:  # the child never returns into the caller's code
            status = 0
            try:
                receiver.close()
                record = SHM_DIR / f"{RECORD_PREFIX}{parent}-{os.getpid()}"
                _child(function, args, kwargs, sender, parent, record)
            except BaseException:  # noqa: BLE001
                status = 1
            finally:
                os._exit(status)
    record = SHM_DIR / f"{RECORD_PREFIX}{parent}-{pid}"
    try:
        sender.close()
        try:
            os.setpgid(pid, pid)  # also here: no window in which a signal finds it in our group
        except (ProcessLookupError, PermissionError):
            pass
        interrupts.check()
        try:
            result = receiver.recv()
        except EOFError:
            raise RuntimeError("the Lava run ended without a result (its process died)") from None
    finally:
        receiver.close()
        _kill_group(pid)
        os.waitpid(pid, 0)
        _wait_group_gone(pid)
        remove_segments(record)
        remove_sem_open_temps(since=started)
    if result[0] == "ok":
        return result[1]
    raise result[1]
