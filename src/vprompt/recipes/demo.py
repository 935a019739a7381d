"""`vprompt demo`: the offline end-to-end tour, a taste in minutes rather than the whole table.

Writes the synthetic suite, trains the linear probe, VPT-deep and VAPT on the zoo's ViT
(pretrained offline on fractals, shipped with vprompt) on one task per group (natural, specialized,
structured: a structured task is where prompting differs most from the probe), and prints one
accuracy table and the commands that reproduce the full tables. ``--tasks all`` runs every task.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from vprompt.backbones import BackboneSpec
from vprompt.data import write_synthetic_suite
from vprompt.data.synthetic import synthetic_task_names
from vprompt.methods import method_names
from vprompt.progress import each
from vprompt.report import markdown_table, pivot, write_rows
from vprompt.runs import train_on_task
from vprompt.train import PrecisionChoice, TrainConfig
from vprompt.validation import NonEmpty, Validated, Writable, at_least, check_members

DEMO_BACKBONE = BackboneSpec("zoo:fractal-vit")
DEMO_METHODS: dict[str, dict[str, Any]] = {
    "linear": {},
    "vpt-deep": {"prompt_len": 8},
    "vapt": {"prompt_len": 8},
}
DEMO_TASKS = ("digits", "cells", "sprites_location")
"""One task per group: natural, specialized, structured."""
ALL_TASKS = "all"
"""``--tasks all``: every synthetic task."""
FULL_TABLES = (
    ("the demo on every task, 3 seeds, timed", "python benchmarks/demo_table.py --tasks all --out demo_all.json"),
    ("zoo ViT against its random twin", "python benchmarks/zoo_transfer.py --out zoo_transfer.json"),
    ("token prompts on standard and robust sources", "vprompt reproduce robust-tokens --out robust_tokens"),
    ("VAPT against VPT and the probe", "vprompt reproduce vapt --out vapt"),
    ("HGPrompt against its baselines", "vprompt reproduce hgprompt --out hgprompt"),
)
"""What reproduces each full table (docs/results has them as committed)."""


@dataclass
class DemoConfig(Validated, PrecisionChoice):
    out: Annotated[Path, Writable()] = Path("vprompt-demo")
    """Folder for the suite (OUT/data), the runs (OUT/runs) and results.json / results.md."""
    epochs: Annotated[int, at_least(1)] = 10
    seed: Annotated[int, at_least(0)] = 0
    tasks: Annotated[list[str], NonEmpty()] = field(default_factory=lambda: list(DEMO_TASKS))
    """Synthetic tasks to run (default: digits, cells, sprites_location, one per group; ``all``: every task)."""
    methods: Annotated[list[str], NonEmpty()] = field(default_factory=lambda: list(DEMO_METHODS))
    """Methods to compare."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.tasks == [ALL_TASKS]:
            self.tasks = synthetic_task_names(None)
        synthetic_task_names(self.tasks)
        check_members("methods", self.methods, method_names())


def demo_train_config(config: DemoConfig) -> TrainConfig:
    """The one setting every demo run trains with (shipped as the vprompt-demo presets, whose test
    keeps the two equal)."""
    return TrainConfig(epochs=config.epochs, batch_size=64, optimizer="adamw", base_lr=0.1, weight_decay=1e-4,
                       warmup_epochs=1, seed=config.seed, mixed_precision=config.mixed_precision)


def run_demo(config: DemoConfig, progress: bool = True) -> list[dict[str, Any]]:
    """Run the tour; returns the result rows and writes ``results.json`` + ``results.md``."""
    task_dirs = write_synthetic_suite(config.out / "data", seed=config.seed, tasks=config.tasks, progress=progress)
    runs = config.out / "runs"
    shutil.rmtree(runs, ignore_errors=True)  # the demo's own scratch space: always a fresh tour
    train_config = demo_train_config(config)
    rows = []
    jobs = [(task_dir, method) for task_dir in task_dirs for method in config.methods]
    for task_dir, method in each(jobs, "demo runs", progress, lambda job: f"{job[0].name} {job[1]}"):
        row = train_on_task(task_dir, DEMO_BACKBONE, method, DEMO_METHODS.get(method, {}), train_config,
                            runs / task_dir.name / method, progress=False, eval_every=config.epochs)
        rows.append({"task": row["task"], "method": method, "seed": config.seed, "test_acc": row["eval_acc"],
                     "chance": 1 / row["num_classes"], "precision": row["precision"]})
    write_rows(rows, config.out / "results.json")
    (config.out / "results.md").write_text(demo_table(rows, config) + "\n")
    return rows


def demo_table(rows: list[dict[str, Any]], config: DemoConfig) -> str:
    """Test accuracy per task (rows) and method (columns), chance level, and the unweighted task mean."""
    table = pivot(rows, "task", "method", "test_acc")
    chance = {row["task"]: row["chance"] for row in rows}
    for line in table:
        line["chance"] = chance[line["task"]]
    columns = [*config.methods, "chance"]
    mean = {"task": "mean (tasks)"} | {c: sum(r[c] for r in table) / len(table) for c in columns}
    precisions = ", ".join(sorted({row["precision"] for row in rows}))
    header = (f"Test accuracy after {config.epochs} epochs on train800val200, seed {config.seed}, "
              f"precision {precisions}, {DEMO_BACKBONE.describe()}.")
    return header + "\n\n" + markdown_table(table + [mean], ["task", *columns])


def closing_lines() -> str:
    """The commands that reproduce the full tables, for a user who liked the taste."""
    width = max(len(what) for what, _ in FULL_TABLES)
    return "The full tables (docs/results):\n" + "\n".join(f"  {what:<{width}}  {command}"
                                                           for what, command in FULL_TABLES)
