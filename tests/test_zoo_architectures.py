"""The zoo's convolutional-stem ViT: a timm VisionTransformer whose stem keeps the patch grid, on which
every token prompt runs, with the zoo's own normalisation and clear errors for what it cannot be."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from vprompt.backbones import BackboneSpec, create_backbone, data_config
from vprompt.errors import ConfigError
from vprompt.families import find_family
from vprompt.model import create_model
from vprompt.zoo.architectures import CONVSTEM_VIT

KWARGS = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=5)


def spec(**overrides) -> BackboneSpec:
    return BackboneSpec(CONVSTEM_VIT, kwargs={**KWARGS, **overrides}, init_seed=0)


def test_the_stem_has_one_stride_two_convolution_per_factor_of_two_and_keeps_the_grid():
    model = create_backbone(spec())
    convs = [m for m in model.patch_embed.proj if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2)] * 3 + [(1, 1)]
    assert tuple(model.patch_embed.grid_size) == (4, 4) and model.patch_embed.num_patches == 16
    assert model.forward_features(torch.rand(2, 3, 32, 32)).shape == (2, 1 + 16, 32)
    assert data_config(model).mean == (0.5, 0.5, 0.5) and data_config(model).input_size == (32, 32)


@pytest.mark.parametrize("method, options", [("vpt-shallow", {"prompt_len": 3}), ("vpt-deep", {"prompt_len": 3}),
                                             ("vapt", {"prompt_len": 3}), ("linear", {})])
def test_token_prompts_run_on_it_and_train_only_themselves(method, options):
    model = create_model(spec(), method, 4, **options)
    assert find_family(model.backbone) is not None
    model(torch.rand(2, 3, 32, 32)).sum().backward()
    assert all(p.grad is None for p in model.backbone.parameters())
    trained = [p for n, p in model.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for p in trained)


def test_bad_patch_sizes_and_timm_weights_are_refused():
    with pytest.raises(ConfigError, match="power-of-two patch size"):
        create_backbone(spec(patch_size=6))
    with pytest.raises(ConfigError, match="no timm weights"):
        create_backbone(BackboneSpec(CONVSTEM_VIT, pretrained=True, kwargs=KWARGS))
