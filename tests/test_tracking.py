"""--report-to: every epoch's metrics and the run's settings reach a real tracker through accelerate,
read back here from what the tracker wrote (TensorBoard event files, a local MLflow store, a W&B
offline run); a tracker that is not installed is one line saying how to install it."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import tiny_vit_spec
from test_cli import MODEL, run_cli
from vprompt.data import write_synthetic_suite
from vprompt.errors import ConfigError
from vprompt.runs import train_on_task
from vprompt.train import PROJECT, TrainConfig

EPOCHS = 2
TRACKED = ("train_loss", "train_acc", "eval_acc", "eval_loss", "lr", "seconds", "step_seconds")


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["digits"], image_size=16, test_size=40, progress=False)[0]


def run(digits: Path, out: Path, tracker: str) -> list[dict]:
    train_on_task(digits, tiny_vit_spec(), "vpt-shallow", {"prompt_len": 2},
                  TrainConfig(epochs=EPOCHS, warmup_epochs=0, report_to=tracker), out, progress=False)
    return json.loads((out / "metrics.json").read_text())


def test_tensorboard_holds_one_value_per_epoch_of_each_metric_and_the_settings(digits, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    metrics = run(digits, tmp_path / "run", "tensorboard")
    events = EventAccumulator(str(tmp_path / "run" / PROJECT))
    events.Reload()
    for name in TRACKED:
        logged = events.Scalars(name)
        assert [e.step for e in logged] == [1, 2], name
        if name != "step_seconds":
            assert [e.value for e in logged] == pytest.approx([row[name] for row in metrics], rel=1e-6), name
    hparams = (tmp_path / "run" / PROJECT).rglob("events.out.tfevents.*")
    assert len(list(hparams)) >= 2  # the metrics and the settings (accelerate writes hparams in their own file)


@pytest.mark.slow  # a training run and MLflow's start-up
def test_mlflow_gets_the_metrics_history_and_the_settings_as_params(digits, tmp_path, monkeypatch):
    import mlflow

    store = f"file:{tmp_path / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps the file store, in maintenance
    metrics = run(digits, tmp_path / "run", "mlflow")
    client = mlflow.MlflowClient(store)
    (experiment,) = [e for e in client.search_experiments() if e.name == PROJECT]
    (found,) = client.search_runs([experiment.experiment_id])
    history = client.get_metric_history(found.info.run_id, "train_acc")
    assert [m.value for m in history] == pytest.approx([row["train_acc"] for row in metrics])
    assert found.data.params["method"] == "vpt-shallow" and found.data.params["precision"] == "no"
    assert float(found.data.params["base_lr"]) == TrainConfig.base_lr


@pytest.mark.slow  # a training run and W&B's service process
def test_wandb_writes_an_offline_run_with_the_metrics(digits, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    run(digits, tmp_path / "run", "wandb")
    (log,) = (tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb")
    deadline = time.monotonic() + 60  # W&B's service process may still be flushing the log after finish()
    while (missing := [n for n in TRACKED if n.encode() not in log.read_bytes()]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not missing


def test_a_tracker_that_is_not_installed_is_one_line_saying_how_to_install_it(capsys, digits, tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"--report-to wandb needs the wandb package: pip install 'vprompt\[wandb\]'"):
        TrainConfig(report_to="wandb")
    code, _, err = run_cli(capsys, "train", "--data", str(digits), "--out", str(tmp_path / "run"), *MODEL,
                           "--report-to", "wandb")
    assert code == 2 and err.count("\n") == 1 and "pip install 'vprompt[wandb]'" in err
    assert not (tmp_path / "run").exists()
