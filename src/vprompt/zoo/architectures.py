"""The zoo's own timm architecture: a ViT whose patch embedding is a small convolutional stem.

Why: trained from scratch on the fractal source task, a ViT with a linear patchify reached 0.354
source accuracy in the zoo's budget and transferred no better than its random twin. A stem of
stride-2 3×3 convolutions in place of the patchify ("Early convolutions help transformers see
better", Xiao et al. 2021) gives it the locality it cannot learn from 30k images. Everything after
the stem is timm's ``VisionTransformer``, so every token prompt runs on it unchanged and
``patch_embed.grid_size`` / ``patch_size`` keep their meaning (the stem's total stride is the
patch size).

Importing this module registers the architecture with timm (``vprompt.backbones`` does).
"""

from __future__ import annotations

import math
from typing import Any

from timm.layers import PatchEmbed
from timm.models import register_model
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vprompt.errors import ConfigError

CONVSTEM_VIT = "vprompt_vit_convstem"
STEM_WIDTHS = (32, 64, 128, 256)
"""Channels after each stride-2 convolution; a patch size of 2^k uses the first k."""
PIXEL_STATS = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}
"""The normalisation the zoo trains this architecture with (timm's ViT default)."""


class ConvStemEmbed(PatchEmbed):
    """timm's ``PatchEmbed`` with its patchify replaced by conv3×3/2 + BN + ReLU stages and a 1×1
    projection to the embedding width; size checks, flattening and ``grid_size`` are timm's."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        side = self.patch_size[0]
        stages = int(math.log2(side))
        if self.patch_size[0] != self.patch_size[1] or 2**stages != side or stages > len(STEM_WIDTHS):
            raise ConfigError(f"a convolutional stem needs a square power-of-two patch size up to "
                              f"{2 ** len(STEM_WIDTHS)}, got {self.patch_size}")
        layers: list[nn.Module] = []
        width = kwargs.get("in_chans", 3)
        for out in STEM_WIDTHS[:stages]:
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True)]
            width = out
        layers.append(nn.Conv2d(width, kwargs["embed_dim"], 1))
        self.proj = nn.Sequential(*layers)


@register_model
def vprompt_vit_convstem(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """A ViT with ``ConvStemEmbed``; there are no pretrained timm weights (the zoo ships its own)."""
    if pretrained:
        raise ConfigError(f"{CONVSTEM_VIT} has no timm weights; use the zoo's (zoo:NAME)")
    for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
        kwargs.pop(key, None)
    model = VisionTransformer(embed_layer=ConvStemEmbed, **kwargs)
    model.pretrained_cfg = {**PIXEL_STATS, "input_size": (3, *model.patch_embed.img_size),
                            "interpolation": "bicubic", "crop_pct": 1.0, "num_classes": model.num_classes}
    return model
