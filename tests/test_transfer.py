"""The prompt bank and multi-source transfer on real (tiny) trained prompts: cards, compatibility
checks, every method's initial prompt, the weight search, and read-back of finished runs."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
import torch
import yaml
from safetensors.torch import load_file

from conftest import tiny_vit_spec
from vprompt.bank import add_to_bank, list_bank, select_entries, source_prompts
from vprompt.cli import main
from vprompt.data import write_synthetic_suite
from vprompt.errors import CheckpointError, ConfigError
from vprompt.model import create_model, save_prompt
from vprompt.prompts.ensemble import ensemble_prompt, h_score
from vprompt.runs import train_on_task
from vprompt.train import TrainConfig
from vprompt.transfer import (SearchConfig, TargetTransfer, TransferConfig, prompt_features, run_transfer,
                              search_weights, transfer_method_names)

SPEC = tiny_vit_spec()
ONE_EPOCH = TrainConfig(epochs=1, batch_size=100, optimizer="adamw", base_lr=0.02, warmup_epochs=0)
QUICK = TransferConfig(tune=ONE_EPOCH, search=SearchConfig(search_epochs=1, search_batch_size=250))


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    return write_synthetic_suite(root, tasks=["objects", "digits", "count"], image_size=16, test_size=40,
                                 progress=False)


@pytest.fixture(scope="module")
def bank(suite, tmp_path_factory):
    """One 1-epoch VPT-deep source prompt per task, filed from its run folder."""
    root = tmp_path_factory.mktemp("work")
    for task in suite:
        train_on_task(task, SPEC, "vpt-deep", {"prompt_len": 2}, ONE_EPOCH, root / "runs" / task.name, progress=False)
        add_to_bank(root / "bank", root / "runs" / task.name, task=task.name)
    return root / "bank"


def test_bank_cards_record_task_method_backbone_and_the_runs_accuracy(bank):
    entries = list_bank(bank)
    assert [e.name for e in entries] == ["count", "digits", "objects"]
    card = entries[1].card
    run_metrics = json.loads((bank.parent / "runs" / "digits" / "metrics.json").read_text())
    assert card["task"] == "digits" and card["method"] == "vpt-deep" and card["prompt_len"] == 2
    assert card["accuracy"] == run_metrics[-1]["eval_acc"] and card["num_classes"] == 10
    with pytest.raises(CheckpointError, match="already holds 'digits'"):
        add_to_bank(bank, bank.parent / "runs" / "digits", task="digits")


def test_bank_refuses_prompts_that_do_not_fit_the_target(bank, tmp_path):
    other = tmp_path / "bank"
    shutil.copytree(bank / "digits", other / "digits")
    save_prompt(create_model(tiny_vit_spec(), "vpt-deep", 3, prompt_len=3), tmp_path / "long")
    add_to_bank(other, tmp_path / "long", task="long")
    save_prompt(create_model(tiny_vit_spec(), "vpt-shallow", 3, prompt_len=2), tmp_path / "shallow")
    add_to_bank(other, tmp_path / "shallow", task="shallow")
    entries = {e.name: e for e in list_bank(other)}
    model = create_model(tiny_vit_spec(), "vpt-deep", 3, prompt_len=2)
    assert source_prompts([entries["digits"]], model).shape == (1, 3, 2, 32)
    with pytest.raises(CheckpointError, match="'long' does not fit .* prompt shape"):
        source_prompts([entries["digits"], entries["long"]], model)
    with pytest.raises(CheckpointError, match="'shallow' does not fit .* method vpt-shallow"):
        source_prompts([entries["shallow"]], model)
    with pytest.raises(CheckpointError, match="'digits' does not fit .* trained on backbone"):
        source_prompts([entries["digits"]], create_model(replace(SPEC, init_seed=1), "vpt-deep", 3, prompt_len=2))
    (other / "stray").mkdir()
    with pytest.raises(CheckpointError, match="stray .* has no card.json"):
        list_bank(other)


def test_sources_leave_out_the_target_task_and_unknown_names_are_refused(bank, suite):
    entries = list_bank(bank)
    assert TargetTransfer(entries, str(suite[1]), QUICK, "unused", progress=False).names == ["count", "objects"]
    with pytest.raises(CheckpointError, match="no source prompts left .* digits, the target"):
        TargetTransfer(select_entries(entries, ["digits"]), str(suite[1]), QUICK, "unused", progress=False)
    with pytest.raises(CheckpointError, match="no bank entries named nope"):
        select_entries(entries, ["nope"])


def final_prompt(row) -> torch.Tensor:
    return load_file(f"{row['prompt']}/prompt.safetensors")["token_prompt.prompts"]  # the checkpoint key of VPT's shared prompt


@pytest.mark.slow  # end to end: every transfer method
def test_every_method_starts_from_its_own_initial_prompt(bank, suite, tmp_path):
    """With a zero learning rate the tuned prompt *is* the initial prompt, so each method's
    choice can be read off its final checkpoint."""
    frozen = TransferConfig(tune=TrainConfig(**{**ONE_EPOCH.__dict__, "base_lr": 0.0}), search=QUICK.search)
    entries = list_bank(bank)
    rows = {r["method"]: r for r in run_transfer(entries, str(suite[1]), transfer_method_names(), [0], frozen, tmp_path,
                                                 progress=False)}
    job = TargetTransfer(entries, str(suite[1]), frozen, tmp_path, progress=False)
    sources = job.sources
    assert set(rows) == set(transfer_method_names())
    for method, row in rows.items():
        assert row["target"] == "digits" and row["seed"] == 0 and 0 <= row["test_acc"] <= 1
        assert row["sources"] == ["count", "objects"]
        if method == "scratch":
            assert row["weights"] is None
            continue
        weights = torch.tensor(row["weights"])
        assert torch.all(weights >= 0) and float(weights.sum()) == pytest.approx(1.0, abs=1e-5)
        torch.testing.assert_close(final_prompt(row), ensemble_prompt(weights, sources), atol=1e-5, rtol=1e-4)
    assert rows["uniform"]["weights"] == [0.5, 0.5]
    scores = json.loads((tmp_path / "source_scores.json").read_text())
    best_h = max(scores, key=lambda s: s["h_score"])["source"]
    best_probe = max(scores, key=lambda s: s["probe_test_acc"])["source"]
    assert rows["best-hscore"]["weights"][rows["best-hscore"]["sources"].index(best_h)] == 1.0
    assert rows["oracle"]["weights"][rows["oracle"]["sources"].index(best_probe)] == 1.0
    assert len(rows["hgprompt"]["search"]) == 1 and rows["hgprompt-no-gar"]["search"][0]["gar"] > 0


@pytest.mark.slow  # end to end, seconds: the fast tier stays under its budget
def test_finished_runs_are_read_back_not_retrained(bank, suite, tmp_path, monkeypatch):
    entries = list_bank(bank)
    first = run_transfer(entries, str(suite[2]), ["uniform", "hgprompt"], [0], QUICK, tmp_path, progress=False)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("vprompt.transfer.train", no_training)
    monkeypatch.setattr("vprompt.transfer.search_weights", no_training)
    assert run_transfer(entries, str(suite[2]), ["uniform", "hgprompt"], [0], QUICK, tmp_path, progress=False) == first


@pytest.mark.slow  # end to end, seconds: the fast tier stays under its budget
def test_an_interrupted_run_resumes_without_searching_again(bank, suite, tmp_path, monkeypatch):
    entries = list_bank(bank)
    (first,) = run_transfer(entries, str(suite[2]), ["hgprompt"], [0], QUICK, tmp_path, progress=False)
    (tmp_path / "hgprompt" / "seed0" / "row.json").unlink()  # killed after its last checkpoint, before its row

    def no_search(*args, **kwargs):
        raise AssertionError("the weights were searched for again")

    monkeypatch.setattr("vprompt.transfer.search_weights", no_search)
    assert run_transfer(entries, str(suite[2]), ["hgprompt"], [0], QUICK, tmp_path, progress=False) == [first]


def test_the_weight_search_raises_the_h_score_it_maximises(bank, suite):
    entries = list_bank(bank)
    job = TargetTransfer(entries, str(suite[0]), QUICK, "unused", progress=False)
    model = job.model(0)
    full_batch = SearchConfig(search_epochs=6, search_batch_size=len(job.search_set), search_lr=0.2, gar_weight=0.0)
    weights, history = search_weights(model, job.sources, job.search_set, full_batch)

    def score(w: torch.Tensor) -> float:
        return float(h_score(*prompt_features(model, ensemble_prompt(w, job.sources), job.search_set),
                             ridge=full_batch.h_ridge))

    assert score(weights) > score(torch.full((2,), 0.5))
    assert history[-1]["h_score"] > history[0]["h_score"]


def test_unknown_methods_are_refused(bank, suite, tmp_path):
    with pytest.raises(ConfigError, match="unknown transfer method best"):
        run_transfer(list_bank(bank)[:1], str(suite[1]), ["best"], [0], QUICK, tmp_path, progress=False)


@pytest.mark.slow  # end to end, seconds: the fast tier stays under its budget
def test_cli_bank_list_transfer_and_errors(bank, suite, tmp_path, capsys):
    main(["bank", "list", str(bank), "--json"])
    assert [c["name"] for c in json.loads(capsys.readouterr().out)] == ["count", "digits", "objects"]
    main(["transfer", "--bank", str(bank), "--target", str(suite[1]), "--out", str(tmp_path / "t"), "--rank-only",
          "--no-progress"])
    ranking = capsys.readouterr().out
    assert "count" in ranking and "objects" in ranking and "| digits" not in ranking
    main(["transfer", "--bank", str(bank), "--target", str(suite[1]), "--out", str(tmp_path / "t"),
          "--methods", "uniform", "--epochs", "1", "--batch-size", "100", "--no-progress"])
    rows = json.loads((tmp_path / "t" / "results.json").read_text())
    assert [(r["target"], r["method"], r["seed"]) for r in rows] == [("digits", "uniform", 0)]
    assert yaml.safe_load((tmp_path / "t" / "config.yaml").read_text())["methods"] == ["uniform"]  # for --config
    with pytest.raises(SystemExit) as exit_info:
        main(["bank", "add", str(bank), str(bank.parent / "runs" / "digits"), "--task", "digits"])
    assert exit_info.value.code == 2
    assert "already holds 'digits'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["transfer", "--bank", str(bank), "--target", str(suite[1]), "--out", str(tmp_path / "s"), "--seed", "1"])
    assert exit_info.value.code == 2 and "use --seeds 1" in capsys.readouterr().err
