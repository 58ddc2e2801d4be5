"""Hostile files: a checkpoint or NetX file must never make us run code or read a folder it names."""
import copy
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from loihi_stable.cli import app
from loihi_stable.data import load_cifar
from loihi_stable.errors import UserError
from loihi_stable.io import save_checkpoint
from loihi_stable.models import ModelConfig, build_model
from netx_export.compiler.export import write_netx

runner = CliRunner()


class _Payload:
    """Unpickling this opens (creates) the marker file: the stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def hostile_cifar_folder(root, marker):
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batch = {b"data": _Payload(marker), b"labels": [0]}
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch))
    return root


def test_restricted_unpickler_refuses_a_payload(tmp_path):
    marker = tmp_path / "pwned"
    hostile_cifar_folder(tmp_path / "data", marker)
    with pytest.raises(UserError, match="not a CIFAR batch"):
        load_cifar("cifar10", tmp_path / "data")
    assert not marker.exists()


def test_restricted_unpickler_reads_numpy_batches(tmp_path):
    """What the real batches hold (a uint8 ndarray, bytes, lists of ints) still loads."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        batch = {b"batch_label": b"testing batch 1 of 1", b"labels": [3, 7],
                 b"data": rng.integers(0, 256, (2, 3072), dtype=np.uint8), b"filenames": [b"a.png", b"b.png"]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    train_set, test_set = load_cifar("cifar10", tmp_path)
    assert train_set.x.shape == (10, 3, 32, 32) and test_set.y.tolist() == [3, 7]


@pytest.fixture()
def hostile_files(tmp_path, lif_checkpoint):
    """A valid checkpoint and NetX file that claim CIFAR-10 and name a folder of payloads."""
    marker = tmp_path / "pwned"
    data = hostile_cifar_folder(tmp_path / "data", marker)
    payload = copy.deepcopy(lif_checkpoint)
    payload["train_config"] = {**payload["train_config"], "dataset": "cifar10", "data_root": str(data)}
    save_checkpoint(tmp_path / "model.pt", payload)
    model = build_model(ModelConfig.from_dict(payload["model_config"]))
    model.load_state_dict(payload["state_dict"])
    write_netx(model, payload, tmp_path / "model.net")
    return tmp_path, marker, data


@pytest.mark.parametrize("command", [
    ["eval", "model.pt", "--attacks", "fgsm", "--quiet"],
    ["run", "model.net", "--backend", "emulator", "--quiet"],
    ["check", "model.pt", "model.net", "--backend", "emulator", "--quiet"],
    ["certify", "model.pt", "model.net", "--quiet"],
])
@pytest.mark.parametrize("name_the_folder", [False, True])
def test_a_recorded_data_folder_runs_no_code(hostile_files, command, name_the_folder):
    tmp_path, marker, data = hostile_files
    args = [str(tmp_path / a) if a.startswith("model.") else a for a in command]
    args += ["--json", str(tmp_path / "out.json")]
    if name_the_folder:
        args += ["--data-root", str(data)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "Traceback" not in result.output
    assert ("not a CIFAR batch" if name_the_folder else "--data-root") in result.output
    assert not marker.exists()
    assert not (tmp_path / "out.json").exists()


@pytest.mark.parametrize("name_the_folder", [False, True])
def test_conv_export_reads_no_recorded_folder_and_writes_nothing(tmp_path, name_the_folder):
    marker = tmp_path / "pwned"
    data = hostile_cifar_folder(tmp_path / "data", marker)
    config = ModelConfig(arch="convnet-s", input_shape=[3, 32, 32], mean=[0.5] * 3, std=[0.25] * 3, timesteps=2)
    model = build_model(config)
    save_checkpoint(tmp_path / "conv.pt", {"model_config": config.to_dict(), "state_dict": model.state_dict(),
                                           "train_config": {"dataset": "cifar10", "data_root": str(data)}})
    args = ["export", "--to", "netx", str(tmp_path / "conv.pt"), "-o", str(tmp_path / "conv.net")]
    result = runner.invoke(app, args + (["--data-root", str(data)] if name_the_folder else []))
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    assert not marker.exists() and not (tmp_path / "conv.net").exists()


def test_weights_are_stored_narrow_and_compressed_and_read_back_exactly(tmp_path, dlif_checkpoint):
    """int16 + gzip (the file VGG11 needs): the same integers as the int32 file stock NetX read before."""
    import h5py

    from netx_export.compiler.export import model_from_checkpoint, write_netx
    from netx_export.fileformat.netx_file import read_netx, write_netx_file

    spec = write_netx(model_from_checkpoint(dlif_checkpoint), dlif_checkpoint, tmp_path / "new.net")
    write_netx_file(spec, tmp_path / "old.net", weight_dtype=np.int32, weight_storage={})
    with h5py.File(tmp_path / "new.net") as handle:
        weight = handle["layer/0/weight"]
        assert weight.dtype == np.int16 and weight.compression == "gzip"
    for new, old in zip(read_netx(tmp_path / "new.net").layers, read_netx(tmp_path / "old.net").layers):
        np.testing.assert_array_equal(new.weight, old.weight)
    assert (tmp_path / "new.net").stat().st_size < (tmp_path / "old.net").stat().st_size
