"""Run records (`vprompt.records`): a recipe given a folder with some records runs only the missing
runs and builds the same table as a run from scratch; a folder holds one precision."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
from pathlib import Path

import pytest

from conftest import tiny_vit_spec
from vprompt.data import write_synthetic_suite
from vprompt.errors import ConfigError
from vprompt.records import RunRecords, settings_digest
from vprompt.recipes.vapt import METHODS, VAPTReproduction, run_vapt_reproduction
from vprompt.sweep import Protocol
from vprompt.train import TrainConfig


def test_a_record_is_found_by_its_settings_in_any_key_order(tmp_path):
    records = RunRecords(tmp_path / "runs", "fp32")
    path = records.add({"task": "digits", "seed": 1, "train": {"lr": 0.1, "epochs": 2}}, {"acc": 0.5}, 3.21)
    assert records.find({"seed": 1, "train": {"epochs": 2, "lr": 0.1}, "task": "digits"}) == {"acc": 0.5}
    assert records.find({"task": "digits", "seed": 2, "train": {"lr": 0.1, "epochs": 2}}) is None
    record = json.loads(path.read_text())
    assert record["precision"] == "fp32" and record["seconds"] == 3.2 and record["machine"]["cores"] >= 1
    assert {"amx_bf16", "avx512_bf16", "cpu"} <= record["machine"].keys() and record["vprompt"]
    assert path.name == f"{settings_digest({'seed': 1, 'task': 'digits', 'train': {'epochs': 2, 'lr': 0.1}})}.json"
    assert (records.reused, records.added) == (1, 1)


def test_reuse_or_run_runs_only_what_is_not_recorded(tmp_path):
    calls = []
    records = RunRecords(tmp_path, "fp32")

    def run() -> dict:
        calls.append(1)
        return {"acc": 0.25}

    assert records.reuse_or_run({"seed": 0}, run) == {"acc": 0.25}
    assert RunRecords(tmp_path, "fp32").reuse_or_run({"seed": 0}, run) == {"acc": 0.25}
    assert len(calls) == 1


def test_a_folder_refuses_a_second_precision_before_anything_runs(tmp_path):
    RunRecords(tmp_path, "fp32").add({"seed": 0}, {"acc": 0.5})
    with pytest.raises(ConfigError, match="holds fp32 records and this run trains in bf16: a table uses one precision"):
        RunRecords(tmp_path, "bf16")


def test_a_record_whose_settings_differ_from_its_name_is_refused(tmp_path):
    records = RunRecords(tmp_path, "fp32")
    path = records.add({"seed": 0}, {"acc": 0.5})
    path.write_text(path.read_text().replace('"seed": 0', '"seed": 7'))
    with pytest.raises(ConfigError, match="records other settings than its name says"):
        records.find({"seed": 0})


@pytest.mark.slow  # two tiny end-to-end sweeps
def test_reproduce_vapt_writes_rows_and_a_table_and_from_some_records_runs_only_the_missing_ones(tmp_path):
    suite = tmp_path / "suite"
    write_synthetic_suite(suite, tasks=["digits"], image_size=16, test_size=40, progress=False)
    protocol = Protocol(base_lrs=[0.02, 0.0002], weight_decays=[0.0], seeds=[0, 1],
                        train=TrainConfig(epochs=1, batch_size=100, optimizer="adamw", warmup_epochs=0))

    def reproduce(name: str, records) -> tuple[list, str]:
        config = VAPTReproduction(out=tmp_path / name, data=suite, prompt_len=2, records=records)
        rows = run_vapt_reproduction(config, tiny_vit_spec(), protocol, progress=False)
        return rows, (tmp_path / name / "results.md").read_text()

    full = tmp_path / "full-records"
    rows, table = reproduce("scratch", full)
    assert {(r["method"], r["seed"]) for r in rows} == {(m, s) for m in METHODS for s in (0, 1)}
    assert all({"task", "method", "seed", "test_acc", "group", "image_source"} <= r.keys() for r in rows)
    assert json.loads((tmp_path / "scratch" / "results.json").read_text()) == rows
    assert "| task | group | vapt | vpt-deep | vpt-shallow | linear |" in table
    assert "mean of group means" in table and "seeds [0, 1]" in table and "random init, seed 0" in table
    recorded = sorted(p.name for p in full.glob("*.json"))
    assert len(recorded) == 4 * (2 + 2)  # every method: two grid points on val200, then two seeds
    missing = partial_copy(full, tmp_path / "kept")
    assert reproduce("resumed", tmp_path / "kept") == (rows, table)
    assert sorted(p.name for p in (tmp_path / "kept").glob("*.json")) == recorded
    # only the runs without a record trained, in the new folder
    assert len(list((tmp_path / "resumed" / "runs").rglob("metrics.json"))) == missing


def partial_copy(full: Path, kept: Path) -> int:
    """Copy every other record of ``full`` into ``kept``; the number left out."""
    recorded = sorted(full.glob("*.json"))
    kept.mkdir()
    for path in recorded[::2]:
        shutil.copy(path, kept)
    return len(recorded) - len(recorded[::2])


@pytest.mark.slow  # two linear probes, twice
def test_zoo_transfer_reads_recorded_runs_back_and_prints_the_same_rows(tmp_path, monkeypatch, capsys):
    monkeypatch.syspath_prepend(str(Path(__file__).parent.parent / "benchmarks"))
    zoo_transfer = importlib.import_module("zoo_transfer")

    def transfer(name: str) -> list[dict]:
        monkeypatch.setattr(sys, "argv", [
            "zoo_transfer.py", "--quick", "--models", "fractal-vit", "--methods", "probe", "--tasks", "digits",
            "--work", str(tmp_path / name), "--records", str(tmp_path / "records"), "--out", str(tmp_path / f"{name}.json")])
        zoo_transfer.main()
        return json.loads((tmp_path / f"{name}.json").read_text())

    first = transfer("first")
    assert [(r["weights"], r["method"]) for r in first] == [("zoo", "probe"), ("random", "probe")]
    assert "0 runs read back" in capsys.readouterr().out
    assert transfer("again") == first
    assert "[records] 2 runs read back" in capsys.readouterr().out
    sys.modules.pop("zoo_transfer", None)
