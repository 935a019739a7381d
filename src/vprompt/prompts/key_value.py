"""Key-value prompts: the prefix form E2VPT's prompts take inside attention (Han et al., ICCV 2023).

Each block's attention gets p learnable keys and p learnable values, appended after every token's
own keys and values (after the projections, so no query, key norm or rotary embedding touches
them): every token attends to them, and they add no row to the sequence, so the block's outputs
and the pooling are the backbone's own rows. A reimplementation of that part of E2VPT only, from
the paper: its token prompts are VPT-deep's (``vpt-deep``) and its pruning is not built.

The family adapter computes the attention from the block's own modules
([`block_output`][vprompt.families.lean.block_output]), so key-value prompts run where that
decomposition does: timm's ViT, Eva and BEiT blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch
from torch import nn

from vprompt.families import TokenLayout, token_family
from vprompt.families.base import Handle
from vprompt.families.lean import Lean
from vprompt.methods import LinearHeadConfig, Method, register_method
from vprompt.prompts.tokens import AttachedPrompt, vpt_init_bound
from vprompt.validation import at_least, below


@dataclass
class KeyValueConfig(LinearHeadConfig):
    """Options of ``kv-prompt``."""

    prompt_len: Annotated[int, at_least(1)] = 10
    """Keys (and as many values) per block's attention."""
    prompt_dropout: Annotated[float, at_least(0), below(1)] = 0.0
    """Dropout on the keys and values while training (E2VPT's prompt dropout)."""


class KeyValuePrompt(AttachedPrompt):
    """p keys and p values per block, (blocks, p, d) each, split into the attention's heads as
    its own keys are; drawn from VPT's uniform bound (vprompt's choice).

    Args:
        layout: The backbone's token geometry (one width, attention of that width).
        config: Keys per block and their dropout.
    """

    keys: nn.Parameter
    """Every block's keys, (blocks, p, d)."""
    values: nn.Parameter
    """Every block's values, (blocks, p, d)."""

    def __init__(self, layout: TokenLayout, config: KeyValueConfig) -> None:
        super().__init__()
        width = layout.block_dims[0]
        bound = vpt_init_bound(layout.patch_size, width)
        self.keys = nn.Parameter(torch.empty(layout.depth, config.prompt_len, width).uniform_(-bound, bound))
        self.values = nn.Parameter(torch.empty(layout.depth, config.prompt_len, width).uniform_(-bound, bound))
        self.dropout = nn.Dropout(config.prompt_dropout)

    @property
    def num_tokens(self) -> int:
        """Keys per block (``p``)."""
        return self.keys.shape[1]

    def key_values(self, index: int, batch_size: int, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``index``'s keys and values, each (B, heads, p, head_dim)."""
        def split(rows: torch.Tensor) -> torch.Tensor:
            count, width = rows.shape
            heads = self.dropout(rows).reshape(count, num_heads, width // num_heads).transpose(0, 1)
            return heads.expand(batch_size, -1, -1, -1)

        return split(self.keys[index]), split(self.values[index])

    def family_handles(self, backbone: nn.Module, lean: Lean | None) -> list[Handle]:
        """Every block's attention takes these keys and values."""
        return token_family(backbone, "kv-prompt").attach_key_values(backbone, self, lean)


def layout_refusal(layout: TokenLayout) -> str | None:
    """Key-value prompts join attention that vprompt computes from the block's own modules."""
    if layout.open_attention:
        return None
    return ("its keys and values join an attention computed from the block's own modules, which vprompt does for "
            "timm's ViT, Eva and BEiT blocks only (use vpt-deep on this backbone)")


register_method(Method("kv-prompt", KeyValueConfig, lambda config, layout: KeyValuePrompt(layout, config),
                       layout_refusal=layout_refusal,
                       summary="key-value prompts: p learned keys and values in every block's attention "
                               "(E2VPT's prefix form, Han et al. 2023; no pruning)"))
