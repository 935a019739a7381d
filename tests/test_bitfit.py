"""BitFit (`--method bitfit`): exactly the backbone's bias terms and the head train; the count
follows the formula; a checkpoint stores those tensors and loads back to the same logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conftest import tiny_vit_spec
from vprompt.frozen_features import frozen_trunk_reason
from vprompt.model import count_parameters, create_model, load_prompt, save_prompt


def test_trainable_count_at_vit_b16_is_every_bias_of_every_block_plus_patch_embedding_and_final_norm():
    width, depth = 768, 12
    per_block = 3 * width + width + 2 * width + 4 * width + width  # qkv, proj, norm1 + norm2, fc1, fc2 biases
    report = count_parameters("vit_base_patch16_224", "bitfit", 100)
    assert report.backbone == depth * per_block + 2 * width == 102_912  # + patch embedding and final norm
    assert report.head == 768 * 100 + 100 and report.prompt == 0


def test_gradients_reach_the_biases_and_the_head_only():
    model = create_model(tiny_vit_spec(), "bitfit", 4).train()
    loss = F.cross_entropy(model(torch.rand(3, 3, 16, 16)), torch.tensor([0, 1, 2]))
    loss.backward()
    for name, param in model.named_parameters():
        trains = name.startswith("head.") or name.endswith(".bias")
        assert param.requires_grad == trains, name
        assert (param.grad is not None) == trains, name
    assert model.backbone.training is False  # dropout and norm statistics stay as the frozen backbone's
    assert frozen_trunk_reason(model) == "bitfit trains the backbone"  # no feature cache


def test_save_load_gives_identical_logits_and_stores_only_biases_and_head(tmp_path):
    torch.manual_seed(0)
    model = create_model(tiny_vit_spec(), "bitfit", 4).eval()
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if name.endswith(".bias"):
                param.add_(torch.randn_like(param) * 0.1)  # as if trained
    save_prompt(model, tmp_path / "ckpt")
    loaded = load_prompt(tmp_path / "ckpt").eval()
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(images), model(images))
    stored = model.trainable_state()
    assert stored and all(k.startswith("head.") or k.endswith(".bias") for k in stored)
    assert create_model(tiny_vit_spec(), "bitfit", 4).eval()(images).sub(model(images)).abs().max() > 1e-3
