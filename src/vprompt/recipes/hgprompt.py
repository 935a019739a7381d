"""`vprompt reproduce hgprompt`: leave-one-task-out multi-source prompt transfer.

Every task gets one source prompt (VPT-deep on the zoo ViT by default, seed 0: the sources are
assets, not the experiment) kept in a prompt bank. Then each task in turn is the target, the
other tasks' prompts are the sources, and HGPrompt and every baseline tune the target from their
initial prompt with each seed. Offline this runs on the synthetic suite; with ``--data`` on a
folder of VTAB-1k task folders (the paper's setting, on a GPU).

Writes ``results.json`` (rows: target, method, seed, test_acc, weights, …), ``results.md`` and
``weights.png`` (the learned weights per target).
"""

from __future__ import annotations

import functools
import math
import statistics
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any, Literal

from vprompt.backbones import BackboneSpec
from vprompt.bank import CARD_FILE, add_to_bank, list_bank, select_entries
from vprompt.data.registry import open_task
from vprompt.data.synthetic import synthetic_task_names
from vprompt.progress import each
from vprompt.recipes.demo import DEMO_BACKBONE
from vprompt.recipes.run import task_dirs
from vprompt.records import backbone_identity, open_records, recorded_or_run, say_summary, task_identity
from vprompt.report import markdown_table, new_figure, paired_by_seed, save_figure, seed_means, spread, write_rows
from vprompt.sweep import Run, claim_folder, execute, learned_settings, protocol_table, summarise
from vprompt.train import PrecisionChoice, TrainConfig
from vprompt.transfer import SearchConfig, TargetTransfer, TransferConfig, check_methods, transfer_method_names
from vprompt.validation import Existing, NonEmpty, Validated, Writable, above, at_least


@dataclass
class HGPromptReproduction(Validated, PrecisionChoice):
    out: Annotated[Path, Writable()] = Path("reproduce-hgprompt")
    data: Annotated[Path, Existing()] | None = None
    """Folder of VTAB-1k task folders; default: the offline synthetic suite."""
    tasks: Annotated[list[str], NonEmpty()] | None = None
    """Tasks to use, as targets and as each other's sources (default: all found)."""
    methods: Annotated[list[str], NonEmpty()] = field(default_factory=transfer_method_names)
    seeds: Annotated[list[Annotated[int, at_least(0)]], NonEmpty()] = field(default_factory=lambda: [0, 1, 2])
    source_method: Literal["vpt-deep", "vpt-shallow"] = "vpt-deep"
    prompt_len: Annotated[int, at_least(1)] = 10
    source_epochs: Annotated[int, at_least(1)] = 10
    """Training of each source prompt (seed 0)."""
    tune_epochs: Annotated[int, at_least(1)] = 5
    """Target tuning from the initial prompt: a short budget, where the initial prompt matters most
    (and what 2 CPU cores afford)."""
    base_lr: Annotated[float, above(0)] = 0.02
    """Base learning rate of sources and targets (AdamW, batch 64, weight decay 1e-4, one warm-up
    epoch: the setting of the offline VAPT table, where VPT-deep learns)."""
    search: SearchConfig = field(default_factory=SearchConfig)
    quick: bool = False
    """Smoke run: three tasks, two seeds, one epoch everywhere."""
    records: Annotated[Path, Writable()] | None = None
    """Folder of run records (docs/results/hgprompt/runs for the committed table): a target × method
    × seed recorded there is read back instead of rerun, and every finished one is recorded."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.data is None:
            synthetic_task_names(self.tasks)
        check_methods(self.methods)

    def resolved(self) -> HGPromptReproduction:
        """This config, or its quick variant."""
        if not self.quick:
            return self
        return replace(self, tasks=self.tasks or ["objects", "digits", "count"], seeds=self.seeds[:2], source_epochs=1,
                       tune_epochs=1, search=replace(self.search, search_epochs=1))

    def training(self, epochs: int) -> TrainConfig:
        return TrainConfig(epochs=epochs, batch_size=64, optimizer="adamw", base_lr=self.base_lr, weight_decay=1e-4,
                           warmup_epochs=1 if epochs > 1 else 0, mixed_precision=self.mixed_precision)

    def transfer(self) -> TransferConfig:
        return TransferConfig(tune=self.training(self.tune_epochs), search=self.search)


def build_bank(tasks: list[Path], config: HGPromptReproduction, backbone: BackboneSpec, progress: bool) -> Path:
    """One source prompt per task, trained (or read back, or resumed) and filed in ``out/bank``."""
    bank = config.out / "bank"
    for task in each(tasks, "source prompts", progress, lambda task: task.name):
        run = Run(str(task), backbone, config.source_method, {"prompt_len": config.prompt_len},
                  config.training(config.source_epochs),
                  config.out / "sources" / task.name, open_task(str(task)).protocol.final_train, "test")
        accuracy = execute(run)  # read back when finished, refused when its folder holds another run
        if not (bank / task.name / CARD_FILE).is_file():
            add_to_bank(bank, run.out_dir, name=task.name, task=task.name, accuracy=accuracy, replace=True)
    return bank


def run_hgprompt_reproduction(config: HGPromptReproduction, backbone: BackboneSpec | None = None,
                              progress: bool = True) -> list[dict[str, Any]]:
    """Source bank, then every target × method × seed; writes results.json, results.md, weights.png."""
    config = config.resolved()
    backbone = backbone or DEMO_BACKBONE
    tasks = task_dirs(config.out, config.data, config.tasks)
    records = open_records(config.records, config.transfer().tune.mixed_precision)

    @functools.cache  # the bank and a target's sources are built only when a run is not recorded
    def target_job(task: Path) -> TargetTransfer:
        bank = build_bank(tasks, config, backbone, progress)
        sources = select_entries(list_bank(bank), [t.name for t in tasks])  # each target leaves out its own
        folder = config.out / "targets" / task.name
        claim_folder(folder, target_settings(config, backbone, tasks, task))
        return TargetTransfer(sources, str(task), config.transfer(), folder, False)

    rows: list[dict[str, Any]] = []
    for task in each(tasks, "targets", progress, lambda task: task.name):
        for seed in config.seeds:
            for method in check_methods(config.methods):
                def run(task: Path = task, method: str = method, seed: int = seed) -> dict[str, Any]:
                    return target_job(task).run(method, seed)

                settings = transfer_settings(config, backbone, tasks, task, method, seed)
                rows.append(recorded_or_run(records, settings, run))
    say_summary(records, progress)
    write_rows(rows, config.out / "results.json")
    (config.out / "results.md").write_text(results_table(rows, config, backbone) + "\n\n" + search_table(rows) + "\n")
    plot_weights(rows, [t.name for t in tasks], config.out / "weights.png")
    return rows


def transfer_settings(config: HGPromptReproduction, backbone: BackboneSpec, tasks: list[Path], target: Path,
                      method: str, seed: int) -> dict[str, Any]:
    """What makes one target × method × seed this run, for its record: the target's data, the
    sources (the other tasks, how their prompts were trained), the backbone and the transfer settings."""
    return target_settings(config, backbone, tasks, target) | {"method": method, "seed": seed}


def target_settings(config: HGPromptReproduction, backbone: BackboneSpec, tasks: list[Path],
                    target: Path) -> dict[str, Any]:
    """What every run on ``target`` shares: its data, the sources, the backbone, the transfer settings."""
    transfer = asdict(config.transfer()) | {"tune": learned_settings(config.transfer().tune)}
    splits = (open_task(str(target)).protocol.final_train, "test")
    return {"target": task_identity(str(target), splits),
            "sources": [task_identity(str(task), splits) for task in tasks if task != target],
            "source_method": config.source_method, "prompt_len": config.prompt_len,
            "source_epochs": config.source_epochs, "base_lr": config.base_lr,
            "backbone": backbone_identity(backbone), "transfer": transfer}


def results_table(rows: list[dict[str, Any]], config: HGPromptReproduction, backbone: BackboneSpec) -> str:
    """Mean ± std per target × method, both averages, and HGPrompt's wins against each baseline."""
    seeds = sorted({r["seed"] for r in rows})
    header = (f"Leave-one-task-out transfer: each target tuned {config.tune_epochs} epochs (AdamW, base_lr "
              f"{config.base_lr}) from each method's initial prompt; HGPrompt's search: {config.search.search_epochs} "
              f"epochs, GAR weight {config.search.gar_weight}; sources: the other tasks' {config.source_method} "
              f"prompts (p = {config.prompt_len}, {config.source_epochs} epochs, seed 0); backbone {backbone.describe()}. Last-epoch test accuracy, "
              f"mean ± sample std over seeds {seeds}. Averages: the mean over targets, and the mean of the group "
              "means. HGPrompt is a reconstruction (docs/methods/transfer.md); the oracle peeks at the test set.")
    table = protocol_table([r | {"task": r["target"]} for r in rows])
    return header + "\n\n" + table + "\n\n" + wins_line(rows) + paired_line(rows)


def search_table(rows: list[dict[str, Any]]) -> str:
    """Per target: the single sources the baselines pick (read off their one-hot weights), where
    HGPrompt's weights went (mean over seeds) and how its batch H-score moved from the first search
    epoch to the last."""
    lines = []
    for target in dict.fromkeys(r["target"] for r in rows):
        line: dict[str, Any] = {"target": target}
        for method, column in (("best-hscore", "best H-score source"), ("oracle", "oracle source")):
            picked = next((r for r in rows if r["target"] == target and r["method"] == method), None)
            if picked is not None:
                line[column] = picked["sources"][max(range(len(picked["weights"])), key=picked["weights"].__getitem__)]
        for method in ("hgprompt", "hgprompt-no-gar"):
            runs = [r for r in rows if r["target"] == target and r["method"] == method and r["search"]]
            if not runs:
                continue
            weights = mean_weights(runs)
            top = max(weights, key=weights.__getitem__)
            first = statistics.mean(r["search"][0]["h_score"] for r in runs)
            last = statistics.mean(r["search"][-1]["h_score"] for r in runs)
            line[f"{method}: top source"] = f"{top} ({weights[top]:.2f})"
            line[f"{method}: batch H first → last epoch"] = f"{first:.3f} → {last:.3f}"
        lines.append(line)
    return ("Weight search per target (weights: mean over seeds; H-score: mean over the epoch's batches "
            "and over seeds).\n\n" + markdown_table(lines))


def mean_weights(runs: list[dict[str, Any]]) -> dict[str, float]:
    """Each source's weight averaged over ``runs`` (one target and method, several seeds)."""
    sources = runs[0]["sources"]
    return {source: statistics.mean(r["weights"][k] for r in runs) for k, source in enumerate(sources)}


def wins_line(rows: list[dict[str, Any]]) -> str:
    targets = list(dict.fromkeys(r["target"] for r in rows))
    methods = [m for m in dict.fromkeys(r["method"] for r in rows) if m != "hgprompt"]
    if ("hgprompt" not in {r["method"] for r in rows}) or not methods:
        return ""
    mean = {(s["task"], s["method"]): s["mean"] for s in summarise([r | {"task": r["target"]} for r in rows])}
    counts = [f"{m} {sum(mean[t, 'hgprompt'] > mean[t, m] for t in targets)}/{len(targets)}" for m in methods]
    return "Targets where HGPrompt's mean beats the baseline's: " + ", ".join(counts) + "."


NOT_BASELINES = ("hgprompt", "hgprompt-no-gar", "oracle")
"""HGPrompt, its own ablation, and the oracle, which peeks at the test set: none is a baseline to beat."""


def paired_line(rows: list[dict[str, Any]]) -> str:
    """HGPrompt against the best baseline (the highest mean over targets), paired by seed: each
    seed's mean over targets of HGPrompt minus the baseline's, then their mean ± std, so a small but
    consistent effect shows even where the seed spread of each method hides it."""
    by_method: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_method.setdefault(row["method"], []).append(row)
    baselines = [m for m in by_method if m not in NOT_BASELINES]
    if "hgprompt" not in by_method or not baselines:
        return ""
    best = max(baselines, key=lambda m: statistics.mean(seed_means(by_method[m], "test_acc")))
    differences = paired_by_seed(by_method["hgprompt"], by_method[best], "test_acc")
    seeds = sorted({row["seed"] for row in by_method["hgprompt"]})
    each = ", ".join(f"seed {s} {d:+.3f}" for s, d in zip(seeds, differences))
    return (f"\n\nHGPrompt − the best baseline ({best}, by its mean over targets; the oracle and HGPrompt's "
            f"ablation are not baselines), mean over targets paired by seed: {each}; {spread(differences)}.")


def plot_weights(rows: list[dict[str, Any]], tasks: list[str], path: Path) -> Path | None:
    """One heat map per weighted method: the mean weight over seeds (written in each cell) of each
    source (column) per target (row); a task is never its own source. Colours run from 0 to each
    panel's largest weight, so compare panels by the numbers."""
    methods = [m for m in ("hgprompt", "hgprompt-no-gar", "similarity") if any(r["method"] == m for r in rows)]
    if not methods:
        return None
    figure, axes = new_figure((4.2 * len(methods), 0.5 * len(tasks) + 1.8), ncols=len(methods))
    axes = axes if len(methods) > 1 else [axes]
    for axis, method in zip(axes, methods):
        grid = [[math.nan] * len(tasks) for _ in tasks]
        for i, target in enumerate(tasks):
            picked = [r for r in rows if r["method"] == method and r["target"] == target]
            weights = mean_weights(picked) if picked else {}
            for j, source in enumerate(tasks):
                grid[i][j] = weights.get(source, math.nan)
        peak = max((v for line in grid for v in line if not math.isnan(v)), default=1.0)
        axis.imshow(grid, vmin=0, vmax=max(peak, 1 / max(1, len(tasks) - 1)), cmap="viridis")
        axis.set_xticks(range(len(tasks)), tasks, rotation=60, ha="right", fontsize=7)
        axis.set_yticks(range(len(tasks)), tasks, fontsize=7)
        axis.set_xlabel("source prompt")
        axis.set_ylabel("target task")
        axis.set_title(method, fontsize=9)
        for i, line in enumerate(grid):
            for j, value in enumerate(line):
                if not math.isnan(value):
                    axis.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=6, color="white")
    return save_figure(figure, path)
