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


def seed_means(rows: Sequence[dict[str, Any]], metric: str) -> list[float]:
    """The mean of ``metric`` over the rows of each seed, in seed order: one sample per seed for a
    spread over seeds (the spread a rerun would show)."""
    by_seed: dict[int, list[float]] = {}
    for row in rows:
        by_seed.setdefault(row["seed"], []).append(row[metric])
    return [statistics.mean(by_seed[seed]) for seed in sorted(by_seed)]


def paired_by_seed(rows: Sequence[dict[str, Any]], base: Sequence[dict[str, Any]], metric: str) -> list[float]:
    """Per seed: the mean of ``metric`` over ``rows`` minus the same seed's over ``base`` (both over
    the same seeds), so that what a seed does to both cancels out of the difference."""
    return [a - b for a, b in zip(seed_means(rows, metric), seed_means(base, metric), strict=True)]


def spread_text(mean: float, std: float, count: int, digits: int = 3, signed: bool = False) -> str:
    """``mean ± std`` over ``count`` seeds, as every table writes it. One seed has no spread to show,
    so the cell says how many there were (``0.660 (n = 1)``), and a spread below the last digit is
    written as such, never as a spread of zero. ``signed``: a difference, written ``+0.012``."""
    shown = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if count == 1:
        return f"{shown} (n = 1)"
    if std == 0:
        return f"{shown} (n = {count}, equal)"
    floor = 0.5 * 10 ** -digits
    return f"{shown} ± " + (f"<{2 * floor:.{digits}f}" if std < floor else f"{std:.{digits}f}")


def spread(values: Sequence[float], signed: bool = False) -> str:
    """The mean ± sample std of ``values`` as ``spread_text`` writes it (``signed``: a difference)."""
    mean, std = mean_std(values)
    return spread_text(mean, std, len(values), signed=signed)


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


def attack_lines(task: str, split: str, report: dict[str, Any], eps_text: str) -> list[str]:
    """One line for clean accuracy and the threat, then one per attack with its robust accuracy."""
    threat = f"{report['norm']} eps {report['eps']:.4g} ({eps_text}), first {report['n']} images of {split}"
    lines = [f"{task}: clean {report['clean_acc']:.4f}; {threat}"]
    for key, name in (("robust_acc_pgd", "attack_pgd"), ("robust_acc_aa", "attack_aa")):
        if key in report:
            lines.append(f"  robust {report[key]:.4f} under {report[name]}")
    return lines


def parameter_lines(report: dict[str, int]) -> list[str]:
    """A parameter report as aligned ``name: count`` lines and the trainable share of the backbone."""
    lines = [f"{key:>16}: {value:,}" for key, value in report.items()]
    share = report["total_trainable"] / report["backbone_total"]
    return lines + [f"{'trainable share':>16}: {share:.4%} of the backbone"]


def matrix_lines(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The compatibility matrix as text: family, timm class and methods, then examples and notes."""
    width = max(len(row["family"]) for row in rows)
    lines = []
    for row in rows:
        lines.append(f"{row['family']:{width}}  {row['timm_class']:26} {', '.join(row['methods'])}")
        lines.append(f"{'':{width}}  e.g. {', '.join(row['examples'])}" + (f"; {row['notes']}" if row["notes"] else ""))
    return lines


def matrix_markdown(rows: Sequence[dict[str, Any]]) -> str:
    """The compatibility matrix as the README's markdown table."""
    lines = ["| family | timm class | examples | methods | notes |", "|---|---|---|---|---|"]
    for row in rows:
        examples = ", ".join(f"`{name}`" for name in row["examples"])
        lines.append(f"| {row['family']} | `{row['timm_class']}` | {examples} | {', '.join(row['methods'])} | {row['notes']} |")
    return "\n".join(lines)


def zoo_lines(cards: Sequence[dict[str, Any]]) -> list[str]:
    """One line per zoo model: its name, architecture and recorded scores."""
    if not cards:
        return ["no zoo models yet"]
    lines = []
    for card in cards:
        scores = ", ".join(f"{k} {card[k]:.3f}" for k in ("source_acc", "clean_acc", "robust_acc_pgd20") if k in card)
        lines.append(f"zoo:{card['name']:24} {card['arch']} ({card.get('variant', '?')}) {scores}")
    return lines


def preset_markdown(presets: Sequence[Any]) -> str:
    """Presets (``vprompt.presets.Preset``) as one markdown section per source and method: what the
    source is and how its numbers were found, then a row per task."""
    sections = []
    for source in dict.fromkeys(p.source for p in presets):
        lines = [f"**{source.name}**: {source.citation} ({source.url}"
                 + (f" at {source.commit[:12]}" if source.commit else "") + ").",
                 f"Backbone {source.backbone}. Picked by: {source.search}. Accuracy: {source.accuracy}."]
        if source.not_reproduced:
            lines.append(f"Not reproduced by vprompt's trainer: {source.not_reproduced}.")
        for method in dict.fromkeys(p.method for p in presets if p.source == source):
            rows = [{"preset": f"`{p.name}`", "base_lr": f"{p.train['base_lr']:g}", "weight decay": f"{p.train['weight_decay']:g}",
                     "prompt length": p.options.get("prompt_len", "–"), "epochs": p.train["epochs"],
                     "reported accuracy": "–" if p.accuracy is None else f"{p.accuracy:.3f}"}
                    for p in presets if p.source == source and p.method == method]
            lines += ["", f"*{method}*", "", markdown_table(rows)]
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
