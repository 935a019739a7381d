"""`reproduce baselines` end to end on a tiny random-init ViT: every method tuned on val200, its final
runs trained and attacked, the costs counted and timed, the table's figures read back from the rows,
and a rerun from the records trains nothing and writes the same table."""

from __future__ import annotations

import json
import re

import pytest

from conftest import tiny_vit_spec
from vprompt.data import write_synthetic_suite
from vprompt.model import count_parameters
from vprompt.recipes.baselines import BaselinesReproduction, run_baselines_reproduction
from vprompt.report import seed_means, spread

pytestmark = pytest.mark.slow  # end to end: a whole recipe

METHODS = ["kv-prompt", "lora"]  # a prompt and a tuner: every kind of row, at half the runs


@pytest.fixture(scope="module")
def reproduction(tmp_path_factory):
    root = tmp_path_factory.mktemp("baselines")
    write_synthetic_suite(root / "suite", tasks=["digits"], image_size=16, test_size=30, progress=False)

    def reproduce(name: str) -> tuple[BaselinesReproduction, list]:
        config = BaselinesReproduction(out=root / name, data=root / "suite", tasks=["digits"], methods=METHODS,
                                       seeds=[0, 1], epochs=1, base_lrs=[0.02, 0.002], prompt_len=2, eps="1/255",
                                       pgd_steps=2, attack_images=8, timing_steps=1, records=root / "records")
        return config, run_baselines_reproduction(config, tiny_vit_spec(), progress=False)

    config, rows = reproduce("scratch")
    return config, rows, reproduce


def test_every_method_is_tuned_trained_and_attacked(reproduction):
    config, rows, _ = reproduction
    assert [(r["method"], r["seed"]) for r in rows] == [(m, s) for m in METHODS for s in (0, 1)]
    for row in rows:
        assert row["val_acc"] is not None and row["base_lr"] in (0.02, 0.002)  # picked on val200
        assert row["attacked_images"] == 8 and 0 <= row["robust_acc_pgd"] <= row["clean_acc_attacked"] <= 1
        assert 0 <= row["test_acc"] <= 1
    assert json.loads((config.out / "results.json").read_text()) == rows


def test_costs_count_what_each_method_trains_and_time_it_against_full_fine_tuning(reproduction):
    config, _, _ = reproduction
    costs = {c["method"]: c for c in json.loads((config.out / "costs.json").read_text())}
    assert list(costs) == METHODS
    for method, cost in costs.items():
        options = {"prompt_len": 2} if method == "kv-prompt" else {}
        report = count_parameters(tiny_vit_spec(), method, 10, **options)
        assert cost["trained_without_head"] == report.prompt + report.backbone
        assert cost["step_seconds"] > 0 and cost["step_ratio_to_full"] > 0
    assert costs["kv-prompt"]["trained_without_head"] == 2 * 3 * 2 * 32  # keys and values, 3 blocks, p = 2, d = 32


def test_the_summary_states_each_methods_mean_over_tasks_with_its_spread_over_seeds(reproduction):
    config, rows, _ = reproduction
    table = (config.out / "results.md").read_text()
    costs = {c["method"]: c for c in json.loads((config.out / "costs.json").read_text())}
    for method in METHODS:
        mine = [r for r in rows if r["method"] == method]
        line = next(line for line in table.splitlines() if line.startswith(f"| {method} |"))
        assert line == (f"| {method} | {costs[method]['trained_without_head']:,} | "
                        f"{costs[method]['step_ratio_to_full']:.2f} | {spread(seed_means(mine, 'test_acc'))} | "
                        f"{spread(seed_means(mine, 'robust_acc_pgd'))} |")
    assert "PGD-2 ℓ∞ 1/255 on the first 8 test images" in table
    assert re.search(r"Base rate picked on val200 \(tasks\): kv-prompt 0\.0?02? on 1; lora", table)


def test_a_rerun_from_the_records_trains_nothing_and_writes_the_same_table(reproduction):
    config, rows, reproduce = reproduction
    recorded = sorted(config.records.glob("*.json"))
    assert len(recorded) == len(METHODS) * (2 + 2) + 1  # two grid points and two seeds each, one timing
    again, again_rows = reproduce("resumed")
    assert again_rows == rows
    assert (again.out / "results.md").read_text() == (config.out / "results.md").read_text()
    assert not list((again.out / "runs").rglob("metrics.json"))  # nothing trained
    assert sorted(config.records.glob("*.json")) == recorded
