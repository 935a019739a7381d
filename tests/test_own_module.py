"""A backbone you built yourself (a timm model loaded by your own code): it trains, saves, and loads
back only onto a module with the same weights; and the traps a new user falls into say so in one
line (random weights nobody asked for, images normalised twice)."""

from __future__ import annotations

import json
import warnings

import pytest
import timm
import torch
from torch import nn

import vprompt
from conftest import TINY_VIT
from test_cli import MODEL, run_cli
from vprompt.backbones import fingerprint
from vprompt.data import write_synthetic_suite
from vprompt.errors import CheckpointError, ConfigError, DataError, VpromptWarning
from vprompt.names import MODULE_PREFIX


def my_vit(seed: int = 7) -> nn.Module:
    """A timm ViT as a user's own code builds it (here at random, seeded: 'their fine-tuned model')."""
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", num_classes=5, **TINY_VIT)


@pytest.fixture
def trained(tmp_path, images):
    model = vprompt.create_model(my_vit(), "vpt-deep", num_classes=3, class_names=["a", "b", "c"], prompt_len=2)
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    model.train()
    for _ in range(3):
        loss = nn.functional.cross_entropy(model(images), torch.tensor([0, 1, 2, 0]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), vprompt.save_prompt(model, tmp_path / "prompt")


def test_a_module_you_built_trains_only_prompts_and_head_and_records_its_class_and_weights(trained):
    model, folder = trained
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"token_prompt", "head"}
    meta = json.loads((folder / "prompt.json").read_text())
    assert meta["backbone"]["name"] == f"{MODULE_PREFIX}timm.models.vision_transformer.VisionTransformer"
    assert meta["backbone_fingerprint"] == fingerprint(my_vit())  # the module as it was given


def test_it_loads_back_onto_a_module_with_the_same_weights_only(trained, images):
    model, folder = trained
    again = vprompt.load_prompt(folder, backbone=my_vit())
    assert torch.equal(again(images), model(images)) and again.class_names == ["a", "b", "c"]
    with pytest.raises(CheckpointError, match="does not fit this model: it was trained on backbone 'module:.*weights"):
        vprompt.load_prompt(folder, backbone=my_vit(seed=8))
    wider = timm.create_model("vit_tiny_patch16_224", num_classes=5, **{**TINY_VIT, "embed_dim": 64})
    with pytest.raises(CheckpointError, match="does not fit this model"):
        vprompt.load_prompt(folder, backbone=wider)


def test_without_the_module_the_prompt_says_how_to_load_it_in_one_line(capsys, trained):
    _, folder = trained
    with pytest.raises(CheckpointError, match=r"built by your own code.*load_prompt\(path, backbone=module\)"):
        vprompt.load_prompt(folder)
    code, _, err = run_cli(capsys, "eval", "--prompt", str(folder), "--data", str(folder))
    assert code == 2 and err.count("\n") == 1 and "built by your own code" in err


def test_a_module_that_is_no_backbone_or_is_already_one_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="a Linear cannot be a backbone: it lacks timm's forward_features"):
        vprompt.create_model(nn.Linear(4, 4), "linear", num_classes=2)
    module = my_vit()
    vprompt.create_model(module, "vpt-shallow", num_classes=2)
    with pytest.raises(ConfigError, match="already serves a PromptedModel"):
        vprompt.create_model(module, "vpt-shallow", num_classes=2)


def test_normalised_or_0_255_images_are_one_clear_error_and_0_1_images_pass(images):
    model = vprompt.create_model(my_vit(), "vpt-shallow", num_classes=2)
    model(images)  # [0, 1]
    for bad in (images * 255, (images - 0.5) / 0.2):
        model.eval()  # each train()/eval() checks its next first batch again
        with pytest.raises(DataError, match=r"images reaching the model lie in \[.*\], not \[0, 1\]: the model "
                                            r"normalises them itself"):
            model(bad)
    model.eval()
    model(images.clamp(0, 1) * 1.1 - 0.05)  # a resize's small overshoot passes


@pytest.mark.slow  # two CLI trainings
def test_random_weights_nobody_asked_for_are_one_warning_line_and_a_seed_or_weights_are_not(capsys, tmp_path):
    with pytest.warns(VpromptWarning, match="has random weights"):
        vprompt.create_model("vit_tiny_patch16_224", "linear", num_classes=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        vprompt.create_model(vprompt.BackboneSpec("vit_tiny_patch16_224", kwargs=TINY_VIT, init_seed=0), "linear",
                             num_classes=2)
        vprompt.create_model("zoo:fractal-vit", "linear", num_classes=2)
    task = write_synthetic_suite(tmp_path, tasks=["digits"], image_size=16, test_size=10, progress=False)[0]
    unseeded = [arg for arg in MODEL if arg not in ("--init-seed", "0")]
    for seed, warned in ([], 1), (["--init-seed", "0"], 0):
        code, _, err = run_cli(capsys, "train", "--data", str(task), "--out", str(tmp_path / f"run{warned}"), *unseeded,
                               *seed, "--method", "linear", "--epochs", "1", "--no-progress")
        assert code == 0 and err.count("warning: backbone vit_tiny_patch16_224 has random weights") == warned, err
