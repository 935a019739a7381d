"""The model card every saved prompt carries, and prompts loaded as hf://ORG/NAME from
huggingface_hub's own cache layout (offline, never the network)."""

from __future__ import annotations

import shutil

import pytest
import torch
import yaml

import vprompt
from conftest import tiny_vit_spec
from vprompt.bank import add_to_bank
from vprompt.cli import main
from vprompt.data import FileListDataset, write_synthetic_suite
from vprompt.errors import CheckpointError
from vprompt.model import create_model, save_prompt
from vprompt.train import TrainConfig, train


def card_parts(folder):
    text = (folder / "README.md").read_text()
    _, header, body = text.split("---\n", 2)
    return yaml.safe_load(header), body


def test_a_trained_prompt_has_a_card_with_hub_metadata_settings_and_accuracy(tmp_path):
    task = write_synthetic_suite(tmp_path / "suite", tasks=["digits"], image_size=16, test_size=20, progress=False)[0]
    model = create_model(tiny_vit_spec(), "vpt-deep", 10, prompt_len=2)
    config = TrainConfig(epochs=1, batch_size=100, warmup_epochs=0, seed=7)
    result = train(model, FileListDataset(task, "train800val200", 16), tmp_path / "run", config,
                   eval_set=FileListDataset(task, "test", 16), progress=False)
    header, body = card_parts(result.final_dir)
    assert header["library_name"] == "vprompt" and "vpt-deep" in header["tags"]
    accuracy = header["model-index"][0]["results"][0]["metrics"][0]["value"]
    assert accuracy == pytest.approx(result.metrics[-1]["eval_acc"], abs=1e-6)
    assert f"weights fingerprint `{model.backbone_fingerprint}`" in body
    assert "prompt_len=2" in body and "epochs 1" in body and "seed 7" in body and "digits [test]" in body
    assert "vprompt.load_prompt" in body and "vprompt predict --prompt" in body


def test_a_prompt_saved_outside_training_says_so(tmp_path):
    folder = save_prompt(create_model(tiny_vit_spec(), "linear", 3, ["cat", "dog", "eel"]), tmp_path / "p")
    header, body = card_parts(folder)
    assert "model-index" not in header and "base_model" not in header
    assert "cat, dog, eel" in body and "not recorded" in body


def fill_hub_cache(cache, repo: str, folder, commit: str = "0123456789abcdef0123456789abcdef01234567") -> str:
    """A repository snapshot in huggingface_hub's cache layout: refs/main → snapshots/COMMIT/."""
    org, name = repo.split("/")
    root = cache / f"models--{org}--{name}"
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return commit


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    cache = tmp_path / "hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_references_load_from_the_cache_offline(tmp_path, offline_hub, capsys):
    model = create_model(tiny_vit_spec(), "vpt-shallow", 3, prompt_len=2).eval()
    commit = fill_hub_cache(offline_hub, "someone/digits-prompt", save_prompt(model, tmp_path / "local"))
    images = torch.rand(2, 3, 16, 16)
    for reference in ("hf://someone/digits-prompt", f"hf://someone/digits-prompt@{commit}"):
        assert torch.equal(vprompt.load_prompt(reference)(images), model(images))
    entry = add_to_bank(tmp_path / "bank", "hf://someone/digits-prompt", accuracy=0.5)
    assert entry.name == "digits-prompt" and (entry.path / "prompt.safetensors").is_file()
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--prompt", "hf://someone/missing", "--data", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and "hf://someone/missing is not in the Hugging Face cache" in err
    with pytest.raises(CheckpointError):
        vprompt.load_prompt("hf://someone/digits-prompt@ffffffffffffffffffffffffffffffffffffffff")
