"""The VTAB-1k tuning protocol (VPT, VAPT): pick on train800/val200, retrain × seeds, test.

For one task and method: every (base_lr, weight_decay) of the grid is trained on train800 and
scored on val200; the best pair is retrained on train800val200 with each seed, and the
last-epoch test accuracy is reported. Every run lives in its own folder, so an interrupted
protocol skips the runs that finished and resumes the one that did not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vprompt.backbones import BackboneSpec
from vprompt.recipes.run import train_on_task
from vprompt.report import mean_std
from vprompt.train import FINAL, TrainConfig, latest_checkpoint


@dataclass
class Protocol:
    """The grid, the seeds and the fixed training settings."""

    base_lrs: list[float] = field(default_factory=lambda: [50, 25, 10, 5, 2.5, 1, 0.5, 0.25, 0.1, 0.05])
    weight_decays: list[float] = field(default_factory=lambda: [0.01, 1e-3, 1e-4, 0.0])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2, 3, 4])
    train: TrainConfig = field(default_factory=TrainConfig)
    """Settings shared by every run; base_lr, weight_decay and seed are set by the protocol."""


def run_once(task_dir: Path, backbone: BackboneSpec, method: str, options: dict[str, Any], config: TrainConfig,
             out_dir: Path, train_split: str, eval_split: str) -> float:
    """Accuracy on ``eval_split`` after the last epoch; a finished run is read back, a broken one resumed."""
    metrics = out_dir / "metrics.json"
    if (out_dir / FINAL).is_dir() and metrics.is_file():
        return json.loads(metrics.read_text())[-1]["eval_acc"]
    row = train_on_task(task_dir, backbone, method, options, config, out_dir, train_split, eval_split,
                        resume=latest_checkpoint(out_dir) is not None, progress=False, eval_every=config.epochs)
    return row["eval_acc"]


def tune_and_test(task_dir: Path, backbone: BackboneSpec, method: str, options: dict[str, Any],
                  protocol: Protocol, out_dir: Path) -> list[dict[str, Any]]:
    """The whole protocol for one task × method; one row per seed."""
    val = {}
    for lr in protocol.base_lrs:
        for wd in protocol.weight_decays:
            config = replace(protocol.train, base_lr=lr, weight_decay=wd, seed=protocol.seeds[0])
            val[(lr, wd)] = run_once(task_dir, backbone, method, options, config,
                                     out_dir / "grid" / f"lr{lr}_wd{wd}", "train800", "val200")
    (best_lr, best_wd), best_val = max(val.items(), key=lambda item: item[1])
    rows = []
    for seed in protocol.seeds:
        config = replace(protocol.train, base_lr=best_lr, weight_decay=best_wd, seed=seed)
        test_acc = run_once(task_dir, backbone, method, options, config, out_dir / f"seed{seed}",
                            "train800val200", "test")
        rows.append({"task": task_dir.name, "method": method, "seed": seed, "test_acc": test_acc,
                     "base_lr": best_lr, "weight_decay": best_wd, "val_acc": best_val})
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of test accuracy per (task, method)."""
    groups: dict[tuple[str, str], list[float]] = {}
    for row in rows:
        groups.setdefault((row["task"], row["method"]), []).append(row["test_acc"])
    summary = []
    for (task, method), accs in groups.items():
        mean, std = mean_std(accs)
        summary.append({"task": task, "method": method, "mean": mean, "std": std, "seeds": len(accs)})
    return summary
