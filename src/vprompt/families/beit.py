"""timm's ``Beit`` (BEiT, BEiT v2).

Its attention adds a relative position bias over ``[CLS, patches]``: a per-block table and/or
one shared by all blocks. With prompts after the CLS token, both are extended with zero rows and
columns for the prompts, so prompts attend and are attended without a position bias and the
bias between CLS and patch tokens is unchanged. The zero bias is vprompt's choice (no paper
prompts BEiT); it matches how VPT's Swin variant pads its bias.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from vprompt.families.base import Handle, MethodOverride, SequenceFamily, pad_bias


class BeitFamily(SequenceFamily):
    name = "Beit"
    module_path = "timm.models.beit"

    def pooled_rows(self, model: nn.Module) -> int | None:
        """The class token unless the pooling averages (or is off)."""
        from timm.models.beit import Beit

        return 1 if type(model) is Beit and model.global_pool not in ("", "avg") else None

    def attention_handles(self, model: nn.Module, num_tokens: int) -> list[Handle]:
        prefix = model.num_prefix_tokens
        handles: list[Handle] = []
        for block in model.blocks:
            attn = block.attn
            if attn.relative_position_bias_table is not None:
                padded = partial(padded_table_bias, attn, prefix, num_tokens)
                handles.append(MethodOverride(attn, "_get_rel_pos_bias", padded))
        if model.rel_pos_bias is not None:
            handles.append(model.rel_pos_bias.register_forward_hook(partial(padded_shared_bias, prefix, num_tokens)))
        return handles


def padded_table_bias(attn: nn.Module, prefix: int, count: int) -> torch.Tensor:
    """A block's own relative position bias (timm's method on its class) with zero rows and
    columns for the prompts."""
    return pad_bias(type(attn)._get_rel_pos_bias(attn), prefix, count)


def padded_shared_bias(prefix: int, count: int, module: nn.Module, args: tuple, bias: torch.Tensor) -> torch.Tensor:
    """The bias shared by all blocks, padded the same way."""
    return pad_bias(bias, prefix, count)
