"""The tuning protocol (`vprompt sweep`, `reproduce vapt`): the pick follows the validation split,
finished runs are skipped, Ray runs the same runs, and the table averages both ways."""

from __future__ import annotations

import json
import shutil

import pytest

from conftest import tiny_vit_spec
from vprompt.data import write_synthetic_suite
from vprompt.sweep import Protocol, make_executor, protocol_table, run_protocol, summarise
from vprompt.train import TrainConfig

TINY_PROTOCOL = Protocol(base_lrs=[0.02, 0.0002], weight_decays=[0.0], seeds=[0, 1],
                         train=TrainConfig(epochs=1, batch_size=100, optimizer="adamw", warmup_epochs=0))


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["digits", "sprites_location"], image_size=16, test_size=40,
                                 progress=False)[0]


@pytest.mark.slow  # end to end: a sweep
def test_protocol_picks_on_val200_retrains_per_seed_and_skips_finished_runs(tmp_path, task):
    methods = {"vpt-deep": {"prompt_len": 2}}
    rows = run_protocol([str(task)], methods, tiny_vit_spec(), TINY_PROTOCOL, tmp_path, progress=False)
    runs = tmp_path / "runs" / "digits" / "vpt-deep"
    grid = {lr: json.loads((runs / "grid" / f"lr{lr}_wd0.0" / "metrics.json").read_text())[-1]["eval_acc"]
            for lr in TINY_PROTOCOL.base_lrs}
    best = max(grid, key=grid.get)
    assert [r["seed"] for r in rows] == [0, 1]
    assert all(r["base_lr"] == best and r["val_acc"] == grid[best] for r in rows)
    for row in rows:
        metrics = json.loads((runs / f"seed{row['seed']}" / "metrics.json").read_text())
        assert metrics[-1]["eval_acc"] == row["test_acc"] and metrics[-1]["train_images"] == 1000

    finished = runs / "seed1" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    assert run_protocol([str(task)], methods, tiny_vit_spec(), TINY_PROTOCOL, tmp_path, progress=False) == rows
    assert finished.stat().st_mtime_ns == stamp  # read back, not retrained


@pytest.mark.slow  # end to end: a sweep
def test_prompt_length_is_searched_for_prompted_methods_only(tmp_path, task):
    protocol = Protocol(base_lrs=[0.02], weight_decays=[0.0], prompt_lens=[1, 3], seeds=[0],
                        train=TINY_PROTOCOL.train)
    rows = run_protocol([str(task)], {"vpt-shallow": {}, "linear": {}}, tiny_vit_spec(), protocol, tmp_path,
                        progress=False)
    grid = tmp_path / "runs" / "digits"
    assert sorted(p.name for p in (grid / "vpt-shallow" / "grid").iterdir()) == ["lr0.02_wd0.0_p1", "lr0.02_wd0.0_p3"]
    assert not (grid / "linear" / "grid").exists()  # one point: nothing to pick, no tuning run
    by_method = {r["method"]: r for r in rows}
    assert by_method["linear"]["val_acc"] is None and by_method["vpt-shallow"]["val_acc"] is not None
    assert by_method["vpt-shallow"]["prompt_len"] in (1, 3) and by_method["linear"]["prompt_len"] is None
    chosen = json.loads((grid / "vpt-shallow" / "seed0" / "prompt" / "prompt.json").read_text())
    assert chosen["method_config"]["prompt_len"] == by_method["vpt-shallow"]["prompt_len"]


@pytest.mark.slow  # Ray, end to end
def test_ray_runs_the_same_sweep_and_a_crashed_sweep_redoes_only_unfinished_runs(tmp_path, task):
    import ray

    tasks = [str(task), str(task.parent / "sprites_location")]
    protocol = Protocol(base_lrs=[0.02, 0.002], weight_decays=[0.0], seeds=[0, 1], train=TINY_PROTOCOL.train)
    try:
        executor = make_executor("local", cpus_per_run=1, num_cpus=2)
        rows = run_protocol(tasks, {"linear": {}}, tiny_vit_spec(), protocol, tmp_path, executor, progress=False)
        assert {(r["task"], r["seed"]) for r in rows} == {(t, s) for t in ("digits", "sprites_location") for s in (0, 1)}
        # a crash after the grid: one seed run never finished (its final prompt is missing)
        lost = tmp_path / "runs" / "sprites_location" / "linear" / "seed1"
        shutil.rmtree(lost / "prompt")
        stamps = {p: p.stat().st_mtime_ns for p in tmp_path.glob("runs/*/linear/**/metrics.json") if lost not in p.parents}
        again = run_protocol(tasks, {"linear": {}}, tiny_vit_spec(), protocol, tmp_path, executor, progress=False)
    finally:
        ray.shutdown()
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # every finished run was read back
    assert (lost / "prompt").is_dir() and len(again) == len(rows)
    assert [r["test_acc"] for r in again if (r["task"], r["seed"]) != ("sprites_location", 1)] == \
        [r["test_acc"] for r in rows if (r["task"], r["seed"]) != ("sprites_location", 1)]


def test_table_averages_over_tasks_and_over_group_means():
    rows = [{"task": t, "group": g, "method": "m", "seed": s, "test_acc": a + 0.01 * s}
            for t, g, a in (("a", "natural", 0.2), ("b", "natural", 0.4), ("c", "structured", 0.9)) for s in (0, 2)]
    table = protocol_table(rows)
    assert "| mean of tasks | | 0.510 |" in table.replace("|  |", "| |")
    assert "| mean of group means | | 0.610 |" in table.replace("|  |", "| |")
    assert "| a | natural | 0.210 ± 0.014 |" in table


def test_summary_reports_mean_and_sample_std():
    rows = [{"task": "t", "method": "m", "test_acc": a} for a in (0.5, 0.7)]
    assert summarise(rows) == [{"task": "t", "method": "m", "mean": pytest.approx(0.6),
                                "std": pytest.approx(0.1414, abs=1e-4), "seeds": 2}]


