"""The zoo registry: cards as data, `zoo:NAME` wherever a timm name is accepted, clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from conftest import TINY_VIT
from vprompt.backbones import BackboneSpec, create_backbone, data_config, fingerprint, zoo_twin
from vprompt.errors import ConfigError
from vprompt.model import create_model, load_prompt, save_prompt
from vprompt.zoo import find_card, list_cards


@pytest.fixture
def zoo_dir(tmp_path, monkeypatch):
    """A user zoo folder holding one tiny ViT with a 7-class source head."""
    source = create_backbone(BackboneSpec("vit_tiny_patch16_224", kwargs={**TINY_VIT, "num_classes": 7}, init_seed=5))
    save_file(source.state_dict(), str(tmp_path / "tiny-vit.safetensors"))
    card = {"name": "tiny-vit", "arch": "vit_tiny_patch16_224", "kwargs": TINY_VIT, "num_classes": 7,
            "variant": "standard", "source_acc": 0.5}
    (tmp_path / "tiny-vit.json").write_text(json.dumps(card))
    monkeypatch.setenv("VPROMPT_ZOO_PATH", str(tmp_path))
    return tmp_path, fingerprint(source)


def test_zoo_models_load_by_name_and_round_trip_through_a_prompt_checkpoint(zoo_dir, tmp_path):
    folder, source_fingerprint = zoo_dir
    assert "tiny-vit" in [c["name"] for c in list_cards()]
    assert find_card("zoo:tiny-vit")["source_acc"] == 0.5
    backbone = create_backbone(BackboneSpec("zoo:tiny-vit"))
    assert fingerprint(backbone) == source_fingerprint  # the shipped weights, not a random init
    model = create_model("zoo:tiny-vit", "vpt-deep", 3, prompt_len=2).eval()
    save_prompt(model, tmp_path / "ckpt")
    assert json.loads((tmp_path / "ckpt" / "prompt.json").read_text())["backbone"]["name"] == "zoo:tiny-vit"
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(load_prompt(tmp_path / "ckpt")(images), model(images))


def test_unknown_or_incomplete_zoo_models_are_clear_errors(zoo_dir):
    folder, _ = zoo_dir
    with pytest.raises(ConfigError, match="unknown zoo model 'nope'; available: .*tiny-vit"):
        create_backbone(BackboneSpec("zoo:nope"))
    (folder / "tiny-vit.safetensors").unlink()
    with pytest.raises(ConfigError, match="has a card but no weights file"):
        create_backbone(BackboneSpec("zoo:tiny-vit"))
    (folder / "broken.json").write_text(json.dumps({"name": "broken"}))
    with pytest.raises(ConfigError, match="lacks arch, kwargs, num_classes"):
        list_cards()


def test_zoo_list_json_prints_the_cards(zoo_dir, capsys):
    from vprompt.cli import main

    main(["zoo", "list", "--json"])
    cards = json.loads(capsys.readouterr().out)
    assert ("tiny-vit", 7) in [(c["name"], c["num_classes"]) for c in cards]


def test_the_random_twin_is_the_zoo_architecture_at_its_input_size_without_the_weights(tmp_path, monkeypatch):
    cnn = {"layers": [1, 1, 1, 1], "channels": [8, 8, 8, 8]}
    source = create_backbone(BackboneSpec("resnet18", kwargs={**cnn, "num_classes": 5}, init_seed=3))
    save_file(source.state_dict(), str(tmp_path / "tiny-cnn.safetensors"))
    card = {"name": "tiny-cnn", "arch": "resnet18", "kwargs": cnn, "num_classes": 5, "input_size": [20, 20]}
    (tmp_path / "tiny-cnn.json").write_text(json.dumps(card))
    monkeypatch.setenv("VPROMPT_ZOO_PATH", str(tmp_path))
    zoo_model, twin = create_backbone(BackboneSpec("zoo:tiny-cnn")), create_backbone(zoo_twin("tiny-cnn"))
    assert data_config(zoo_model).input_size == data_config(twin).input_size == (20, 20)  # not timm's 224
    assert fingerprint(zoo_model) == fingerprint(source) != fingerprint(twin)
    assert twin.num_classes == 5 and zoo_twin("tiny-cnn", init_seed=1) != zoo_twin("tiny-cnn")
