"""The demo recipe end to end on one task: suite written, every method trained, table and JSON."""

from __future__ import annotations

import pytest

import json
import math
from pathlib import Path

import torch

from vprompt.data.filelist import task_info
from vprompt.model import create_model, load_prompt
from vprompt.data.synthetic import synthetic_task_names
from vprompt.recipes.demo import DEMO_BACKBONE, DEMO_METHODS, FULL_TABLES, DemoConfig, closing_lines, demo_table, run_demo

TRAIN_IMAGES, BATCH = 1000, 64  # the demo trains on train800val200 (1000 images) in batches of 64
STEPS = math.ceil(TRAIN_IMAGES / BATCH)  # optimizer steps in its one epoch here


def test_the_demo_is_a_taste_one_task_per_group_and_all_runs_every_task():
    config = DemoConfig()
    assert config.tasks == ["digits", "cells", "sprites_location"]
    assert config.methods == ["linear", "vpt-deep", "vapt"] == list(DEMO_METHODS)
    assert DemoConfig(tasks=["all"]).tasks == synthetic_task_names(None)
    lines = closing_lines()
    assert all(command in lines for _, command in FULL_TABLES) and "--tasks all" in lines


@pytest.mark.slow  # end to end: the demo
def test_demo_trains_every_method_and_writes_its_results(tmp_path):
    config = DemoConfig(out=tmp_path, epochs=1, tasks=["digits"])
    rows = run_demo(config, progress=False)
    assert [(r["task"], r["method"]) for r in rows] == [("digits", m) for m in config.methods]
    assert all(0.0 <= r["test_acc"] <= 1.0 and r["chance"] == 0.1 for r in rows)
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    table = demo_table(rows, config)
    assert "| task | linear | vpt-deep | vapt | chance |" in table
    assert "zoo:fractal-vit (offline zoo weights)" in table and "seed 0" in table
    for method in config.methods:
        assert (tmp_path / "runs" / "digits" / method / "prompt" / "prompt.safetensors").is_file()

    # each row's method was trained: its run holds a prompt of that method, moved away from where it started
    info = task_info(tmp_path / "data" / "digits")
    for row in rows:
        assert_trained(row, tmp_path / "runs" / "digits" / row["method"], config.seed, info)


def assert_trained(row: dict, run: Path, seed: int, info) -> None:
    """``run`` trained ``row["method"]`` for one epoch and scored ``row["test_acc"]``."""
    method = row["method"]
    trained = load_prompt(run / "prompt")
    assert trained.method.name == method
    metrics = json.loads((run / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == [1] and metrics[0]["train_images"] == TRAIN_IMAGES
    assert math.isfinite(metrics[0]["train_loss"]) and metrics[0]["lr"] > 0
    assert row["test_acc"] == metrics[-1]["eval_acc"]  # the row is this run's score
    # the head's feature statistics (zeros and ones at init, whatever the seed) saw every training batch
    state = trained.trainable_state()
    assert state["head.norm.num_batches_tracked"].item() == STEPS
    assert state["head.norm.running_mean"].abs().sum() > 0
    # every trained tensor left its initial value: the start rebuilt as the run builds it (seeded by the seed)
    torch.manual_seed(seed)
    start = create_model(DEMO_BACKBONE, method, info.num_classes, info.class_names, **DEMO_METHODS[method])
    initial = {name: p for name, p in start.named_parameters() if p.requires_grad}
    learned = {name: p for name, p in trained.named_parameters() if p.requires_grad}
    assert initial.keys() == learned.keys() and learned
    assert any(name.startswith("token_prompt") for name in learned) == (method != "linear")
    unmoved = [name for name in initial if torch.equal(initial[name], learned[name])]
    assert not unmoved, f"{method}: {unmoved} kept their initial values"
    # and, whatever the start was: the optimizer stepped every trainable tensor once per batch, on a gradient
    checkpoint = sorted(run.glob("checkpoints/*/train_state.pt"))[-1]
    optimizer = torch.load(checkpoint, weights_only=True)["optimizer"]
    assert sum(len(group["params"]) for group in optimizer["param_groups"]) == len(learned)
    assert len(optimizer["state"]) == len(learned)
    for moments in optimizer["state"].values():
        assert moments["step"].item() == STEPS and moments["exp_avg"].abs().sum() > 0
