"""Ctrl-C and kills during a Lava run: the run stops within seconds, whole, and writes nothing."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import exported
from netx_export.runtime.lava_session import RECORD_PREFIX, SHM_DIR, remove_stale_segments

CLI = Path(sys.executable).parent / "loihi-stable"


@pytest.fixture(scope="module")
def conv_net(tmp_path_factory, conv_lif_checkpoint):
    """A conv file (slow on Lava: about 25 samples/s), so a run lasts long enough to interrupt."""
    return exported(tmp_path_factory.mktemp("interrupt"), conv_lif_checkpoint) / "model.net"


def live_processes(session: int) -> list[int]:
    """Processes of ``session`` that are not zombies."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        state, sid = fields[0], int(fields[3])
        if sid == session and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


def segments() -> set[str]:
    return {p.name for p in SHM_DIR.iterdir()} if SHM_DIR.is_dir() else set()


def left_behind(before: set[str], command: int) -> set[str]:
    """Segments that appeared since ``before``, less those of Lava runs of other commands going on beside
    this test (another job on the machine): each lists its segments in its record before it makes them."""
    left = segments() - before
    for record in SHM_DIR.glob(f"{RECORD_PREFIX}*"):
        if not record.name[len(RECORD_PREFIX):].startswith(f"{command}-"):
            try:
                left -= {record.name, *record.read_text().split()}
            except OSError:
                left.discard(record.name)
    return left


def default_sigint() -> None:
    """In the child: Ctrl-C as a terminal gives it, even where this test runs with SIGINT ignored
    (a job started with & by a shell without job control); the CLI rightly respects an ignored SIGINT."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_run(net: Path, out: Path) -> subprocess.Popen:
    """`run` on Loihi2SimCfg in a session of its own (as a terminal would start it), once Lava's workers are up."""
    cli = subprocess.Popen([str(CLI), "run", "--backend", "Loihi2SimCfg", "--attack", "none", "--json", str(out), str(net)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                           preexec_fn=default_sigint)
    deadline = time.monotonic() + 120
    while len(live_processes(cli.pid)) < 4:  # the command, its Lava child, the shared-memory manager, workers
        assert cli.poll() is None, cli.communicate()
        assert time.monotonic() < deadline, "Lava never started"
        time.sleep(0.05)
    return cli


def assert_stopped_cleanly(cli: subprocess.Popen, sent: float, out: Path, before: set[str]) -> str:
    _, stderr = cli.communicate(timeout=10)
    while live_processes(cli.pid) and time.monotonic() - sent < 10:
        time.sleep(0.05)
    assert time.monotonic() - sent < 10
    assert live_processes(cli.pid) == []
    assert cli.returncode != 0
    assert not out.exists() and not list(out.parent.glob("*.tmp*"))
    left = left_behind(before, cli.pid)
    assert left == set(), f"shared memory left behind: {left}"
    assert "Traceback" not in stderr
    return stderr


@pytest.mark.lava
@pytest.mark.parametrize("delay", [0.0, 0.7, 2.0, 4.0])
def test_ctrl_c_to_the_process_group_stops_lava_within_seconds(conv_net, tmp_path, delay):
    before = segments()
    cli = start_run(conv_net, tmp_path / "run.json")
    time.sleep(delay)
    sent = time.monotonic()
    os.killpg(cli.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    stderr = assert_stopped_cleanly(cli, sent, tmp_path / "run.json", before)
    assert cli.returncode == 130 and "interrupted" in stderr


@pytest.mark.lava
@pytest.mark.parametrize("delay", [0.0, 2.0])
def test_sigint_to_the_command_alone_is_never_lost(conv_net, tmp_path, delay):
    before = segments()
    cli = start_run(conv_net, tmp_path / "run.json")
    time.sleep(delay)
    sent = time.monotonic()
    cli.send_signal(signal.SIGINT)
    assert_stopped_cleanly(cli, sent, tmp_path / "run.json", before)
    assert cli.returncode == 130


@pytest.mark.lava
def test_sigkill_leaves_no_workers_and_the_next_run_removes_its_segments(conv_net, tmp_path):
    before = segments()
    cli = start_run(conv_net, tmp_path / "run.json")
    sent = time.monotonic()
    cli.kill()
    cli.wait(timeout=10)
    while live_processes(cli.pid) and time.monotonic() - sent < 10:
        time.sleep(0.05)
    assert live_processes(cli.pid) == [], "Lava workers outlived a SIGKILLed command"
    remove_stale_segments()  # what the next run does first
    assert left_behind(before, cli.pid) == set()  # another job's live Lava run beside this test is not ours
    assert not any(name.startswith(f"{RECORD_PREFIX}{cli.pid}-") for name in segments())
    assert not (tmp_path / "run.json").exists()


@pytest.mark.skipif(not SHM_DIR.is_dir(), reason="no /dev/shm on this system")
def test_semaphores_are_recorded_before_they_exist(tmp_path):
    """A kill between sem_open and its unlink leaves "sem.mp-..."; the record must already name it."""
    record = tmp_path / "record"
    code = ("import multiprocessing as mp, pathlib, sys; from netx_export.runtime import lava_session as s; "
            "s._record_segments(pathlib.Path(sys.argv[1])); mp.get_context('fork').Lock(); "
            "from multiprocessing import shared_memory; m = shared_memory.SharedMemory(create=True, size=8); "
            "m.close(); m.unlink()")
    subprocess.run([sys.executable, "-c", code, str(record)], check=True)
    names = record.read_text().split()
    assert any(n.startswith("sem.mp-") for n in names) and any(n.startswith("psm_") for n in names), names


@pytest.mark.skipif(not SHM_DIR.is_dir(), reason="no /dev/shm on this system")
def test_a_process_still_running_after_the_cleanup_makes_no_segment(tmp_path):
    """The cleanup removed the record; a process the group kill missed must stop, not make a segment
    that no record names."""
    record = SHM_DIR / f"{RECORD_PREFIX}test-{os.getpid()}"
    code = ("import pathlib, sys; from netx_export.runtime import lava_session as s; record = pathlib.Path(sys.argv[1]); "
            "s._record_segments(record); record.unlink(); from multiprocessing import shared_memory; "
            "m = shared_memory.SharedMemory(create=True, size=8); m.close(); m.unlink(); print('made', m.name)")
    before = segments()
    try:
        done = subprocess.run([sys.executable, "-c", code, str(record)], capture_output=True, text=True,
                              start_new_session=True, timeout=60)  # its own group: the kill it does stops only it
    finally:
        record.unlink(missing_ok=True)
    assert done.returncode == -signal.SIGKILL, (done.returncode, done.stdout, done.stderr)
    assert "made" not in done.stdout
    assert not {n for n in segments() - before if n.startswith("psm_")}


@pytest.mark.skipif(not SHM_DIR.is_dir(), reason="no /dev/shm on this system")
def test_sem_open_temps_left_by_a_kill_are_swept_and_older_files_kept():
    from netx_export.runtime.lava_session import remove_sem_open_temps

    since = time.time()
    left = SHM_DIR / "sem.Zq9xY2"  # the shape glibc gives a temp file; "sem.mp-..." names are longer
    named = SHM_DIR / "sem.mp-keepme12"
    left.write_bytes(b"")
    named.write_bytes(b"")
    try:
        remove_sem_open_temps(since=since + 60)  # made before the run started: not ours, kept
        assert left.exists()
        remove_sem_open_temps(since=since)
        assert not left.exists() and named.exists()
    finally:
        left.unlink(missing_ok=True)
        named.unlink(missing_ok=True)


def test_a_swallowed_ctrl_c_still_stops_every_write(tmp_path):
    """Python drops a KeyboardInterrupt raised inside a weakref callback or __del__; the record of it
    must still stop the command before it writes anything."""
    from loihi_stable import interrupts
    from loihi_stable.io import write_json
    from loihi_stable.progress import progress_bar

    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)  # as Python sets it where SIGINT is not ignored
        interrupts.install()
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.1)
        except KeyboardInterrupt:
            pass  # swallowed, as a callback would
        with pytest.raises(KeyboardInterrupt):
            write_json(tmp_path / "out.json", {"a": 1})
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(KeyboardInterrupt):
            for _ in progress_bar(range(3), disable=True):
                pass
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupts.install()  # clears the record (a no-op for the handler here)

# Ctrl-C at measured moments of train, export, eval and run: tests/test_interrupt_moments.py


def test_a_ctrl_c_as_a_bar_closes_leaves_no_line_open():
    """The interrupt's line goes onto whatever stderr holds: a bar's final redraw and its newline go together,
    and the interrupt is raised after them."""
    import io

    from loihi_stable import interrupts
    from loihi_stable.progress import progress_bar

    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        interrupts.install()
        out = io.StringIO()
        bar = progress_bar(total=3, file=out, mininterval=0)
        bar.update(3)
        redraw = bar.display

        def redraw_then_ctrl_c(*args, **kwargs):
            shown = redraw(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGINT)
            return shown
        bar.display = redraw_then_ctrl_c
        with pytest.raises(KeyboardInterrupt):
            bar.close()
        assert out.getvalue().endswith("\n"), repr(out.getvalue()[-80:])
        assert interrupts.received()
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupts.install()


def test_a_ctrl_c_as_the_command_exits_changes_nothing(monkeypatch):
    """A Ctrl-C that lands while the finished command stops listening for more (inside signal.signal, which
    is Python code) is ignored like any later one: no traceback, the command's own exit code."""
    from loihi_stable import cli, interrupts

    previous = signal.getsignal(signal.SIGINT)
    lookup = signal.getsignal
    finished, landed = [], []

    def finished_command(**_):
        interrupts.install()  # as every command does
        finished.append(True)
        return 0

    def ctrl_c_first(signum):
        if finished and not landed:
            landed.append(True)
            os.kill(os.getpid(), signal.SIGINT)
        return lookup(signum)

    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        monkeypatch.setattr(cli, "app", finished_command)
        monkeypatch.setattr(signal, "getsignal", ctrl_c_first)
        with pytest.raises(SystemExit) as exit_:
            cli.main()
        assert exit_.value.code == 0 and landed
        assert lookup(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupts.install()


def test_a_ctrl_c_just_after_the_command_returned_still_ends_with_its_line(tmp_path, capsys):
    """typer turns a KeyboardInterrupt raised after the command returned (here: as its context closes) into a
    silent exit 130: the interrupt's line, naming what the command wrote, must still come (it did not, once in
    ~20 runs of test_interrupt_moments' run-writing)."""
    import typer

    from loihi_stable import cli, interrupts
    from loihi_stable.io import write_json

    def ctrl_c():
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.1)

    app = typer.Typer(cls=cli.OneLineErrors, add_completion=False)

    @app.command()
    @cli.friendly_errors
    def finish(ctx: typer.Context):
        write_json(tmp_path / "out.json", {"a": 1})
        ctx.call_on_close(ctrl_c)

    @app.command()
    def other():  # a second command, so that the first is chosen by name as on the real CLI
        pass

    previous = signal.getsignal(signal.SIGINT)
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        code = app(["finish"], standalone_mode=False)
    finally:
        signal.signal(signal.SIGINT, previous)
        interrupts.install()
    assert code == 130
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last == f"interrupted; written before it: {tmp_path / 'out.json'} (complete files)", last
