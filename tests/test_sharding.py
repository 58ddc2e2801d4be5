"""eval, certify, run and check under torchrun with 2 CPU processes (gloo): the same table and JSON as one
process, per sample; a worker that dies or is interrupted ends the command with one line and no JSON."""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loihi_stable.io import save_checkpoint
from conftest import exported

CLI = Path(sys.executable).parent / "loihi-stable"
TORCHRUN = Path(sys.executable).parent / "torchrun"
LAUNCHER = Path(sys.executable).parent / "loihi-stable-torchrun"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _eval(folder: Path, name: str, processes: int, *args, command_name: str = "eval",
          target: str = "m.pt") -> tuple[dict, str]:
    command = [str(CLI), command_name, str(folder / target), "--json", str(folder / f"{name}.json"), "--quiet", *args]
    if processes > 1:
        command = [str(TORCHRUN), "--nproc-per-node", str(processes), "--master-port", str(free_port()), *command]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads((folder / f"{name}.json").read_text()), done.stdout


@pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun is not installed")
@pytest.mark.parametrize("limit, batch", [(40, 16), (10, 16)])  # 3 batches over 2 ranks; fewer batches than ranks
def test_eval_under_torchrun_is_one_process_sample_for_sample(tmp_path, lif_checkpoint, limit, batch):
    save_checkpoint(tmp_path / "m.pt", lif_checkpoint)
    args = ["--suite", "fast", "--limit", str(limit), "--batch-size", str(batch)]
    one, one_out = _eval(tmp_path, "one", 1, *args)
    two, two_out = _eval(tmp_path, "two", 2, *args)
    assert one["n"] == limit and 0 < one["robust"] < one["clean"], "nothing broken or nothing robust: vacuous"
    assert two == one, [key for key in one if one[key] != two.get(key)]
    assert two_out.splitlines() == one_out.splitlines()


@pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun is not installed")
def test_certify_under_torchrun_is_one_process_sample_for_sample(tmp_path, ibp_checkpoint):
    save_checkpoint(tmp_path / "m.pt", ibp_checkpoint)
    args = ["--eps", "8/255", "--limit", "40", "--batch-size", "16", "--crown-steps", "2", "--points", "2",
            "--device", "cpu"]  # 3 batches over 2 ranks, the chip certificate and its check included
    one, one_out = _eval(tmp_path, "one", 1, *args, command_name="certify")
    two, two_out = _eval(tmp_path, "two", 2, *args, command_name="certify")
    assert one["n"] == 40 and 0 < one["verified_chip"] < one["clean"], "nothing or everything verified: vacuous"
    assert two == one, [key for key in one if one[key] != two.get(key)]
    assert two_out.splitlines() == one_out.splitlines()


TIMING = ("chip_seconds", "chip_samples_per_second")  # the only fields that differ between two runs


def _without_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k not in TIMING}


def _lines_without_timing(out: str) -> list[str]:
    return [line for line in out.splitlines() if not line.startswith("chip: ")]


@pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun is not installed")
@pytest.mark.parametrize("limit, batch", [(40, 16), (10, 16)])  # 3 batches over 2 ranks; fewer batches than ranks
def test_run_under_torchrun_is_one_process_sample_for_sample(tmp_path, dlif_checkpoint, limit, batch):
    """Crafting (chip-aware on the grid model, from-float), Square against the chip and the emulator, shared out."""
    exported(tmp_path, dlif_checkpoint)
    args = ["--backend", "emulator", "--attack", "fast", "--limit", str(limit), "--batch-size", str(batch)]
    one, one_out = _eval(tmp_path, "one", 1, *args, command_name="run", target="model.net")
    two, two_out = _eval(tmp_path, "two", 2, *args, command_name="run", target="model.net")
    if limit == 40:
        assert 0 < one["robust"] < one["results"]["clean"]["accuracy_chip"], "nothing broken or nothing robust: vacuous"
        assert sum(r["newly_broken"] for r in one["contributions"]["fast"].values()) > 0
    assert _without_timing(two) == _without_timing(one), [k for k in one if one[k] != two.get(k)]
    assert _lines_without_timing(two_out) == _lines_without_timing(one_out)


@pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun is not installed")
def test_check_under_torchrun_is_one_process_sample_for_sample(tmp_path, dlif_checkpoint):
    exported(tmp_path, dlif_checkpoint)
    args = ["--backend", "emulator", "--attack", "fast", "--limit", "40", "--batch-size", "16"]
    one, one_out = _eval(tmp_path, "one", 1, str(tmp_path / "model.net"), *args, command_name="check",
                         target="model.pt")
    two, two_out = _eval(tmp_path, "two", 2, str(tmp_path / "model.net"), *args, command_name="check",
                         target="model.pt")
    assert one["n"] == 40 and one["accuracy"]["chip_adv"] < one["accuracy"]["chip_clean"], "attack broke nothing"
    assert two == one, [key for key in one if one[key] != two.get(key)]
    assert two_out.splitlines() == one_out.splitlines()


def _workers(launcher_pid: int) -> dict[int, int]:
    """rank -> pid of the loihi-stable workers under a torchrun launcher."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        rank = next((int(v[5:]) for v in environ if v.startswith(b"RANK=")), None)
        if parent == launcher_pid and rank is not None:
            found[rank] = int(entry.name)
    return found


def _start_then(tmp_path, checkpoint, launcher: Path, stop) -> tuple[subprocess.CompletedProcess, Path]:
    """A long sharded ``run`` (snn-adaptive on 180 samples, 2 workers); ``stop(process, workers)`` once rank 0
    is crafting (its first progress bar is out: both workers are past start-up and in the process group)."""
    exported(tmp_path, checkpoint)
    out = tmp_path / "r.json"
    command = [str(launcher), "--nproc-per-node", "2", "--master-port", str(free_port()), str(CLI), "run",
               "--backend", "emulator", "--attack", "snn-adaptive", "--limit", "180", "--batch-size", "90",
               "--json", str(out), str(tmp_path / "model.net")]
    errors = tmp_path / "stderr.txt"
    with errors.open("w") as err:
        process = subprocess.Popen(command, cwd=tmp_path, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                   stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
        deadline = time.monotonic() + 300
        while "craft snn-adaptive" not in errors.read_text() and process.poll() is None:
            assert time.monotonic() < deadline, "the run never started crafting"
            time.sleep(0.2)
        assert process.poll() is None, errors.read_text()[-2000:]
        stop(process, _workers(process.pid))
        stdout, _ = process.communicate(timeout=120)
    return subprocess.CompletedProcess(command, process.returncode, stdout, errors.read_text()), out


def _last_lines(stderr: str) -> list[str]:
    """stderr as a terminal shows it: progress-bar redraws (carriage returns) collapsed."""
    return [line.rsplit("\r", 1)[-1] for line in stderr.splitlines() if line.rsplit("\r", 1)[-1].strip()]


@pytest.mark.skipif(shutil.which(str(LAUNCHER)) is None, reason="loihi-stable-torchrun is not installed")
def test_a_worker_that_dies_ends_the_command_with_one_line_and_no_json(tmp_path, dlif_checkpoint):
    def kill_rank_1(process, workers):
        assert set(workers) == {0, 1}, workers
        os.kill(workers[1], signal.SIGKILL)

    done, out = _start_then(tmp_path, dlif_checkpoint, LAUNCHER, kill_rank_1)
    lines = _last_lines(done.stderr)
    assert done.returncode == 1, done.stderr[-2000:]
    assert lines[-1] == ("error: torchrun worker rank 1 was killed by SIGKILL, so the command stopped; no output "
                         "was written: rerun it"), lines[-3:]
    assert not any(line.startswith(("error:", "interrupted", "stopped")) for line in lines[:-1]), lines
    assert "Traceback" not in done.stderr and not out.exists() and not list(tmp_path.glob("r.json*"))


@pytest.mark.skipif(shutil.which(str(LAUNCHER)) is None, reason="loihi-stable-torchrun is not installed")
def test_ctrl_c_under_torchrun_ends_the_command_with_one_line_and_no_json(tmp_path, dlif_checkpoint):
    def ctrl_c(process, workers):  # a terminal's Ctrl-C: SIGINT to the launcher and every worker
        os.killpg(process.pid, signal.SIGINT)

    done, out = _start_then(tmp_path, dlif_checkpoint, LAUNCHER, ctrl_c)
    lines = _last_lines(done.stderr)
    assert done.returncode == 130, done.stderr[-2000:]
    assert lines[-1] == "interrupted; no output was written", lines[-3:]
    assert not any(line.startswith(("error:", "interrupted", "stopped")) for line in lines[:-1]), lines
    assert "Traceback" not in done.stderr and not out.exists() and not list(tmp_path.glob("r.json*"))


@pytest.mark.skipif(shutil.which(str(TORCHRUN)) is None, reason="torchrun is not installed")
def test_under_plain_torchrun_a_dead_worker_leaves_one_line_of_ours_and_no_json(tmp_path, dlif_checkpoint):
    """torchrun adds its own failure report (which it alone prints); ours is one line, from rank 0."""
    def kill_rank_1(process, workers):
        os.kill(workers[1], signal.SIGKILL)

    done, out = _start_then(tmp_path, dlif_checkpoint, TORCHRUN, kill_rank_1)
    ours = [line for line in _last_lines(done.stderr) if line.startswith(("error:", "interrupted", "stopped"))]
    assert done.returncode != 0
    assert ours == ["stopped by torchrun (another worker failed or was interrupted); no output was written"], ours
    assert "loihi_stable" not in done.stderr and not out.exists() and not list(tmp_path.glob("r.json*"))
