"""Ctrl-C at moments spread over whole runs of train, export, eval and run (emulator backend).

The moments come from measuring the run: one uninterrupted run gives its length, the interrupts land
at fractions of it; others land the instant a write begins (a temp file of the plot, the .net file, or
the last checkpoint appearing), where libraries that cannot be interrupted safely are at work. Every
run must end with exit 130 and one ``interrupted`` line (or finish normally, if the signal came after
its end), no traceback, no temp file, and only complete outputs that the line names.
"""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import exported
from loihi_stable.io import load_checkpoint

CLI = Path(sys.executable).parent / "loihi-stable"
SPREAD = (0.2, 0.5, 0.85)


def default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start(args, cwd) -> subprocess.Popen:
    return subprocess.Popen([str(CLI), *map(str, args)], cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=default_sigint)


def measured_seconds(args, cwd) -> float:
    started = time.monotonic()
    cli = start(args, cwd)
    _, stderr = cli.communicate(timeout=300)
    assert cli.returncode == 0, stderr[-800:]
    return time.monotonic() - started


def wait_for(cli: subprocess.Popen, moment, folder: Path) -> bool:
    """Sleep until ``moment`` (seconds after start, or a predicate on the folder); False if the run ended first."""
    deadline = time.monotonic() + (moment if isinstance(moment, float) else 300)
    while time.monotonic() < deadline:
        if cli.poll() is not None:
            return False
        if not isinstance(moment, float) and moment(folder):
            return True
        time.sleep(0.0005 if not isinstance(moment, float) else 0.005)
    return cli.poll() is None


def interrupt(args, folder: Path, moment) -> tuple[int, str, bool, str]:
    """(exit code, last stderr line, whether the signal was sent before the run ended, the whole stderr)."""
    cli = start(args, folder)
    sent = wait_for(cli, moment, folder)
    if sent:
        os.killpg(cli.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        at = time.monotonic()
    stdout, stderr = cli.communicate(timeout=60)
    if sent:
        assert time.monotonic() - at < 10, "the interrupt took longer than 10 s to end the command"
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-1500:]
    assert cli.returncode in (0, 130), f"exit {cli.returncode}; stderr: {stderr[-3000:]}"
    assert not list(folder.glob(".*.tmp")), list(folder.glob(".*.tmp"))
    lines = stderr.replace("\r", "\n").strip().splitlines()
    assert lines or cli.returncode == 0, f"exit {cli.returncode} and nothing on stderr; stdout: {stdout[-800:]!r}"
    return cli.returncode, lines[-1] if lines else "", sent, stderr


def assert_interrupted_or_finished(code: int, last: str, sent: bool, stderr: str) -> None:
    if code == 0:
        return  # the signal came as the command was exiting: it finished, every output complete (checked by caller)
    assert sent and code == 130, (code, last)
    assert last.startswith("interrupted"), f"last line {last!r}; the whole stderr: {stderr[-4000:]!r}"


def temp_file_appears(pattern: str, count: int = 1):
    """A predicate: the ``count``-th distinct temp file matching ``pattern`` has appeared."""
    seen: set[str] = set()

    def appeared(folder: Path) -> bool:
        seen.update(entry.name for entry in os.scandir(folder) if entry.name.startswith(".")
                    and entry.name.endswith(".tmp") and Path(entry.name).match(pattern))
        return len(seen) >= count
    return appeared


def replaced(name: str, count: int):
    """A predicate: ``name`` has been (re)written ``count`` times (an epoch's checkpoint just renamed in)."""
    stamps: set[int] = set()

    def happened(folder: Path) -> bool:
        try:
            stamps.add(os.stat(folder / name).st_mtime_ns)
        except FileNotFoundError:
            pass
        return len(stamps) >= count
    return happened


# --- train -------------------------------------------------------------------------------------
EPOCHS = 4
TRAIN = ["train", "--out", "m.pt", "--epochs", str(EPOCHS), "--limit", "400", "--val-size", "50", "--hidden", "32"]


@pytest.fixture(scope="module")
def train_seconds(tmp_path_factory):
    return measured_seconds(TRAIN, tmp_path_factory.mktemp("measure-train"))


TRAIN_MOMENTS = {**{f"{f:.0%} of the run": f for f in SPREAD},
                 "first plot being drawn": temp_file_appears(".m.metrics.png.*.tmp"),
                 "last checkpoint just written": replaced("m.last.pt", EPOCHS),
                 "last plot being drawn": temp_file_appears(".m.metrics.png.*.tmp", EPOCHS)}


@pytest.mark.parametrize("moment", list(TRAIN_MOMENTS))
def test_train_interrupted_at_any_moment_leaves_what_it_says(tmp_path, train_seconds, moment):
    when = TRAIN_MOMENTS[moment]
    code, last, sent, stderr = interrupt(TRAIN, tmp_path, when * train_seconds if isinstance(when, float) else when)
    assert_interrupted_or_finished(code, last, sent, stderr)
    best, last_pt = tmp_path / "m.pt", tmp_path / "m.last.pt"
    metrics = [tmp_path / f"m.metrics.{ext}" for ext in ("json", "csv", "png")]
    assert best.exists() == last_pt.exists() == all(p.exists() for p in metrics), sorted(os.listdir(tmp_path))
    if last_pt.exists():
        state = load_checkpoint(last_pt)
        load_checkpoint(best)
        assert len(json.loads(metrics[0].read_text())["epochs"]) == state["epoch"]
        if code == 130:  # the line names the last checkpoint; --resume where epochs are left to do
            assert str(last_pt.name) in last and ("--resume" in last or state["epoch"] == EPOCHS), last
            assert state["epoch"] <= EPOCHS
    else:
        assert code == 130 and "no output was written" in last, last
    if moment.startswith("last"):
        assert last_pt.exists() and load_checkpoint(last_pt)["epoch"] == EPOCHS


# --- export, eval, run -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model_files(tmp_path_factory, dlif_checkpoint):
    return exported(tmp_path_factory.mktemp("interrupt-files"), dlif_checkpoint)


COMMANDS = {
    "export": (lambda f: ["export", "--to", "netx", f / "model.pt", "-o", "out.net"], ["out.net"],
               temp_file_appears(".out.net.*.tmp")),
    "eval": (lambda f: ["eval", f / "model.pt", "--attacks", "pgd10,apgd-ce", "--limit", "100", "--json", "out.json",
                        "--plot", "out.png"], ["out.json", "out.png"], temp_file_appears(".out.png.*.tmp")),
    "run": (lambda f: ["run", "--backend", "emulator", "--attack", "fast", "--limit", "100", "--json", "out.json",
                       f / "model.net"], ["out.json"], temp_file_appears(".out.json.*.tmp")),
}


@pytest.fixture(scope="module")
def command_seconds(tmp_path_factory, model_files):
    return {name: measured_seconds(args(model_files), tmp_path_factory.mktemp(f"measure-{name}"))
            for name, (args, _, _) in COMMANDS.items()}


@pytest.mark.parametrize("moment", ["30%", "70%", "writing"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_commands_interrupted_at_any_moment_write_nothing_half_made(tmp_path, model_files, command_seconds,
                                                                    command, moment):
    args, outputs, writing = COMMANDS[command]
    when = writing if moment == "writing" else float(moment[:-1]) / 100 * command_seconds[command]
    code, last, sent, stderr = interrupt(args(model_files), tmp_path, when)
    assert_interrupted_or_finished(code, last, sent, stderr)
    for name in outputs:
        path = tmp_path / name
        if code == 130:
            assert path.exists() == (name in last), (name, last)  # the line names exactly what it left
        else:
            assert path.exists()
        if path.exists() and name.endswith(".json"):
            json.loads(path.read_text())
        if path.exists() and name.endswith(".net"):
            from netx_export.fileformat.netx_file import read_netx
            read_netx(path)
