"""What `vprompt reproduce pbl` writes besides results.json: the tables with the three answers,
the clean-vs-robust trade-off plot, and pictures of the learned prompts."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from vprompt.report import markdown_table, mean_std, new_figure, paired_by_seed, save_figure, seed_means, spread, spread_text

if TYPE_CHECKING:
    from vprompt.backbones import BackboneSpec

METRICS = (("clean_acc", "clean"), ("robust_acc_pgd", "PGD"), ("robust_acc_aa", "AutoAttack"))
PROMPT_PICTURE_SCALE = 4


def seed_spread(rows: list[dict[str, Any]], metric: str) -> tuple[float, float, int]:
    """Mean and std over seeds of the per-seed task mean (the spread a rerun would show), and the seeds."""
    means = seed_means(rows, metric)
    return (*mean_std(means), len(means))


def grouped(rows: list[dict[str, Any]], *keys: str) -> dict[tuple, list[dict[str, Any]]]:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row)
    return groups


def cell(rows: list[dict[str, Any]], metric: str) -> str:
    return score(seed_spread(rows, metric))


Means = dict[tuple[str, str], dict[str, tuple[float, float, int]]]
"""(source kind, method) → metric → (mean, std over seeds, seeds) of the task mean."""


def method_means(rows: list[dict[str, Any]]) -> Means:
    return {key: {m: seed_spread(group, m) for m, _ in METRICS}
            for key, group in grouped(rows, "source_kind", "method").items()}


def score(value: tuple[float, float, int]) -> str:
    return spread_text(*value)


def inherited_lines(means: Means, method: str, label: str) -> list[str]:
    """Questions 1 and 2 for one method: robust and clean accuracy on the robust vs the standard source."""
    standard, robust = means.get(("standard", method)), means.get(("robust", method))
    if not (standard and robust):
        return []
    return [f"- (1) Inherited robustness: {label}'s AutoAttack accuracy is {score(robust['robust_acc_aa'])} on the "
            f"robust source vs {score(standard['robust_acc_aa'])} on the standard one "
            f"(PGD {score(robust['robust_acc_pgd'])} vs {score(standard['robust_acc_pgd'])}).",
            f"- (2) Trade-off: {label}'s clean accuracy is {score(robust['clean_acc'])} on the robust source vs "
            f"{score(standard['clean_acc'])} on the standard one."]


def change_lines(rows: list[dict[str, Any]], base_method: str, number: str,
                 methods: Callable[[str], bool]) -> list[str]:
    """Each chosen method's change in clean and robust accuracy against ``base_method`` on the same
    source, paired by seed (each seed's task mean minus the base's), with its spread over seeds."""
    groups = grouped(rows, "source_kind", "method")
    lines = []
    for (kind, method), group in sorted(groups.items()):
        base = groups.get((kind, base_method))
        if method == base_method or base is None or not methods(method):
            continue
        deltas = {metric: spread(paired_by_seed(group, base, metric), signed=True)
                  for metric in ("clean_acc", "robust_acc_aa", "robust_acc_pgd")}
        lines.append(f"- ({number}) {method} on the {kind} source, paired by seed: clean {deltas['clean_acc']}, "
                     f"AutoAttack {deltas['robust_acc_aa']}, PGD {deltas['robust_acc_pgd']} against {base_method}.")
    return lines


def answers(rows: list[dict[str, Any]]) -> list[str]:
    """The seed's three questions, answered from the rows in words (whatever they show)."""
    return inherited_lines(method_means(rows), "vp", "VP") + change_lines(rows, "vp", "3", lambda m: m.startswith("vp+pbl"))


def results_markdown(rows: list[dict[str, Any]], summary: str,
                     answer_lines: Callable[[list[dict[str, Any]]], list[str]]) -> str:
    """Summary over tasks, the three answers, the AutoAttack ≤ PGD check, then per-task detail."""
    overall = [{"source": kind, "method": method} | {name: cell(group, m) for m, name in METRICS}
               for (kind, method), group in grouped(rows, "source_kind", "method").items()]
    detail = [{"source": kind, "method": method, "task": task} | {name: cell(group, m) for m, name in METRICS}
              for (kind, method, task), group in grouped(rows, "source_kind", "method", "task").items()]
    violations = [r for r in rows if r["robust_acc_aa"] > r["robust_acc_pgd"]]
    check = ("AutoAttack ≤ PGD on every row." if not violations else
             f"AutoAttack > PGD on {len(violations)} of {len(rows)} rows: "
             + ", ".join(f"{r['source_kind']}/{r['method']}/{r['task']}/seed {r['seed']}" for r in violations))
    columns = [name for _, name in METRICS]
    return "\n\n".join([
        summary,
        "Mean over tasks, ± sample std over seeds:",
        markdown_table(overall, ["source", "method", *columns]),
        "\n".join(answer_lines(rows)),
        check,
        "Per task, mean ± std over seeds:",
        markdown_table(detail, ["source", "method", "task", *columns]),
    ])


def write_tradeoff_plot(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Clean vs AutoAttack accuracy, one point per source × method (task mean; bars: std over seeds)."""
    figure, axes = new_figure((6, 4.5))
    markers = dict(zip(dict.fromkeys(r["method"] for r in rows), "osD^vP*X"))
    colours = dict(zip(dict.fromkeys(r["source_kind"] for r in rows), ("tab:blue", "tab:red", "tab:green")))
    for (kind, method), group in grouped(rows, "source_kind", "method").items():
        (clean, clean_std, _), (robust, robust_std, _) = seed_spread(group, "clean_acc"), seed_spread(group, "robust_acc_aa")
        axes.errorbar(clean, robust, xerr=clean_std, yerr=robust_std, marker=markers[method], color=colours[kind],
                      linestyle="none", capsize=3, label=f"{kind}: {method}")
    axes.set_xlabel("clean accuracy (test split)")
    axes.set_ylabel("AutoAttack robust accuracy")
    axes.set_title(f"{title} (mean over tasks, ± std over seeds)", fontsize=9)
    axes.legend(fontsize=7)
    axes.grid(alpha=0.3)
    return save_figure(figure, path)


@torch.no_grad()
def write_prompt_images(rows: list[dict[str, Any]], root: Path, folder: Path,
                        sources: dict[str, BackboneSpec]) -> list[Path]:
    """One picture per source × method × task (first seed): the prompt applied to a mid-grey image.
    Rows name their prompt folder relative to ``root``; a prompt not on disk (its row came from a run
    record) is skipped. ``sources``: each source kind's backbone, as the runs were trained on it."""
    from PIL import Image

    from vprompt.model import load_prompt

    folder.mkdir(parents=True, exist_ok=True)
    written, skipped = [], 0
    for (kind, method, task), group in grouped(rows, "source_kind", "method", "task").items():
        prompt = root / min(group, key=lambda r: r["seed"])["prompt"]
        if not prompt.is_dir():  # read back from a run record: no prompt here to draw
            skipped += 1
            continue
        model = load_prompt(prompt, sources[kind])
        grey = torch.full((1, 3, *model.image_size), 0.5)
        canvas = model.input_prompt(grey).clamp(0, 1)[0]
        pixels = (canvas.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
        picture = Image.fromarray(pixels)
        picture = picture.resize((picture.width * PROMPT_PICTURE_SCALE, picture.height * PROMPT_PICTURE_SCALE),
                                 Image.NEAREST)
        path = folder / f"{kind}_{method}_{task}.png"
        picture.save(path)
        written.append(path)
    if skipped:
        print(f"[prompts] {skipped} prompt pictures not drawn: their runs were read back from records, "
              f"their prompts are not in {root}")
    return written
