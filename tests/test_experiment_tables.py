"""The certification table is assembled from the per-run JSON of eval and certify, resumably."""
import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "experiments" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_certification_table_reads_finished_runs_without_rerunning_them(tmp_path, monkeypatch):
    table = load_script("certification_table")
    runs = tmp_path / "runs" / "certification-toy-mlp"
    for k, name in enumerate(("natural", "at", "ibp")):
        folder = runs / name
        folder.mkdir(parents=True)
        (folder / "done").write_text("")
        for eps in table.EPS:
            robust = 0.5 - k / 10 - eps / 100
            (folder / f"snn-adaptive-{eps}.json").write_text(json.dumps({"clean": 0.9, "robust": robust}))
            (folder / f"certify-{eps}.json").write_text(json.dumps(
                {"clean": 0.9, "clean_chip": 0.8, "ibp": k / 10, "crown": k / 20, "verified": k / 10,
                 "verified_chip": k / 10 - 0.01 * (k > 0), "n": 7, "verified_but_broken_by_pgd": 0}))
    monkeypatch.setattr(table, "run", lambda command: (_ for _ in ()).throw(AssertionError(command)))
    table.main(["--dataset", "toy", "--runs", str(tmp_path / "runs"), "--out", str(tmp_path / "out"), "--jobs", "1"])
    rows = [line for line in (tmp_path / "out" / "certification-toy-mlp.md").read_text().splitlines()
            if line.startswith("| ") and "training" not in line]
    assert len(rows) == 6 and all(len(row.split("|")) == 11 for row in rows)
    assert rows[-1] == "| IBP | 8/255 | 90.00 | 22.00 | 20.00 | 10.00 | 20.00 | 80.00 | 19.00 |"
    saved = json.loads((tmp_path / "out" / "certification-toy-mlp.json").read_text())
    assert [r["training"] for r in saved["rows"]][::2] == list(table.TRAININGS)
    assert "7 test samples" in (tmp_path / "out" / "certification-toy-mlp.md").read_text()


def test_heldout_check_counts_what_other_backwards_break_after_the_suite(tmp_path, dlif_checkpoint):
    import torch

    check = load_script("heldout_check")
    torch.save(dlif_checkpoint, tmp_path / "m.pt")
    out = tmp_path / "heldout.json"
    check.main([str(tmp_path / "m.pt"), "--suite", "fast", "--eps", "32", "--limit", "24", "--steps", "5",
                "--sharpness", "1,16", "--json", str(out)])
    result = json.loads(out.read_text())
    assert result["backwards"] == 6 * 2 * 2 + 1 and result["n"] == 24
    assert 0 < result["robust_suite"] <= 24, "nothing left robust: the check tests nothing"
    assert result["robust_after_heldout"] == result["robust_suite"] - sum(result["heldout_broken"].values())
