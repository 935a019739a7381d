"""`vprompt reproduce hgprompt --quick` end to end on a tiny ViT: sources filed in a bank, every
target × method × seed in results.json, the table and the weight plot; given some of its run records
back, it runs only the missing ones and builds the same table."""

from __future__ import annotations

import json

import pytest

from report_numbers import check_hgprompt_report
from test_records import partial_copy
from vprompt.cli import main
from vprompt.transfer import transfer_method_names

pytestmark = pytest.mark.slow  # end to end: a whole recipe

TINY = ["--model", "vit_tiny_patch16_224", "--model-arg", "img_size=16", "patch_size=4", "embed_dim=32", "depth=2",
        "num_heads=2"]


def test_reproduce_hgprompt_quick_writes_rows_table_and_weight_plot_and_reruns_only_unrecorded_runs(tmp_path, capsys):
    def reproduce(name: str, records: str) -> str:
        main(["reproduce", "hgprompt", "--quick", "--out", str(tmp_path / name), "--tasks", "digits", "count",
              "--prompt-len", "2", "--seeds", "0", "--records", str(tmp_path / records), *TINY])
        return (tmp_path / name / "results.md").read_text()

    table = reproduce("hg", "full")
    out = tmp_path / "hg"
    rows = json.loads((out / "results.json").read_text())
    assert {(r["target"], r["method"], r["seed"]) for r in rows} == {
        (t, m, s) for t in ("digits", "count") for m in transfer_method_names() for s in (0,)}
    assert all(0 <= r["test_acc"] <= 1 for r in rows)
    assert all(r["sources"] == (["count"] if r["target"] == "digits" else ["digits"]) for r in rows)
    assert sorted(p.name for p in (out / "bank").iterdir()) == ["count", "digits"]
    assert "| digits | natural |" in table and "mean of tasks" in table and "HGPrompt's mean beats" in table
    # every cell, both averages, the count of HGPrompt's wins and the search table are what the rows give
    check_hgprompt_report(table, rows)
    assert (out / "weights.png").stat().st_size > 1000
    assert "results:" in capsys.readouterr().out

    recorded = sorted(p.name for p in (tmp_path / "full").glob("*.json"))
    assert len(recorded) == 2 * len(transfer_method_names())
    missing = partial_copy(tmp_path / "full", tmp_path / "kept")
    assert reproduce("resumed", "kept") == table
    assert f"[records] {len(recorded) - missing} runs read back" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "kept").glob("*.json")) == recorded
