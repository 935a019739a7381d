"""timm's ``Eva`` (EVA-02, DINOv3, Perception Encoder, the ``vit_*_rope_*`` models).

Its attention rotates the queries and keys of every token after the prefix with the rotary
embedding of the patch grid. Prompt tokens sit between the prefix and the patches, so the rotary
embedding handed to each block gets one row per prompt that rotates nothing (sin 0, cos 1):
prompts get no rotary embedding, as timm treats CLS and register tokens, and every patch token
keeps exactly the rotation it has without prompts.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from vprompt.errors import ConfigError
from vprompt.families.base import Handle, SequenceFamily


def with_unrotated_rows(rope: torch.Tensor, count: int) -> torch.Tensor:
    """timm's concatenated [sin, cos] rotary embedding (positions on dim -2) with ``count``
    identity rotations in front."""
    *lead, _, width = rope.shape
    half = width // 2
    rows = torch.cat([rope.new_zeros(*lead, count, half), rope.new_ones(*lead, count, width - half)], dim=-1)
    return torch.cat([rows, rope], dim=-2)


class EvaFamily(SequenceFamily):
    name = "Eva"
    module_path = "timm.models.eva"

    def pooled_rows(self, model: nn.Module) -> int | None:
        """The class token for token pooling."""
        from timm.models.eva import Eva

        token = type(model) is Eva and model.attn_pool is None and model.global_pool == "token"
        return 1 if token else None

    def block_kwargs(self, kwargs: dict[str, Any], num_tokens: int) -> dict[str, Any]:
        rope = kwargs.get("rope")
        if rope is None:
            return kwargs
        return {**kwargs, "rope": with_unrotated_rows(rope, num_tokens)}

    def attention_handles(self, model: nn.Module, num_tokens: int) -> list[Handle]:
        # The rows above go right after the prefix only if every attention counts the same prefix.
        counts = {getattr(block.attn, "num_prefix_tokens", model.num_prefix_tokens) for block in model.blocks}
        if counts != {model.num_prefix_tokens}:
            raise ConfigError(f"this Eva's attention counts {sorted(counts)} prefix tokens, the model "
                              f"{model.num_prefix_tokens}; token prompts cannot place their rotary rows")
        return []
