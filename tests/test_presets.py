"""Presets: published per-task settings kept as data with their source, `vprompt presets` to list
them, and `vprompt train --preset NAME` to start from one (flags on the command line win, the run
records the preset, a different method or task is one warning line each)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli import MODEL, run_cli

from vprompt.data import write_synthetic_suite
from vprompt.data.vtab import VTAB_TASKS
from vprompt.presets import all_presets, get_preset
from vprompt.recipes.demo import DEMO_METHODS, DemoConfig, demo_train_config
from vprompt.train import TrainConfig

RESULTS = Path(__file__).parents[1] / "docs" / "results"


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["digits"], image_size=16, test_size=40, progress=False)[0]


def test_petl_vision_covers_vpt_shallow_deep_and_linear_on_the_19_vtab_tasks_under_our_folder_names():
    presets = [p for p in all_presets().values() if p.source.name == "petl-vision"]
    for method in ("vpt-shallow", "vpt-deep", "linear"):
        assert sorted(p.task for p in presets if p.method == method) == sorted(VTAB_TASKS)
    assert all(0 < p.accuracy < 1 for p in presets)
    assert all(("prompt_len" in p.options) == (p.method != "linear") for p in presets)


def test_an_applied_learning_rate_becomes_the_base_lr_that_applies_it_at_the_sources_batch_size():
    preset = get_preset("petl-vision/vpt-deep/cifar")  # released: lr 0.001, weight decay 0.001, 5 prompts
    config = TrainConfig.from_preset(preset.name)
    assert config.batch_size == 64 and config.peak_lr() == pytest.approx(0.001)
    assert (config.optimizer, config.weight_decay, config.epochs, config.preset) == ("adamw", 0.001, 100, preset.name)
    assert preset.options == {"prompt_dropout": 0.1, "prompt_len": 5}


def test_the_demo_presets_are_the_demos_settings_and_its_committed_results():
    demo = demo_train_config(DemoConfig())
    reported = {(row["task"], row["method"]): row["test_acc"] for row in json.loads((RESULTS / "demo.json").read_text())
                if row["seed"] == 0}
    presets = [p for p in all_presets().values() if p.source.name == "vprompt-demo"]
    assert {(p.task, p.method) for p in presets} == set(reported)
    for preset in presets:
        config = TrainConfig.from_preset(preset.name, seed=demo.seed, mixed_precision=demo.mixed_precision)
        assert config == TrainConfig(**{**vars(demo), "preset": preset.name})
        assert {k: v for k, v in preset.options.items()} == DEMO_METHODS[preset.method]
        assert preset.accuracy == reported[(preset.task, preset.method)]


def test_presets_lists_a_source_and_method_as_a_table(capsys):
    code, out, err = run_cli(capsys, "presets", "--source", "petl-vision", "--method", "vpt-shallow")
    assert code == 0, err
    assert out.count("`petl-vision/vpt-shallow/") == 19 and "arXiv:2409.16434" in out and "Not reproduced" in out
    code, _, err = run_cli(capsys, "presets", "--task", "nosuchtask")
    assert code == 2 and err == "error: no preset matches --task nosuchtask\n"


def test_train_with_a_preset_runs_its_settings_records_it_and_flags_given_win(capsys, digits, tmp_path):
    name = "vprompt-demo/vpt-deep/digits"
    code, out, err = run_cli(capsys, "train", "--data", str(digits), "--preset", name, "--out", str(tmp_path / "run"),
                             *MODEL, "--epochs", "1", "--warmup-epochs", "0", "--no-progress")
    assert code == 0, err
    assert "warning" not in err
    row = json.loads(out)
    assert (row["preset"], row["method"], row["epochs"]) == (name, "vpt-deep", 1)
    meta = json.loads((tmp_path / "run" / "prompt" / "prompt.json").read_text())
    assert meta["method_config"]["prompt_len"] == 8
    card = (tmp_path / "run" / "prompt" / "README.md").read_text()
    assert (f"preset {name}, epochs 1, batch_size 64, optimizer adamw, base_lr 0.1, weight_decay 0.0001, "
            "warmup_epochs 0") in card  # the preset's settings, and the command line's --epochs and --warmup-epochs


def test_a_preset_for_another_method_and_task_says_so_in_one_line_each(capsys, digits, tmp_path):
    code, out, err = run_cli(capsys, "train", "--data", str(digits), "--preset", "petl-vision/vpt-deep/cifar",
                             "--method", "vpt-shallow", "--out", str(tmp_path / "run"), *MODEL, "--epochs", "1",
                             "--no-progress")
    assert code == 0, err
    warnings = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert warnings == ["warning: preset petl-vision/vpt-deep/cifar was found for method vpt-deep; this run's "
                        "method is vpt-shallow",
                        "warning: preset petl-vision/vpt-deep/cifar was found for task cifar; this run's task is "
                        "digits"]
    assert json.loads(out)["method"] == "vpt-shallow"


@pytest.mark.parametrize("argv, expected", [
    (["train", "--preset", "vpt-deep/cifar"], "unknown preset 'vpt-deep/cifar' (names are SOURCE/METHOD/TASK); did "
                                              "you mean petl-vision/vpt-deep/cifar?"),
    (["sweep", "--preset", "petl-vision/vpt-deep/cifar"], "--preset applies to `vprompt train`; `vprompt sweep` sets"),
    (["train", "--preset", "petl-vision/vpt-deep/cifar", "--config", "any.yaml"], "--preset and --config together"),
])
def test_a_preset_that_cannot_apply_is_one_error_line_and_nothing_is_written(capsys, digits, tmp_path, argv,
                                                                               expected):
    code, _, err = run_cli(capsys, *argv, "--data", str(digits), "--out", str(tmp_path / "run"), *MODEL)
    assert code == 2 and err.count("\n") == 1 and expected in err
    assert not (tmp_path / "run").exists()


def test_a_preset_for_another_method_leaves_out_its_method_options(capsys, digits, tmp_path):
    code, out, err = run_cli(capsys, "train", "--data", str(digits), "--preset", "petl-vision/vpt-deep/cifar",
                             "--method", "linear", "--out", str(tmp_path / "run"), *MODEL, "--epochs", "1",
                             "--no-progress")
    assert code == 0 and "method is linear" in err, err
    assert json.loads(out)["method"] == "linear"
