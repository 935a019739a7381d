"""Shared fixtures: tiny random-init timm ViTs, small enough for CPU tests in milliseconds."""

from __future__ import annotations

import os

import pytest
import torch

from vprompt.backbones import BackboneSpec
from vprompt.hardware import AUTO_PRECISION_ENV

# Tests keep one precision on every machine, in this process and in every CLI subprocess it starts:
# ``auto`` means fp32 even on an AMX-BF16 CPU (tests/test_hardware.py checks the detection itself).
os.environ[AUTO_PRECISION_ENV] = "no"

TINY_VIT = dict(img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2)


def tiny_vit_spec(**overrides) -> BackboneSpec:
    """A 3-block, width-32 ViT on 16×16 images (a 4×4 patch grid)."""
    return BackboneSpec("vit_tiny_patch16_224", kwargs={**TINY_VIT, **overrides}, init_seed=0)


@pytest.fixture
def vit_spec() -> BackboneSpec:
    return tiny_vit_spec()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
