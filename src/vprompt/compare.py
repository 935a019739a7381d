"""`vprompt report`: our results beside the papers' numbers, under both averaging conventions.

Reads the ``results.json`` of sweeps and reproductions (rows with task, method, seed, test_acc
and, where known, group), averages every method over tasks (the 19-task convention) and over
group means (VPT's tables), with the spread over seeds, and puts the quoted paper number of the
same benchmark and convention beside it. Paper numbers are only called comparable when our rows
cover the same benchmark's full task list; otherwise they are shown as a reference and the table
says why they do not compare.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vprompt.data.fgvc import FGVC_TASKS
from vprompt.data.vtab import VTAB_TASKS, vtab_task
from vprompt.errors import DataError
from vprompt.reference import paper_numbers, paper_value
from vprompt.report import (markdown_table, mean_of_group_means, mean_std, new_figure, save_figure, spread_text,
                            write_rows)

AVERAGES = ("mean of tasks", "mean of group means", "natural", "specialized", "structured")


def load_results(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Rows from results folders (their results.json) or json files; rows lacking a field are refused."""
    rows = []
    for path in paths:
        file = path / "results.json" if path.is_dir() else path
        try:
            found = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"cannot read results from {file}: {e}") from None
        if not isinstance(found, list):
            raise DataError(f"{file}: expected a JSON list of result rows")
        missing = [i for i, r in enumerate(found)
                   if not (isinstance(r, dict) and {"task", "method", "seed", "test_acc"} <= r.keys())]
        if missing:
            raise DataError(f"{file}: every row needs task, method, seed and test_acc (row {missing[:1]} does not)")
        rows += found
    if not rows:
        raise DataError("no result rows found")
    return rows


def benchmark_of(tasks: set[str]) -> tuple[str, bool]:
    """(benchmark, complete): vtab-1k or fgvc when every task belongs to it, complete when all of
    its tasks are there; "other" (never comparable) otherwise."""
    vtab = {vtab_task(t).folder for t in tasks if vtab_task(t)}
    if len(vtab) == len(tasks):
        return "vtab-1k", vtab == set(VTAB_TASKS)
    if tasks <= set(FGVC_TASKS):
        return "fgvc", tasks == set(FGVC_TASKS)
    return "other", False


def group_of(row: dict[str, Any]) -> str:
    known = vtab_task(row["task"])
    return row.get("group") or (known.group if known else "other")


def averaged(rows: Sequence[dict[str, Any]], average: str) -> tuple[float, float, int] | None:
    """(mean, sample std over seeds, tasks) of test accuracy in % under ``average``; per seed the
    tasks are averaged first, so the spread is the seed-to-seed spread of the average."""
    per_seed: dict[Any, dict[str, float]] = {}
    for row in rows:
        per_seed.setdefault(row["seed"], {})[row["task"]] = 100 * row["test_acc"]
    groups = {row["task"]: group_of(row) for row in rows}
    values = []
    for accs in per_seed.values():
        if average == "mean of tasks":
            values.append(statistics.mean(accs.values()))
        elif average == "mean of group means":
            values.append(mean_of_group_means(accs, groups))
        else:
            members = [a for t, a in accs.items() if groups[t] == average]
            if not members:
                return None
            values.append(statistics.mean(members))
    mean, std = mean_std(values)
    tasks = len({t for t, g in groups.items() if average.startswith("mean") or g == average})
    return mean, std, tasks


def comparison(rows: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
    """One row per method × average with ours and the paper's; and a sentence on comparability."""
    tasks = {r["task"] for r in rows}
    benchmark, complete = benchmark_of(tasks)
    out = []
    for method in dict.fromkeys(r["method"] for r in rows):
        mine = [r for r in rows if r["method"] == method]
        for average in AVERAGES:
            ours = averaged(mine, average)
            if ours is None:
                continue
            quoted = paper_value(method, benchmark, average) if benchmark != "other" else None
            out.append({"method": method, "average": average, "tasks": ours[2], "seeds": len({r["seed"] for r in mine}),
                        "ours": round(ours[0], 2), "ours_std": round(ours[1], 2),
                        "paper": quoted["value"] if quoted else None, "paper_source": quoted["paper"] if quoted else None,
                        "comparable": bool(quoted) and complete})
    if benchmark == "other":
        note = (f"These {len(tasks)} tasks are not a published benchmark: no paper number compares with them; "
                "the papers' VTAB-1k means (ViT-B/16, ImageNet-21k) are in `vprompt report --papers`.")
    elif not complete:
        note = (f"Only {len(tasks)} of the {benchmark} tasks are here: the papers' means (over all tasks, "
                "ViT-B/16 ImageNet-21k) are shown for reference and do not compare.")
    else:
        note = f"All {benchmark} tasks are here: the papers' numbers compare if the backbone is ViT-B/16 (ImageNet-21k)."
    return out, note


def comparison_markdown(table: Sequence[dict[str, Any]], note: str) -> str:
    lines = [{"method": r["method"], "average": r["average"], "tasks": r["tasks"], "seeds": r["seeds"],
              "ours (%)": spread_text(r["ours"], r["ours_std"], r["seeds"], digits=2),
              "paper (%)": "" if r["paper"] is None else f"{r['paper']:.2f} ({r['paper_source']})",
              "comparable": "yes" if r["comparable"] else "no"} for r in table]
    return (f"Test accuracy in %, mean ± sample std over seeds of the average. {note}\n\n"
            + markdown_table(lines, ["method", "average", "tasks", "seeds", "ours (%)", "paper (%)", "comparable"]))


def comparison_plot(table: Sequence[dict[str, Any]], path: Path, title: str) -> Path:
    """Bars: each method's mean over tasks (ours, with the seed spread); dots: the paper's number."""
    shown = [r for r in table if r["average"] == "mean of tasks"]
    fig, ax = new_figure((1.4 * len(shown) + 2, 3.6))
    xs = range(len(shown))
    ax.bar(xs, [r["ours"] for r in shown], yerr=[r["ours_std"] for r in shown], capsize=4, label="vprompt (ours)")
    quoted = [(x, r["paper"]) for x, r in zip(xs, shown, strict=True) if r["paper"] is not None]
    if quoted:
        ax.scatter(*zip(*quoted, strict=True), color="black", zorder=3, label="paper (quoted)")
    ax.set_xticks(list(xs), [r["method"] for r in shown])
    ax.set_ylabel("test accuracy, mean of tasks (%)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path)


def papers_table() -> str:
    """The quoted paper numbers vprompt compares with, as a markdown table."""
    return markdown_table(list(paper_numbers()), ["paper", "method", "benchmark", "average", "value"])


def write_report(results: Sequence[Path], out: Path) -> str:
    """report.md, report.json and report.png in ``out``; returns the markdown."""
    table, note = comparison(load_results(results))
    markdown = comparison_markdown(table, note)
    out.mkdir(parents=True, exist_ok=True)
    write_rows(table, out / "report.json")
    (out / "report.md").write_text(markdown + "\n")
    comparison_plot(table, out / "report.png", note.split(":")[0])
    return markdown
