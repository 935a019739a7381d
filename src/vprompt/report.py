"""Result tables: rows of flat dicts written as JSON and rendered as markdown."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Sequence


def write_rows(rows: Sequence[dict[str, Any]], path: Path | str) -> Path:
    """Write ``rows`` as a JSON list of flat objects (the format every results.json uses)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(list(rows), indent=2) + "\n")
    return path


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value): the spread every table reports."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def mean_of_group_means(by_task: dict[str, float], groups: dict[str, str]) -> float:
    """VPT's average: each group's tasks are averaged first, then the groups, so a group with many
    tasks (VTAB's eight structured ones) weighs no more than one with few."""
    return statistics.mean(statistics.mean(value for task, value in by_task.items() if groups[task] == group)
                           for group in {groups[task] for task in by_task})


def format_cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-flavoured markdown table of ``rows`` (columns default to the first row's keys)."""
    columns = list(columns or (rows[0].keys() if rows else []))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(format_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def pivot(rows: Sequence[dict[str, Any]], index: str, column: str, value: str) -> list[dict[str, Any]]:
    """Reshape long rows into one row per ``index`` with one column per ``column`` value."""
    table: dict[Any, dict[str, Any]] = {}
    for row in rows:
        table.setdefault(row[index], {index: row[index]})[row[column]] = row[value]
    return list(table.values())


def new_figure(size: tuple[float, float], ncols: int = 1) -> tuple[Any, Any]:
    """A matplotlib (figure, axes) on the file-only Agg backend (no display on servers and in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(ncols=ncols, figsize=size)


def save_figure(figure: Any, path: Path) -> Path:
    """Lay out, write as PNG (creating the folder) and free the figure."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
