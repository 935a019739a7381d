"""Runs as files: train, sweep and transfer write config.yaml (one key per flag); --config FILE
reads it back with the command line's flags winning; rerunning a finished run's file into a new
folder reproduces its metrics exactly; an unknown key or a wrong value is one line naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from test_cli import MODEL, run_cli
from vprompt.cli import parse
from vprompt.cli.config_file import CONFIG_FILE, config_args, settings
from vprompt.data import write_synthetic_suite

TIMELESS = ("seconds",)  # wall time is the one metric a rerun may change


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["digits"], image_size=16, test_size=40, progress=False)[0]


@pytest.fixture(scope="module")
def finished(digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "a"
    code = run_train("--data", str(digits), "--out", str(out), *MODEL, "--method", "vpt-shallow", "--prompt-len", "2",
                     "--epochs", "2", "--warmup-epochs", "0", "--optimizer", "adamw", "--base-lr", "0.05",
                     "--no-progress")
    assert code == 0
    return out


def run_train(*argv: str) -> int:
    try:
        parse(["train", *argv]).run()
    except SystemExit as exit_:
        return exit_.code
    return 0


def metrics(run: Path) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in TIMELESS} for row in json.loads((run / "metrics.json").read_text())]


def test_a_run_writes_its_settings_as_the_flags_it_takes(finished):
    written = yaml.safe_load((finished / CONFIG_FILE).read_text())
    assert (written["method"], written["prompt-len"], written["epochs"], written["base-lr"]) == ("vpt-shallow", 2, 2, 0.05)
    assert written["out"] == str(finished) and written["model-arg"] == MODEL[MODEL.index("--model-arg") + 1:]
    assert not {"config", "resume", "progress"} & set(written)  # how to run, not what


def test_rerunning_a_finished_runs_config_into_a_new_folder_reproduces_its_metrics(finished, tmp_path):
    assert run_train("--config", str(finished / CONFIG_FILE), "--out", str(tmp_path / "b")) == 0
    assert metrics(tmp_path / "b") == metrics(finished)
    again = yaml.safe_load((tmp_path / "b" / CONFIG_FILE).read_text())
    assert again == {**yaml.safe_load((finished / CONFIG_FILE).read_text()), "out": str(tmp_path / "b")}


@pytest.mark.slow  # a third training run
def test_flags_on_the_command_line_win_over_the_file(finished, tmp_path):
    assert run_train("--config", str(finished / CONFIG_FILE), "--out", str(tmp_path / "c"), "--epochs", "1") == 0
    assert len(metrics(tmp_path / "c")) == 1


@pytest.mark.parametrize("key, value, expected", [
    ("epoch", 3, "unknown key 'epoch'"),
    ("epochs", "ten", "--epochs"),
    ("pretrained", "maybe", "'pretrained' takes true or false"),
    ("resume", True, "unknown key 'resume'"),
])
def test_an_unknown_key_or_a_bad_value_is_one_line_naming_it_and_nothing_is_written(capsys, finished, tmp_path, key,
                                                                                    value, expected):
    config = {**yaml.safe_load((finished / CONFIG_FILE).read_text()), "out": str(tmp_path / "d"), key: value}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(config))
    code, _, err = run_cli(capsys, "train", "--config", str(tmp_path / "bad.yaml"))
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert not (tmp_path / "d").exists()


def test_sweep_and_transfer_settings_read_back_to_the_same_command(digits, tmp_path):
    commands = {
        "sweep": ["--data", str(digits), str(digits), "--out", str(tmp_path / "s"), *MODEL, "--methods", "linear",
                  "vpt-deep", "--base-lrs", "0.1", "1", "--seeds", "0", "1", "--ray", "none", "--image-column", "img"],
        "transfer": ["--bank", str(tmp_path), "--target", str(digits), "--out", str(tmp_path / "t"), "--seeds", "2",
                     "--methods", "hgprompt", "uniform", "--no-progress"],
    }
    for name, argv in commands.items():
        parsed = parse([name, *argv])
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(settings(parsed)))
        again = parse([name, *config_args(tmp_path / f"{name}.yaml", type(parsed))])
        assert settings(again) == settings(parsed), name
