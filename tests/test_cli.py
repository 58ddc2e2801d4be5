"""CLI error paths: one line, non-zero exit, no traceback, no partial output."""
import os

import pytest
import torch
from typer.testing import CliRunner

from loihi_stable.cli import app, parse_eps
from loihi_stable.errors import UserError
from loihi_stable.io import save_checkpoint

runner = CliRunner()


def invoke(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def assert_one_line_error(code, output, *needles):
    assert code == 2, output
    lines = [line for line in output.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    assert "Traceback" not in output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("text,value", [("8/255", 8 / 255), ("0.5", 0.5), ("0", 0.0), ("1", 1.0),
                                        ("1.5/255", 1.5 / 255), (" 2 / 255 ", 2 / 255)])
def test_parse_eps(text, value):
    assert parse_eps(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["2", "-1/255", "300/255", "abc", "1/0", "1/2/3", "/255", "nan", "inf"])
def test_parse_eps_rejects(text):
    with pytest.raises(UserError):
        parse_eps(text)


def test_export_missing_checkpoint(tmp_path):
    assert_one_line_error(*invoke("export", "--to", "netx", tmp_path / "nope.pt"), "not found")


def test_export_non_checkpoint_file(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("hello")
    out = tmp_path / "bad.net"
    assert_one_line_error(*invoke("export", "--to", "netx", bad, "-o", out), "not a loihi-stable checkpoint")
    assert not out.exists()


def test_export_torch_file_that_is_not_a_checkpoint(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(3)}, other)
    assert_one_line_error(*invoke("export", "--to", "netx", other), "not a loihi-stable checkpoint")
    assert not (tmp_path / "other.net").exists()


def test_export_unknown_format(tmp_path, dlif_checkpoint):
    save_checkpoint(tmp_path / "m.pt", dlif_checkpoint)
    assert_one_line_error(*invoke("export", "--to", "onnx", tmp_path / "m.pt"), "onnx")


@pytest.fixture()
def exported(tmp_path, dlif_checkpoint):
    save_checkpoint(tmp_path / "m.pt", dlif_checkpoint)
    code, output = invoke("export", "--to", "netx", tmp_path / "m.pt", "-o", tmp_path / "m.net")
    assert code == 0, output
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]
    return tmp_path / "m.net"


def test_run_non_hdf5(tmp_path):
    bad = tmp_path / "x.net"
    bad.write_bytes(b"not hdf5 at all")
    out = tmp_path / "r.json"
    assert_one_line_error(*invoke("run", bad, "--json", out), "not an HDF5 file")
    assert not out.exists()


def test_run_truncated_net(tmp_path, exported):
    data = exported.read_bytes()
    cut = tmp_path / "cut.net"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "r.json"
    code, output = invoke("run", cut, "--json", out)
    assert_one_line_error(code, output, "cut.net")
    assert not out.exists()


def test_run_unknown_backend(exported):
    assert_one_line_error(*invoke("run", exported, "--backend", "TrueNorth"), "unknown backend", "Loihi2SimCfg")


@pytest.mark.parametrize("eps", ["2", "-8/255", "x"])
def test_run_bad_eps(exported, eps):
    assert_one_line_error(*invoke("run", exported, "--attack", "pgd", "--eps", eps), "eps")


def test_run_hardware_backend_without_intel_libraries(exported):
    from lava.utils import loihi

    if loihi.is_installed():
        pytest.skip("Intel's Loihi 2 libraries are installed here")
    assert_one_line_error(*invoke("run", exported, "--backend", "Loihi2HwCfg"), "lava-loihi", "Loihi2SimCfg")


def test_train_rejects_unknown_neuron(tmp_path):
    assert_one_line_error(*invoke("train", "--neuron", "izhikevich", "--out", tmp_path / "m.pt"), "izhikevich")
    assert not (tmp_path / "m.pt").exists()


def test_train_rejects_missing_output_folder(tmp_path):
    assert_one_line_error(*invoke("train", "--out", tmp_path / "no" / "m.pt"), "does not exist")


def test_run_foreign_hdf5(tmp_path):
    import h5py

    foreign = tmp_path / "foreign.net"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=[1, 2, 3])
    assert_one_line_error(*invoke("run", foreign), "not a loihi-stable NetX export")


def test_run_checkpoint_instead_of_network(tmp_path, dlif_checkpoint):
    save_checkpoint(tmp_path / "m.pt", dlif_checkpoint)
    assert_one_line_error(*invoke("run", tmp_path / "m.pt"), "not an HDF5 file", "export")


def test_eval_table_json_and_plot(tmp_path, dlif_checkpoint):
    import json

    save_checkpoint(tmp_path / "m.pt", dlif_checkpoint)
    code, output = invoke("eval", tmp_path / "m.pt", "--attacks", "fgsm,pgd7,apgd-dlr", "--limit", "32",
                          "--quiet", "--json", tmp_path / "e.json", "--plot", tmp_path / "e.png")
    assert code == 0, output
    assert "Clean" in output and "PGD7" in output and "MS-MPPD" in output
    data = json.loads((tmp_path / "e.json").read_text())
    assert {"clean", "fgsm", "pgd7", "apgd-dlr"} <= set(data) and data["n"] == 32
    assert all(0.0 <= data[k] <= 1.0 for k in ("clean", "fgsm", "pgd7", "apgd-dlr"))
    assert len(data["layers"]["pgd7"]) == 2
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"


def test_eval_sweep(tmp_path, dlif_checkpoint):
    import json

    save_checkpoint(tmp_path / "m.pt", dlif_checkpoint)
    code, output = invoke("eval", tmp_path / "m.pt", "--sweep-eps", "0,8,32", "--limit", "32", "--quiet",
                          "--json", tmp_path / "s.json", "--plot", tmp_path / "s.png")
    assert code == 0, output
    rows = json.loads((tmp_path / "s.json").read_text())["sweep"]
    assert [r["eps_255"] for r in rows] == [0, 8, 32]
    assert rows[0]["ms_mppd"] == [0.0, 0.0]
    assert rows[2]["accuracy"] <= rows[0]["accuracy"]
    assert (tmp_path / "s.png").exists()


@pytest.mark.parametrize("args,needle", [(["--attacks", "cw"], "unknown attack"),
                                         (["--suite", "nope.yaml"], "suite"),
                                         (["--sweep-eps", "1,x"], "sweep-eps"),
                                         (["--eps", "9"], "eps")])
def test_eval_bad_input(tmp_path, dlif_checkpoint, args, needle):
    save_checkpoint(tmp_path / "m.pt", dlif_checkpoint)
    out = tmp_path / "e.json"
    assert_one_line_error(*invoke("eval", tmp_path / "m.pt", *args, "--json", out), needle)
    assert not out.exists()


def test_run_rejects_process_schedule_on_loihi2(exported):
    assert_one_line_error(*invoke("run", exported, "--backend", "Loihi2HwCfg", "--dlif-schedule", "process"),
                          "--dlif-schedule host")
    assert_one_line_error(*invoke("run", exported, "--dlif-schedule", "sometimes"), "process, host")


def test_the_same_evaluation_twice_writes_identical_json(tmp_path, dlif_checkpoint):
    """Every random start comes from a private seeded generator: one machine, one thread count, one JSON."""
    save_checkpoint(tmp_path / "m.pt", dlif_checkpoint)
    for name in ("a", "b"):
        code, output = invoke("eval", tmp_path / "m.pt", "--attacks", "apgd-ce20,apgd-dlr20@arctan:2,square200,adaptive5",
                              "--limit", "24", "--quiet", "--json", tmp_path / f"{name}.json")
        assert code == 0, output
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
