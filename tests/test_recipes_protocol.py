"""The tuning protocol and `reproduce vapt`: the pick follows val200, finished runs are skipped."""

from __future__ import annotations

import json

import pytest

from conftest import tiny_vit_spec
from vprompt.data import write_synthetic_suite
from vprompt.recipes.protocol import Protocol, summarise, tune_and_test
from vprompt.recipes.vapt import METHODS, VAPTReproduction, run_vapt_reproduction
from vprompt.train import TrainConfig

TINY_PROTOCOL = Protocol(base_lrs=[0.02, 0.0002], weight_decays=[0.0], seeds=[0, 1],
                         train=TrainConfig(epochs=1, batch_size=100, optimizer="adamw", warmup_epochs=0))


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["digits"], image_size=16, test_size=40, progress=False)[0]


def test_protocol_picks_on_val200_retrains_per_seed_and_skips_finished_runs(tmp_path, task):
    rows = tune_and_test(task, tiny_vit_spec(), "vpt-deep", {"prompt_len": 2}, TINY_PROTOCOL, tmp_path)
    grid = {lr: json.loads((tmp_path / "grid" / f"lr{lr}_wd0.0" / "metrics.json").read_text())[-1]["eval_acc"]
            for lr in TINY_PROTOCOL.base_lrs}
    best = max(grid, key=grid.get)
    assert [r["seed"] for r in rows] == [0, 1]
    assert all(r["base_lr"] == best and r["val_acc"] == grid[best] for r in rows)
    for row in rows:
        metrics = json.loads((tmp_path / f"seed{row['seed']}" / "metrics.json").read_text())
        assert metrics[-1]["eval_acc"] == row["test_acc"] and metrics[-1]["train_images"] == 1000

    finished = tmp_path / "seed1" / "metrics.json"
    stamp = finished.stat().st_mtime_ns
    assert tune_and_test(task, tiny_vit_spec(), "vpt-deep", {"prompt_len": 2}, TINY_PROTOCOL, tmp_path) == rows
    assert finished.stat().st_mtime_ns == stamp  # read back, not retrained


def test_summary_reports_mean_and_sample_std():
    rows = [{"task": "t", "method": "m", "test_acc": a} for a in (0.5, 0.7)]
    assert summarise(rows) == [{"task": "t", "method": "m", "mean": pytest.approx(0.6),
                                "std": pytest.approx(0.1414, abs=1e-4), "seeds": 2}]


def test_reproduce_vapt_writes_rows_and_a_table_for_every_method(tmp_path, task):
    config = VAPTReproduction(out=tmp_path, data=task.parent, prompt_len=2)
    protocol = Protocol(base_lrs=[0.02], weight_decays=[0.0], seeds=[0, 1], train=TINY_PROTOCOL.train)
    rows = run_vapt_reproduction(config, tiny_vit_spec(), protocol, progress=False)
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in METHODS for s in (0, 1)}
    assert all({"task", "method", "seed", "test_acc", "group", "image_source"} <= r.keys() for r in rows)
    assert json.loads((tmp_path / "results.json").read_text()) == rows
    table = (tmp_path / "results.md").read_text()
    assert "| task | vapt | vpt-deep | vpt-shallow | linear |" in table
    assert "mean of group means" in table and "seeds [0, 1]" in table and "random init, seed 0" in table
