"""Key-value prompts (`--method kv-prompt`): the count is 2·L·p·d; the attention they join equals
timm's own attention over prompt tokens whose keys and values they are (an oracle through VPT-deep
on timm's unmodified forward); gradients reach them and the head only; taking them out gives the
bare backbone bit for bit; save → load gives identical logits; the lean path equals the full one on
every family that takes them, and Swin is refused in one line."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_vit_spec
from vprompt.backbones import create_backbone
from vprompt.errors import ConfigError
from vprompt.families.matrix import ROWS, tiny_spec
from vprompt.frozen_features import frozen_trunk_reason
from vprompt.model import count_parameters, create_model, load_prompt, save_prompt


@pytest.mark.slow  # a ViT-B/16 build (on the meta device)
def test_trainable_count_at_vit_b16_is_two_p_d_per_block():
    depth, width, keys = 12, 768, 10
    report = count_parameters("vit_base_patch16_224", "kv-prompt", 100, prompt_len=keys)
    assert report.prompt == 2 * depth * keys * width == 184_320
    assert report.backbone == 0 and report.head == 768 * 100 + 100


def test_keys_and_values_of_prompt_tokens_give_vpt_deeps_logits_through_timms_own_forward():
    """VPT-deep's prompt tokens enter every block's attention as keys and values and are read by no
    pooled row, so key-value prompts set to those tokens' keys and values must give its logits."""
    torch.manual_seed(0)
    vpt = create_model(tiny_vit_spec(), "vpt-deep", 4, prompt_len=3).eval()
    vpt.set_lean(False)  # timm's own blocks, unmodified
    kv = create_model(tiny_vit_spec(), "kv-prompt", 4, prompt_len=3).eval()
    kv.head.load_state_dict(vpt.head.state_dict())
    with torch.no_grad():
        for index, block in enumerate(vpt.backbone.blocks):
            projected = block.attn.qkv(block.norm1(vpt.token_prompt.layer_prompt(index)))
            _, keys, values = projected.chunk(3, dim=-1)
            kv.token_prompt.keys[index] = keys
            kv.token_prompt.values[index] = values
    images = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(kv(images), vpt(images), rtol=0, atol=2e-6)
    assert kv(images).sub(create_model(tiny_vit_spec(), "linear", 4).eval()(images)).abs().max() > 1e-3


def test_gradients_reach_the_keys_values_and_head_only_and_taking_them_out_gives_the_bare_backbone():
    model = create_model(tiny_vit_spec(), "kv-prompt", 4, prompt_len=2).train()
    F.cross_entropy(model(torch.rand(3, 3, 16, 16)), torch.tensor([0, 1, 2])).backward()
    for name, param in model.named_parameters():
        trains = name.startswith(("head.", "token_prompt."))
        assert (param.grad is not None) == trains, name
    assert bool((model.token_prompt.keys.grad.abs().sum(dim=(1, 2)) > 0).all())
    assert frozen_trunk_reason(model) is not None  # no frozen-feature cache: the keys change the features
    images = torch.rand(2, 3, 16, 16)
    model.eval().token_prompt.detach()
    bare = create_backbone(tiny_vit_spec())
    bare.reset_classifier(0)
    assert torch.equal(model.backbone(images), bare.eval()(images))


def test_save_load_gives_identical_logits(tmp_path):
    torch.manual_seed(1)
    model = create_model(tiny_vit_spec(), "kv-prompt", 4, prompt_len=2).eval()
    save_prompt(model, tmp_path / "ckpt")
    loaded = load_prompt(tmp_path / "ckpt").eval()
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(images), model(images))
    assert set(model.trainable_state()) >= {"token_prompt.keys", "token_prompt.values"}


@pytest.mark.parametrize("family", ["ViT (AugReg, original)", "DINOv2", "EVA-02", "RoPE ViT", "BEiT"])
def test_the_lean_path_equals_the_full_one(family):
    row = next(row for row in ROWS if row.family == family)
    torch.manual_seed(0)
    model = create_model(tiny_spec(row, num_classes=10), "kv-prompt", 3, prompt_len=2).eval()
    images = torch.rand(2, 3, *model.image_size)
    lean = model(images)
    model.set_lean(False)
    torch.testing.assert_close(lean, model(images), rtol=0, atol=1e-5)


def test_swin_is_refused_in_one_line():
    row = next(row for row in ROWS if row.family == "Swin")
    with pytest.raises(ConfigError, match="ViT, Eva and BEiT blocks only") as refused:
        create_model(tiny_spec(row, num_classes=10), "kv-prompt", 3, prompt_len=2)
    assert "\n" not in str(refused.value)
