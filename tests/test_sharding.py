"""eval and certify under torchrun with 2 CPU processes (gloo): the same table and JSON as one process, per sample."""
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from loihi_stable.io import save_checkpoint

CLI = Path(sys.executable).parent / "loihi-stable"
TORCHRUN = Path(sys.executable).parent / "torchrun"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _eval(folder: Path, name: str, processes: int, *args, command_name: str = "eval") -> tuple[dict, str]:
    command = [str(CLI), command_name, str(folder / "m.pt"), "--json", str(folder / f"{name}.json"), "--quiet", *args]
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
