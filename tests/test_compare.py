"""`vprompt report`: the quoted paper numbers are consistent, and ours sit beside them honestly."""

from __future__ import annotations

import json

import pytest

from vprompt.cli import main
from vprompt.compare import comparison, load_results, write_report
from vprompt.data.vtab import VTAB_TASKS
from vprompt.errors import DataError
from vprompt.reference import paper_numbers, paper_value


def test_quoted_vtab_means_agree_with_their_group_means():
    counts = {"natural": 7, "specialized": 4, "structured": 8}
    for method in ("full", "linear", "vpt-deep", "vapt"):
        groups = {g: paper_value(method, "vtab-1k", g)["value"] for g in counts}
        task_mean = sum(counts[g] * v for g, v in groups.items()) / 19
        assert task_mean == pytest.approx(paper_value(method, "vtab-1k", "mean of tasks")["value"], abs=0.02)
    assert paper_value("vpt-deep", "vtab-1k", "mean of group means")["value"] == 71.96  # VPT's own table
    assert all(r["benchmark"] in ("vtab-1k", "fgvc") for r in paper_numbers())


def vtab_rows(tasks, accs=(0.5, 0.7)):
    return [{"task": t, "method": "vpt-deep", "seed": s, "test_acc": a + (0.1 if VTAB_TASKS[t].group == "structured" else 0)}
            for t in tasks for s, a in enumerate(accs)]


def test_full_vtab_results_compare_with_the_paper_under_both_conventions():
    table, note = comparison(vtab_rows(VTAB_TASKS))
    by_average = {r["average"]: r for r in table}
    tasks = by_average["mean of tasks"]
    assert tasks["comparable"] and tasks["paper"] == 69.43 and tasks["tasks"] == 19 and tasks["seeds"] == 2
    assert tasks["ours"] == pytest.approx(100 * (0.6 + 0.1 * 8 / 19), abs=0.01)
    assert tasks["ours_std"] == pytest.approx(14.14, abs=0.01)  # seed means 0.5 vs 0.7, plus the same offset
    assert by_average["mean of group means"]["ours"] == pytest.approx(100 * (0.6 + 0.1 / 3), abs=0.01)
    assert by_average["structured"]["ours"] == pytest.approx(70.0) and by_average["structured"]["tasks"] == 8
    assert "compare" in note


def test_a_subset_or_another_suite_is_never_called_comparable(tmp_path):
    table, note = comparison(vtab_rows(["dtd", "kitti"]))
    assert not any(r["comparable"] for r in table) and "Only 2 of the vtab-1k tasks" in note
    assert {r["paper"] for r in table if r["average"] == "mean of tasks"} == {69.43}  # shown, as reference
    table, note = comparison([{"task": "digits", "method": "vapt", "seed": 0, "test_acc": 0.9}])
    assert all(r["paper"] is None for r in table) and "not a published benchmark" in note


def test_report_writes_table_rows_and_plot_and_refuses_bad_rows(tmp_path, capsys):
    (tmp_path / "results.json").write_text(json.dumps(vtab_rows(["dtd", "kitti"])))
    markdown = write_report([tmp_path], tmp_path / "out")
    assert "| vpt-deep | mean of tasks | 2 | 2 |" in markdown
    assert json.loads((tmp_path / "out" / "report.json").read_text())[0]["method"] == "vpt-deep"
    assert (tmp_path / "out" / "report.png").read_bytes()[:4] == b"\x89PNG"
    main(["report", str(tmp_path)])
    assert "report:" in capsys.readouterr().out and (tmp_path / "report.md").is_file()
    (tmp_path / "bad.json").write_text(json.dumps([{"task": "dtd", "acc": 1}]))
    with pytest.raises(DataError, match="needs task, method, seed and test_acc"):
        load_results([tmp_path / "bad.json"])
