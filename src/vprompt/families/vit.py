"""timm's ``VisionTransformer`` (ViT, DeiT, DeiT-3, CLIP, SigLIP, DINOv2, FlexiViT, and DeiT's
distilled subclass): prompts need nothing from its attention beyond a longer sequence."""

from __future__ import annotations

from vprompt.families.base import SequenceFamily


class VisionTransformerFamily(SequenceFamily):
    name = "VisionTransformer"
    module_path = "timm.models.vision_transformer"
