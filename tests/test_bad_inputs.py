"""Fuzz: malformed checkpoints, .net files, numbers and paths for every command.

Each must end with exit code 2 and one ``error:`` line, no traceback, no file written, every
input intact.
"""
import copy
import hashlib
import io
import json
import os

import h5py
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from loihi_stable.cli import app
from loihi_stable.errors import UserError
from loihi_stable.io import save_checkpoint
from loihi_stable.models import build_model, ModelConfig
from netx_export.compiler.export import write_netx
from netx_export.fileformat.netx_file import EXTENSION_GROUP, content_digest, read_netx

runner = CliRunner()


def snapshot(folder) -> dict:
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


def assert_refused(folder, *args):
    before = snapshot(folder)
    result = runner.invoke(app, [str(a) for a in args])
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2, (args, result.output, result.exception)
    assert len(lines) == 1 and lines[0].startswith("error: "), (args, result.output)
    assert "Traceback" not in result.output
    assert snapshot(folder) == before, f"{args}: files changed"
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, lif_checkpoint, dlif_checkpoint):
    folder = tmp_path_factory.mktemp("bad")
    for name, payload in (("lif", lif_checkpoint), ("dlif", dlif_checkpoint)):
        save_checkpoint(folder / f"{name}.pt", payload)
        model = build_model(ModelConfig.from_dict(payload["model_config"]))
        model.load_state_dict(payload["state_dict"])
        write_netx(model, payload, folder / f"{name}.net")
    return folder


# --- checkpoints -----------------------------------------------------------------------------
def _first_weight(payload):
    return next(k for k in payload["state_dict"] if k.endswith("weight"))


def _mutations():
    def drop(key):
        return lambda p: p.pop(key)

    def config(**changes):
        return lambda p: p["model_config"].update(changes)

    def weight(fn):
        return lambda p: p["state_dict"].__setitem__(_first_weight(p), fn(p["state_dict"][_first_weight(p)]))

    return {
        "no model_config": drop("model_config"),
        "no state_dict": drop("state_dict"),
        "config is a list": lambda p: p.__setitem__("model_config", [1, 2]),
        "unknown config key": config(colour="red"),
        "unknown neuron": config(neuron="izhikevich"),
        "unknown arch": config(arch="transformer"),
        "huge hidden layer": config(hidden=[10**9, 64]),
        "zero time steps": config(timesteps=0),
        "leak 2": config(leak=2.0),
        "threshold nan": config(threshold=float("nan")),
        "hidden as text": config(hidden="128,64"),
        "wrong weight shape": weight(lambda w: w[:, :-1]),
        "nan weight": weight(lambda w: w.clone().fill_(float("nan"))),
        "inf weight": weight(lambda w: w.clone().fill_(float("inf"))),
        "non-tensor weight": weight(lambda w: 3),
        "other version": lambda p: p.__setitem__("version", 99),
    }


@pytest.mark.parametrize("case", list(_mutations()))
def test_malformed_checkpoints_are_refused_by_every_command(files, lif_checkpoint, case, tmp_path):
    payload = copy.deepcopy(lif_checkpoint)
    _mutations()[case](payload)
    bad = files / f"bad-{case.replace(' ', '-')}.pt"
    torch.save(payload, bad)
    try:
        for command in (["eval", bad, "--attacks", "fgsm", "--limit", "4"], ["export", bad, "-o", tmp_path / "x.net"],
                        ["certify", bad, "--limit", "2"], ["check", bad, "--limit", "2"]):
            assert_refused(files, *command)
            assert not (tmp_path / "x.net").exists()
    finally:
        bad.unlink()


@pytest.mark.parametrize("content", [b"", b"\x00" * 100, b"PK\x03\x04garbage", "half"])
def test_unreadable_checkpoints(files, content):
    bad = files / "broken.pt"
    bad.write_bytes((files / "lif.pt").read_bytes()[: (files / "lif.pt").stat().st_size // 2]
                    if content == "half" else content)
    try:
        for command in (["eval", bad], ["export", bad, "-o", files / "x.net"], ["certify", bad], ["check", bad]):
            assert_refused(files, *command)
    finally:
        bad.unlink()


def test_resume_from_another_network_is_one_line(files, tmp_path):
    out = tmp_path / "m.pt"
    base = ["train", "--out", out, "--epochs", "1", "--limit", "64", "--val-size", "8", "--quiet"]
    assert runner.invoke(app, [str(a) for a in base + ["--hidden", "16"]]).exit_code == 0
    line = assert_refused(tmp_path, *base, "--hidden", "32", "--resume")
    assert "another network" in line


# --- NetX files ------------------------------------------------------------------------------
def edited(source, target, edit):
    """A copy of ``source`` changed by ``edit(handle)``, with a recomputed (valid) checksum."""
    target.write_bytes(source.read_bytes())
    with h5py.File(target, "r+") as handle:
        edit(handle)
        try:
            handle[EXTENSION_GROUP].attrs["sha256"] = content_digest(handle)
        except UserError:  # links: no digest can be computed, the reader refuses them before it checks one
            pass
    return target


def _replace(handle, key, value):
    del handle[key]
    handle[key] = value


NET_EDITS = {
    "zero time steps": lambda h: h[EXTENSION_GROUP].attrs.__setitem__("timesteps", 0),
    "negative time steps": lambda h: h[EXTENSION_GROUP].attrs.__setitem__("timesteps", -3),
    "no vThMant": lambda h: h["layer/0/neuron"].__delitem__("vThMant"),
    "no layers": lambda h: [h["layer"].__delitem__(k) for k in list(h["layer"])],
    "transposed weights": lambda h: _replace(h, "layer/0/weight", np.asarray(h["layer/0/weight"]).T),
    "one weight changed": lambda h: _replace(h, "layer/1/weight", np.asarray(h["layer/1/weight"]) + 2),
    "vThMant too large": lambda h: _replace(h, "layer/0/neuron/vThMant", 1 << 20),
    "vDecay negative": lambda h: _replace(h, "layer/0/neuron/vDecay", -5),
    "short decay schedule": lambda h: _replace(h, "layer/0/neuron/vDecaySchedule", np.array([1, 2], np.int32)),
    "garbage checkpoint": lambda h: _replace(h, f"{EXTENSION_GROUP}/checkpoint", np.void(b"not a checkpoint")),
    "no checkpoint": lambda h: h[EXTENSION_GROUP].__delitem__("checkpoint"),
    "external link": lambda h: h.__setitem__("layer/9", h5py.ExternalLink("/etc/passwd.h5", "/x")),
    "soft link": lambda h: h.__setitem__("layer/9", h5py.SoftLink("/layer/0")),
    "unknown layer type": lambda h: _replace(h, "layer/1/type", np.array([b"lstm"], dtype="S10")),
}


@pytest.mark.parametrize("case", list(NET_EDITS))
def test_malformed_net_files_are_refused(files, case):
    assert_net_refused(files, NET_EDITS[case])


def assert_net_refused(files, edit):
    """``run`` and ``check`` both refuse the .net file ``edit`` makes, in one line."""
    bad = edited(files / "dlif.net", files / "bad.net", edit)
    try:
        assert_refused(files, "run", "--backend", "emulator", "--limit", "3", bad)
        assert_refused(files, "check", files / "dlif.pt", bad, "--limit", "3")
    finally:
        bad.unlink()


def test_net_with_data_stored_outside_the_file_is_refused(files, tmp_path):
    outside = tmp_path / "weights.bin"
    outside.write_bytes(np.zeros(64, np.int32).tobytes())

    def external(handle):
        del handle["layer/0/neuron/refDelay"]
        handle["layer/0/neuron"].create_dataset("refDelay", shape=(1,), dtype=np.int32, external=[(str(outside), 0, 4)])
    bad = files / "bad.net"  # no recomputed digest: reading the external data is what must not happen
    bad.write_bytes((files / "lif.net").read_bytes())
    with h5py.File(bad, "r+") as handle:
        external(handle)
    try:
        assert "outside the file" in assert_refused(files, "run", "--backend", "emulator", "--limit", "3", bad)
    finally:
        bad.unlink()


@pytest.mark.parametrize("where", [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.98])
def test_corrupted_net_is_refused_or_unchanged(files, where):
    """64 bytes of 0xFF anywhere: refused (integrity check, or unreadable), or the bytes hit unused
    space and the network read is exactly the original."""
    data = bytearray((files / "dlif.net").read_bytes())
    at = int(len(data) * where)
    data[at:at + 64] = b"\xff" * 64
    bad = files / "corrupt.net"
    bad.write_bytes(bytes(data))
    try:
        try:
            spec = read_netx(bad)
        except UserError:
            assert_refused(files, "run", "--backend", "emulator", "--limit", "3", bad)
            return
        original = read_netx(files / "dlif.net")
        for got, want in zip(spec.layers, original.layers, strict=True):
            assert np.array_equal(got.weight, want.weight) and got.neuron == want.neuron
    finally:
        bad.unlink()


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all", b"\x89HDF\r\n\x1a\n" + b"\x00" * 40])
def test_non_net_files(files, content):
    bad = files / "junk.net"
    bad.write_bytes(content)
    try:
        assert_refused(files, "run", "--backend", "emulator", bad)
    finally:
        bad.unlink()


# --- numbers and paths -----------------------------------------------------------------------
def suite_file(folder, entries) -> str:
    path = folder / "suite.json"
    path.write_text(json.dumps(entries))
    return str(path)


NUMBER_CASES = [
    ["train", "--lr", "-1"], ["train", "--lr", "nan"], ["train", "--leak", "nan"], ["train", "--leak", "2"],
    ["train", "--leak", "-1"], ["train", "--seed", str(2**70)], ["train", "--seed", "-1"], ["train", "--rho", "nan"],
    ["train", "--rho", "-1"], ["train", "--chi", "1.5"], ["train", "--val-size", "-1"], ["train", "--epochs", "0"],
    ["train", "--timesteps", "0"], ["train", "--timesteps", "100000"], ["train", "--hidden", "0"],
    ["train", "--hidden", "abc"], ["train", "--batch-size", "0"], ["train", "--epochs", "x"],
    ["train", "--dataset", "imagenet"], ["train", "--arch", "resnet"], ["train", "--neuron", "izh"],
    ["train", "--perturb", "fgsm2"], ["train", "--train-eps", "5"], ["train", "--val-eps", "nan"],
    ["train", "--rat-beta", "inf"], ["train", "--device", "tpu"], ["train", "--limit", "0"],
]


@pytest.mark.parametrize("args", NUMBER_CASES, ids=lambda a: " ".join(a[1:]))
def test_bad_training_options(files, args):
    small = ["--out", files / "new.pt", "--epochs", "1", "--limit", "16", "--val-size", "4", "--quiet"]
    assert_refused(files, "train", *small, *args[1:])  # the last of a repeated option wins


EVAL_CASES = [
    ["--attacks", "pgd0"], ["--attacks", "pgd99999999999999999999"], ["--attacks", "cw"], ["--eps", "nan"],
    ["--eps", "-1"], ["--eps", "2"], ["--limit", "0"], ["--sweep-eps", "0,300"], ["--suite", "missing.yaml"],
    [{"suite": [{"name": "p", "type": "pgd", "steps": 0}]}], [{"suite": [{"name": "p", "type": "pgd", "eps": 5}]}],
    [{"suite": [{"name": "p", "type": "pgd", "alpha": -1}]}], [{"suite": [{"name": "p", "type": "pgd", "steps": 1e9}]}],
    [{"suite": [{"name": "p", "type": "pgd", "steps": "many"}]}], [{"suite": [{"name": "p", "type": "apgd", "loss": "x"}]}],
    [{"suite": [7]}], [{"suite": {"attacks": []}}], [{"suite": "not a list"}],
]


@pytest.mark.parametrize("args", EVAL_CASES, ids=lambda a: json.dumps(a)[:60])
def test_bad_eval_options(files, args):
    if isinstance(args[0], dict):
        args = ["--suite", suite_file(files, args[0]["suite"])]
    try:
        assert_refused(files, "eval", files / "lif.pt", *args)
    finally:
        (files / "suite.json").unlink(missing_ok=True)


def test_suite_with_nan_eps_in_yaml(files):
    path = files / "suite.yaml"
    path.write_text("- {name: p, type: pgd, eps: .nan}\n")
    try:
        assert_refused(files, "eval", files / "lif.pt", "--suite", path)
    finally:
        path.unlink()


def path_cases(folder):
    """(command, expected words) for outputs that would destroy an input or cannot be written."""
    pt, net = folder / "lif.pt", folder / "lif.net"
    (folder / "sub").mkdir(exist_ok=True)
    return [
        (["export", pt, "-o", pt], "also an input"),
        (["export", net], "also an input"),  # default output <input>.net = the input itself
        (["export", pt, "-o", folder / "sub"], "is a folder"),
        (["export", pt, "-o", folder / "missing" / "x.net"], "does not exist"),
        (["export", pt, "-o", pt / "x.net"], "does not exist"),
        (["export", pt, "--to", "onnx"], "export format"),
        (["run", "--backend", "emulator", "--json", net, net], "also an input"),
        (["run", "--backend", "emulator", "--json", "/dev/null", net], "not a regular file"),
        (["run", "--backend", "foo", net], "unknown backend"),
        (["run", "--backend", "Loihi2SimCfg", "--dlif-schedule", "foo", net], "DLIF schedule"),
        (["run", "--backend", "emulator", "--attack", "cw", net], "unknown attack"),
        (["run", "--backend", "emulator", folder / "sub"], "not found"),
        (["eval", pt, "--json", pt], "also an input"),
        (["eval", pt, "--plot", folder / "p.txt"], "plots are written"),
        (["eval", pt, "--plot", folder / "o.png", "--json", folder / "o.png"], "also given"),
        (["check", pt, net, "--json", net], "also an input"),
        (["check", pt, "--ratio-threshold", "nan"], "--ratio-threshold"),
        (["check", pt, "--plot", folder / "c.jpg2"], "plots are written"),
        (["certify", pt, net, "--json", net], "also an input"),
        (["certify", pt, "--points", "-1"], "--points"),
        (["certify", pt, "--eps", "nan"], "eps"),
        (["certify", pt, "--method", "zonotope"], "method"),
        (["train", "--out", pt / "x.pt"], "does not exist"),
        (["train", "--out", folder / "sub"], "is a folder"),
        (["train", "--out", "/dev/null"], "not a regular file"),
        *[([*command, "--device", "tpu"], "unknown --device") for command in device_commands(pt, net)],
        *[([*command, "--device", "cuda"], "no CUDA GPU") for command in device_commands(pt, net)
          if not torch.cuda.is_available()],
    ]


def device_commands(pt, net):
    """Every command with a --device option."""
    return [["train", "--out", pt.parent / "d.pt", "--epochs", "1", "--limit", "16"], ["eval", pt],
            ["run", "--backend", "emulator", net], ["check", pt], ["certify", pt]]


def test_outputs_that_would_destroy_an_input_or_cannot_be_written(files):
    cases = path_cases(files)
    for command, words in cases:
        line = assert_refused(files, *command)
        assert words in line, (command, line)


def test_outputs_respect_the_umask(files, tmp_path):
    old = os.umask(0o022)
    try:
        result = runner.invoke(app, ["export", str(files / "lif.pt"), "-o", str(tmp_path / "m.net")])
        assert result.exit_code == 0, result.output
        assert (tmp_path / "m.net").stat().st_mode & 0o777 == 0o644
    finally:
        os.umask(old)


def test_eps_minus_zero_prints_zero(files):
    result = runner.invoke(app, ["eval", str(files / "lif.pt"), "--attacks", "fgsm", "--eps", "-0", "--limit", "4"])
    assert result.exit_code == 0, result.output
    assert "-0/255" not in result.output and "eps=0/255" in result.output


def test_stale_temp_files_of_killed_writers_are_removed(tmp_path):
    from loihi_stable.io import write_json

    stale = tmp_path / ".out.json.999999999.abcd.tmp"  # no such pid
    live = tmp_path / f".out.json.{os.getppid()}.efgh.tmp"
    stale.write_text("{")
    live.write_text("{")
    write_json(tmp_path / "out.json", {"a": 1})
    assert not stale.exists() and live.exists()
    assert json.loads((tmp_path / "out.json").read_text()) == {"a": 1}


# --- wrong types, field by field ---------------------------------------------------------------
def _wrong_value(annotation):
    """A value of another type than ``annotation`` allows (a list where a mapping belongs, text where a
    number does, a mapping where text does)."""
    from loihi_stable.schema import matches

    return next(v for v in ("text", [1, 2], {"a": 1}, 3) if not matches(v, annotation))


def _typed_fields():
    import typing

    from loihi_stable.io import BestMetrics, CheckpointFields
    from loihi_stable.training import TrainConfig

    cases = {}
    for where, cls in ((None, CheckpointFields), ("model_config", ModelConfig), ("train_config", TrainConfig),
                       ("metrics", BestMetrics)):
        for key, annotation in typing.get_type_hints(cls).items():
            if (where, key) in ((None, "format"), (None, "version")):
                continue  # refused as 'not a checkpoint' / 'other version' (tested above)
            cases[f"{where or 'checkpoint'}.{key}"] = (where, key, _wrong_value(annotation))
    cases["train_config.dataset as bytes"] = ("train_config", "dataset", b"digits")
    return cases


TYPED_FIELDS = _typed_fields()


@pytest.mark.parametrize("case", list(TYPED_FIELDS))
def test_every_checkpoint_field_of_the_wrong_type_is_one_line(files, lif_checkpoint, case, tmp_path):
    where, key, value = TYPED_FIELDS[case]
    payload = copy.deepcopy(lif_checkpoint)
    payload.setdefault("metrics", {})
    (payload if where is None else payload[where])[key] = value
    bad = files / "typed.pt"
    torch.save(payload, bad)
    try:
        for command in (["eval", bad, "--attacks", "fgsm", "--limit", "4"], ["export", bad, "-o", tmp_path / "x.net"],
                        ["certify", bad, "--limit", "2"], ["check", bad, "--limit", "2"]):
            line = assert_refused(files, *command)
            assert key in line, (case, line)
    finally:
        bad.unlink()


def _set_attr(key, value):
    return lambda h: h[EXTENSION_GROUP].attrs.__setitem__(key, value)


def _embedded_checkpoint(edit):
    def apply(handle):
        payload = torch.load(io.BytesIO(handle[f"{EXTENSION_GROUP}/checkpoint"][()].tobytes()), weights_only=True)
        edit(payload)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        _replace(handle, f"{EXTENSION_GROUP}/checkpoint", np.void(buffer.getvalue()))
    return apply


NET_TYPE_EDITS = {
    **{f"attr {key} as text": _set_attr(key, "eight") for key in
       ("timesteps", "input_scale", "input_message_bits", "format_version")},
    "attr input_shape as text": _set_attr("input_shape", "1x8x8"),
    **{f"attr {key} as a number": _set_attr(key, 7) for key in ("neuron", "arch", "dataset")},
    "layer type as a number": lambda h: _replace(h, "layer/1/type", np.array([3])),
    "weight as text": lambda h: _replace(h, "layer/0/weight", np.array([b"w"] * 4)),
    "weight as floats": lambda h: _replace(h, "layer/0/weight", np.asarray(h["layer/0/weight"], np.float64) + 0.5),
    "vThMant as text": lambda h: _replace(h, "layer/0/neuron/vThMant", np.array(b"big")),
    "vDecay as text": lambda h: _replace(h, "layer/0/neuron/vDecay", np.array(b"slow")),
    "iDecay as text": lambda h: _replace(h, "layer/0/neuron/iDecay", np.array(b"x")),
    "decay schedule as text": lambda h: _replace(h, "layer/0/neuron/vDecaySchedule", np.array([b"a"] * 8)),
    "embedded train_config is a list": _embedded_checkpoint(lambda p: p.__setitem__("train_config", [1, 2])),
    "embedded model_config.leak as text": _embedded_checkpoint(lambda p: p["model_config"].__setitem__("leak", "x")),
}


@pytest.mark.parametrize("case", list(NET_TYPE_EDITS))
def test_every_net_field_of_the_wrong_type_is_one_line(files, case):
    assert_net_refused(files, NET_TYPE_EDITS[case])


def _suite_type_cases():
    import inspect
    import typing

    from loihi_stable.attacks import registry

    cases = {"name as a number": {"name": 5, "type": "pgd"}, "type as a list": {"name": "p", "type": ["pgd"]},
             "unknown option": {"name": "p", "type": "pgd", "colour": "red"}}
    for kind, cls in registry.ATTACK_CLASSES.items():
        hints = typing.get_type_hints(cls.__init__)
        for key in inspect.signature(cls.__init__).parameters:
            if key in hints and key not in ("model", "logits"):
                cases[f"{kind}.{key}"] = {"name": "a", "type": kind, key: _wrong_value(hints[key])}
    return cases


SUITE_TYPE_CASES = _suite_type_cases()


@pytest.mark.parametrize("case", list(SUITE_TYPE_CASES))
def test_every_suite_option_of_the_wrong_type_is_one_line(files, case):
    try:
        assert_refused(files, "eval", files / "lif.pt", "--suite", suite_file(files, [SUITE_TYPE_CASES[case]]))
    finally:
        (files / "suite.json").unlink(missing_ok=True)


@pytest.mark.parametrize("content", [b"\x80\x04\x95binary", "a raw pickle"])
def test_binary_suite_files_and_raw_pickles_are_one_line_without_library_warnings(files, content):
    import pickle

    path = files / ("suite.json" if isinstance(content, bytes) else "raw.pt")
    path.write_bytes(content if isinstance(content, bytes) else pickle.dumps({"a": 1}, protocol=4))
    try:
        if isinstance(content, bytes):
            assert "UTF-8" in assert_refused(files, "eval", files / "lif.pt", "--suite", path)
        else:
            assert "not a loihi-stable checkpoint" in assert_refused(files, "eval", path)
    finally:
        path.unlink()
