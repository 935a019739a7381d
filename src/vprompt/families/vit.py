"""timm's ``VisionTransformer`` (ViT, DeiT, DeiT-3, CLIP, SigLIP, DINOv2, FlexiViT, and DeiT's
distilled subclass): prompts need nothing from its attention beyond a longer sequence."""

from __future__ import annotations

from torch import nn

from vprompt.families.base import SequenceFamily


class VisionTransformerFamily(SequenceFamily):
    name = "VisionTransformer"
    module_path = "timm.models.vision_transformer"

    def pooled_rows(self, model: nn.Module) -> int | None:
        """The class token for token pooling; the distilled DeiT's head reads the class and
        distillation tokens."""
        from timm.models.deit import VisionTransformerDistilled
        from timm.models.vision_transformer import VisionTransformer

        if type(model) is VisionTransformerDistilled:
            return 2
        token = type(model) is VisionTransformer and model.attn_pool is None and model.global_pool == "token"
        return 1 if token else None
