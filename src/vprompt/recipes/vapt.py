"""`vprompt reproduce vapt`: VAPT against VPT-deep, VPT-shallow and linear under the VTAB-1k protocol.

With ``--data`` pointing at VTAB-1k task folders and a pretrained ViT-B/16 this is the paper's
protocol (grid on train800/val200, retrain on train800val200 × 5 seeds, last-epoch test
accuracy; run it on a GPU). Without ``--data`` it runs the same protocol offline on the
synthetic suite with a smaller grid.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from vprompt.backbones import BackboneSpec
from vprompt.data import task_info, write_synthetic_suite
from vprompt.data.filelist import has_split_files
from vprompt.errors import DataError
from vprompt.recipes.demo import DEMO_BACKBONE
from vprompt.recipes.protocol import Protocol, summarise, tune_and_test
from vprompt.report import markdown_table, write_rows
from vprompt.train import TrainConfig

METHODS = ("vapt", "vpt-deep", "vpt-shallow", "linear")
PROMPTED = ("vapt", "vpt-deep", "vpt-shallow")


def offline_protocol(quick: bool) -> Protocol:
    """A smaller grid and fewer epochs for the synthetic suite on a CPU."""
    train = TrainConfig(epochs=3 if quick else 10, batch_size=64, optimizer="adamw", warmup_epochs=1)
    if quick:
        return Protocol(base_lrs=[0.01], weight_decays=[1e-4], seeds=[0, 1], train=train)
    return Protocol(base_lrs=[0.03, 0.01], weight_decays=[1e-4, 0.0], seeds=[0, 1, 2], train=train)


@dataclass
class VAPTReproduction:
    out: Path = Path("reproduce-vapt")
    data: Path | None = None
    """Folder of VTAB-1k task folders (the paper's protocol); default: the offline synthetic suite."""
    tasks: list[str] | None = None
    """Task folder names to run (default: all found)."""
    prompt_len: int = 10
    quick: bool = False
    """Offline only: one grid point, two seeds, three epochs."""


def task_dirs(config: VAPTReproduction) -> list[Path]:
    if config.data is None:
        return write_synthetic_suite(config.out / "data", tasks=config.tasks, progress=False)
    found = sorted(p for p in config.data.iterdir() if p.is_dir() and has_split_files(p))
    chosen = [p for p in found if config.tasks is None or p.name in config.tasks]
    if not chosen:
        raise DataError(f"no task folders{' named ' + ', '.join(config.tasks) if config.tasks else ''} in {config.data}")
    return chosen


def run_vapt_reproduction(config: VAPTReproduction, backbone: BackboneSpec | None = None,
                          protocol: Protocol | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """Every task × method through the protocol; writes results.json and results.md into ``out``."""
    backbone = backbone or DEMO_BACKBONE
    protocol = protocol or (offline_protocol(config.quick) if config.data is None else Protocol())
    groups = {task: task_info(task).group for task in task_dirs(config)}
    rows: list[dict[str, Any]] = []
    for task, method in tqdm([(t, m) for t in groups for m in METHODS], desc="task × method", disable=not progress):
        options = {"prompt_len": config.prompt_len} if method in PROMPTED else {}
        found = tune_and_test(task, backbone, method, options, protocol, config.out / "runs" / task.name / method)
        rows += [row | {"group": groups[task], "backbone": backbone.name, "image_source": image_source(config)}
                 for row in found]
    write_rows(rows, config.out / "results.json")
    (config.out / "results.md").write_text(results_table(rows, backbone, protocol) + "\n")
    return rows


def image_source(config: VAPTReproduction) -> str:
    return "synthetic suite (JPEG)" if config.data is None else f"JPEG file lists in {config.data}"


def results_table(rows: list[dict[str, Any]], backbone: BackboneSpec, protocol: Protocol) -> str:
    """Mean ± std over seeds per task and method, then the task mean and the mean of group means."""
    summary = summarise(rows)
    tasks = list(dict.fromkeys(r["task"] for r in rows))
    groups = {r["task"]: r["group"] for r in rows}
    cell = {(s["task"], s["method"]): s for s in summary}
    lines = [{"task": t} | {m: f"{cell[t, m]['mean']:.3f} ± {cell[t, m]['std']:.3f}" for m in METHODS}
             for t in tasks]
    task_mean = {m: statistics.mean(cell[t, m]["mean"] for t in tasks) for m in METHODS}
    group_means = {m: statistics.mean(
        statistics.mean(cell[t, m]["mean"] for t in tasks if groups[t] == g)
        for g in sorted({groups[t] for t in tasks})) for m in METHODS}
    lines.append({"task": "mean of tasks"} | {m: f"{v:.3f}" for m, v in task_mean.items()})
    lines.append({"task": "mean of group means"} | {m: f"{v:.3f}" for m, v in group_means.items()})
    wins = sum(cell[t, "vapt"]["mean"] > cell[t, "vpt-deep"]["mean"] for t in tasks)
    header = (f"Last-epoch test accuracy, mean ± sample std over seeds {protocol.seeds}; grid base_lr "
              f"{protocol.base_lrs} × weight decay {protocol.weight_decays} picked on val200; "
              f"{protocol.train.epochs} epochs, {protocol.train.optimizer}; backbone {backbone.describe()}. "
              f"VAPT beats VPT-deep on {wins} of {len(tasks)} tasks.")
    return header + "\n\n" + markdown_table(lines, ["task", *METHODS])
