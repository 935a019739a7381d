"""timm's ``Beit`` (BEiT, BEiT v2).

Its attention adds a relative position bias over ``[CLS, patches]``: a per-block table and/or
one shared by all blocks. With prompts after the CLS token, both are extended with zero rows and
columns for the prompts, so prompts attend and are attended without a position bias and the
bias between CLS and patch tokens is unchanged. The zero bias is vprompt's choice (no paper
prompts BEiT); it matches how VPT's Swin variant pads its bias.
"""

from __future__ import annotations

from torch import nn

from vprompt.families.base import Handle, MethodOverride, SequenceFamily, pad_bias


class BeitFamily(SequenceFamily):
    name = "Beit"
    module_path = "timm.models.beit"

    def attention_handles(self, model: nn.Module, num_tokens: int) -> list[Handle]:
        prefix = model.num_prefix_tokens
        handles: list[Handle] = []
        for block in model.blocks:
            attn = block.attn
            if attn.relative_position_bias_table is not None:
                table_bias = type(attn)._get_rel_pos_bias.__get__(attn)
                handles.append(MethodOverride(attn, "_get_rel_pos_bias",
                                              lambda table_bias=table_bias: pad_bias(table_bias(), prefix, num_tokens)))
        if model.rel_pos_bias is not None:
            handles.append(model.rel_pos_bias.register_forward_hook(
                lambda module, args, bias: pad_bias(bias, prefix, num_tokens)))
        return handles
