"""Prompt-only checkpoints: exact round trip, what is stored, and refusal of a mismatch."""

from __future__ import annotations

import json
from collections import OrderedDict

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import tiny_vit_spec
from vprompt.backbones import BackboneSpec, create_backbone, fingerprint
from vprompt.errors import CheckpointError, ConfigError
from vprompt.checkpoint import META_FILE, WEIGHTS_FILE
from vprompt.model import create_model, load_prompt, save_prompt


def perturbed(model):
    """Move every trainable tensor away from its init so a no-op load cannot pass."""
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    return model


@pytest.mark.parametrize("method, options", [
    ("vpt-deep", {"prompt_len": 3}), ("vpt-shallow", {"prompt_len": 2, "prompt_dropout": 0.1}),
    ("linear", {}), ("full", {}), ("vapt", {"prompt_len": 3, "projector": "per-layer"}),
])
def test_save_then_load_gives_identical_logits(tmp_path, vit_spec, images, method, options):
    model = perturbed(create_model(vit_spec, method, 4, ["a", "b", "c", "d"], **options)).eval()
    save_prompt(model, tmp_path / "ckpt")
    torch.manual_seed(123)  # a different RNG state must not matter: everything comes from the files
    loaded = load_prompt(tmp_path / "ckpt").eval()
    assert torch.equal(model(images), loaded(images))
    assert loaded.class_names == ["a", "b", "c", "d"]
    assert loaded.method_config == model.method_config


def test_checkpoint_holds_only_prompt_and_head(tmp_path, vit_spec):
    model = create_model(vit_spec, "vpt-deep", 5, prompt_len=3)
    save_prompt(model, tmp_path)
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    assert set(tensors) == {"token_prompt.prompts", "head.fc.weight", "head.fc.bias", "head.norm.running_mean",
                            "head.norm.running_var", "head.norm.num_batches_tracked"}
    meta = json.loads((tmp_path / META_FILE).read_text())
    assert meta["backbone"]["name"] == "vit_tiny_patch16_224"
    assert meta["input_size"] == [16, 16]
    assert meta["method_config"] == {"head_norm": True, "prompt_len": 3, "prompt_dropout": 0.0}


def test_checkpoint_from_another_backbone_is_refused(tmp_path, vit_spec):
    save_prompt(create_model(vit_spec, "vpt-deep", 5, prompt_len=3), tmp_path)
    other_weights = BackboneSpec(vit_spec.name, kwargs=vit_spec.kwargs, init_seed=7)
    with pytest.raises(CheckpointError, match="trained on backbone") as info:
        load_prompt(tmp_path, backbone=other_weights)
    assert "\n" not in str(info.value)
    wider = tiny_vit_spec(embed_dim=48, num_heads=3)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_prompt(tmp_path, backbone=wider)


def test_corrupt_or_missing_checkpoint_is_a_clear_error(tmp_path, vit_spec):
    with pytest.raises(CheckpointError, match="no prompt checkpoint"):
        load_prompt(tmp_path / "nowhere")
    save_prompt(create_model(vit_spec, "linear", 2), tmp_path)
    (tmp_path / WEIGHTS_FILE).write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_prompt(tmp_path)
    (tmp_path / META_FILE).write_text("{broken")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_prompt(tmp_path)


def test_tampered_tensor_shapes_are_refused(tmp_path, vit_spec):
    save_prompt(create_model(vit_spec, "vpt-deep", 5, prompt_len=3), tmp_path)
    tensors = load_file(str(tmp_path / WEIGHTS_FILE))
    tensors["token_prompt.prompts"] = tensors["token_prompt.prompts"][:, :2].contiguous()
    save_file(tensors, str(tmp_path / WEIGHTS_FILE))
    with pytest.raises(CheckpointError, match="tensors do not match"):
        load_prompt(tmp_path)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_backbone_from_a_local_checkpoint(tmp_path, suffix):
    source = create_backbone(BackboneSpec("vit_tiny_patch16_224", kwargs=tiny_vit_spec().kwargs, init_seed=3))
    path = tmp_path / f"weights{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": source.state_dict()}, path)
    else:
        save_file(source.state_dict(), str(path))
    loaded = create_backbone(BackboneSpec("vit_tiny_patch16_224", checkpoint=str(path), kwargs=tiny_vit_spec().kwargs))
    assert fingerprint(loaded) == fingerprint(source)
    assert not any(p.requires_grad for p in loaded.parameters())


def test_pickled_code_in_a_pt_checkpoint_is_not_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle executed')",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": Payload()}, path)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        create_backbone(BackboneSpec("vit_tiny_patch16_224", checkpoint=str(path), kwargs=tiny_vit_spec().kwargs))


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    save_file(create_backbone(BackboneSpec("resnet18", init_seed=0)).state_dict(), str(tmp_path / "r18.safetensors"))
    with pytest.raises(CheckpointError, match="does not match the backbone"):
        create_backbone(BackboneSpec("vit_tiny_patch16_224", checkpoint=str(tmp_path / "r18.safetensors"),
                                     kwargs=tiny_vit_spec().kwargs))


def test_full_finetuning_checkpoint_keeps_batchnorm_statistics(tmp_path):
    model = create_model(BackboneSpec("resnet18", kwargs={"layers": [1, 1, 1, 1]}, init_seed=0), "full", 3)
    model.train()
    with torch.no_grad():
        model(torch.rand(8, 3, 32, 32) * 0.5 + 0.3)  # moves the running statistics away from init
    model.eval()
    save_prompt(model, tmp_path)
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(load_prompt(tmp_path).eval()(images), model(images))


def test_a_prompt_saved_before_an_option_existed_still_loads(tmp_path, images):
    model = perturbed(create_model(tiny_vit_spec(img_size=32, patch_size=8), "vp", 3, image_size=16)).eval()
    save_prompt(model, tmp_path)
    meta = json.loads((tmp_path / META_FILE).read_text())
    del meta["method_config"]["patch_size"]  # as written by a version without the option
    (tmp_path / META_FILE).write_text(json.dumps(meta))
    small = images[:, :, :16, :16]
    assert torch.equal(load_prompt(tmp_path)(small), model(small))


TINY_RESNET = {"layers": [1, 1, 1, 1], "channels": [8, 16, 32, 64], "num_classes": 10}


def robust_wrapped_states(network):
    """The same weights in the two layouts robust ImageNet models ship in."""
    weights = network.state_dict()
    mean_std = {"new_mean": torch.zeros(1, 3, 1, 1), "new_std": torch.ones(1, 3, 1, 1)}
    salman = {f"module.model.{k}": v for k, v in weights.items()}  # robustness library (Salman et al. 2020)
    salman |= {f"module.attacker.model.{k}": v for k, v in weights.items()}
    salman |= {f"module.{part}.{k}": v for part in ("normalizer", "attacker.normalize") for k, v in mean_std.items()}
    wrapper = torch.nn.Sequential(OrderedDict(normalize=torch.nn.Identity(), model=network))  # RobustBench's
    robustbench = {"normalize.mean": torch.zeros(1, 3, 1, 1), "normalize.std": torch.ones(1, 3, 1, 1)}
    robustbench |= wrapper.state_dict()
    return {"salman": {"model": salman, "epoch": 90, "optimizer": {"state": {}, "param_groups": []},
                       "schedule": None}, "robustbench": robustbench}


@pytest.mark.parametrize("layout", ["salman", "robustbench"])
def test_robust_checkpoints_in_their_wrapped_layouts_load_without_pickle(tmp_path, layout):
    spec = BackboneSpec("resnet18", kwargs=TINY_RESNET, init_seed=5)
    source = create_backbone(spec)
    path = tmp_path / f"{layout}.pt"
    torch.save(robust_wrapped_states(source)[layout], path)
    loaded = create_backbone(BackboneSpec("resnet18", kwargs=TINY_RESNET, checkpoint=str(path)))
    assert fingerprint(loaded) == fingerprint(source)


def test_robustbench_names_are_checked_and_need_the_extra():
    with pytest.raises(ConfigError, match="no timm equivalent known for RobustBench model 'Carmon2019'"):
        create_backbone(BackboneSpec("robustbench:Carmon2019"))
    try:
        import robustbench  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'vprompt\[robustbench\]'"):
            create_backbone(BackboneSpec("robustbench:Linf/Salman2020Do_R18"))
