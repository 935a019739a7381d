"""timm's ``SwinTransformer``, prompted as in VPT's Swin variant (Jia et al. 2022, appendix).

Swin's blocks pass a (B, H, W, C) grid that is shifted and cut into windows for attention, so
prompts cannot ride in the block's input. They travel beside it instead, as (B, p, C) tokens of
the stage's width, through the same modules a patch token goes through:

* attention: the block's ``norm1`` of the prompts is prepended to every window (shared by all
  windows of an image); the relative position bias and the shift mask get zero rows and columns
  for them; their outputs are averaged over the image's windows;
* the residual, ``norm2`` and MLP of the block, as for any token;
* patch merging: the prompt is concatenated with itself four times (its 2×2 "neighbours") and
  goes through the merge's norm and reduction, so it reaches the next stage at its width.

Deep prompting replaces the prompts entering every block, including each stage's first. The
patch tokens' shift, window partition and pooling are timm's own: prompts never enter the grid,
so they never reach pooling. Differences from the official code: prompts are not averaged into
the pooled features, and each window gets its own image's prompts (the official code expands
them window-major, which pairs windows with another image's prompts when B > 1 and the prompts
differ between images, i.e. after block 0 in shallow mode).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from vprompt.families.base import Handle, MethodOverride, PromptSource, TokenFamily, TokenLayout, pad_bias
from vprompt.families.lean import Lean


class SwinFamily(TokenFamily):
    name = "SwinTransformer"
    module_path = "timm.models.swin_transformer"
    tuner_targets = r"layers\.\d+\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(fc1|fc2))"
    tuner_feedforward = r"layers\.\d+\.blocks\.\d+\.mlp\.(fc1|fc2)"
    checkpointing = ("the prompts travel beside Swin's grid in state the hooks update block by block, which a "
                     "recomputed block would read at its end-of-forward value")

    def layout(self, model: nn.Module) -> TokenLayout:
        blocks = [block for stage in model.layers for block in stage.blocks]
        return TokenLayout(
            block_dims=tuple(int(block.dim) for block in blocks),
            num_prefix_tokens=0,
            patch_grid=tuple(model.patch_embed.grid_size),
            patch_size=tuple(model.patch_embed.patch_size),
            fixed_grid=False,
        )

    def attach(self, model: nn.Module, source: PromptSource | None, lean: Lean | None = None) -> list[Handle]:
        if source is None:
            return []
        stream = PromptStream(source)
        handles: list[Handle] = []
        blocks = [block for stage in model.layers for block in stage.blocks]
        for stage in model.layers:
            if hasattr(stage.downsample, "reduction"):  # PatchMerging (stage 0 has an Identity)
                handles.append(stage.downsample.register_forward_hook(stream.merge))
        for index, block in enumerate(blocks):
            handles += stream.hooks(block, index, last=index == len(blocks) - 1)
        return handles


class PromptStream:
    """The prompt tokens of one forward pass as they travel beside the patch grid. Its hooks are
    its own bound methods, so a deep copy of the model gets a stream of its own, on its own prompt."""

    def __init__(self, source: PromptSource) -> None:
        self.source = source
        self.count = source.num_tokens
        self.prompts: torch.Tensor | None = None
        self.attended: torch.Tensor | None = None
        self.batch = 0

    def hooks(self, block: nn.Module, index: int, last: bool) -> list[Handle]:
        attn = block.attn
        return [
            block.register_forward_pre_hook(partial(self.enter, index)),
            attn.register_forward_pre_hook(partial(self.into_windows, block), with_kwargs=True),
            MethodOverride(attn, "_get_rel_pos_bias", partial(self.window_bias, attn)),
            attn.register_forward_hook(self.out_of_windows),
            block.register_forward_hook(partial(self.finish_block, block, last)),
        ]

    def enter(self, index: int, module: nn.Module, args: tuple) -> None:
        grid = args[0]
        self.batch = grid.shape[0]
        if index == 0:
            self.prompts = self.source.initial_prompts(self.batch).to(grid.dtype)
            return
        replacement = self.source.block_prompts(index, grid.flatten(1, 2))
        if replacement is not None:
            self.prompts = replacement.to(grid.dtype)

    def into_windows(self, block: nn.Module, module: nn.Module, args: tuple,
                     kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        windows = args[0]  # (B·nW, window area, C), timm's window_partition order: image-major
        per_image = windows.shape[0] // self.batch
        prompts = block.norm1(self.prompts).repeat_interleave(per_image, dim=0)
        mask = kwargs.get("mask")
        if mask is not None:
            kwargs = {**kwargs, "mask": pad_bias(mask, 0, self.count)}
        return (torch.cat([prompts, windows], dim=1), *args[1:]), kwargs

    def window_bias(self, attn: nn.Module) -> torch.Tensor:
        """The window's relative position bias (timm's method on its class) with zero rows and
        columns for the prompts."""
        return pad_bias(type(attn)._get_rel_pos_bias(attn), 0, self.count)

    def out_of_windows(self, module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        prompts = output[:, :self.count]
        self.attended = prompts.reshape(self.batch, -1, *prompts.shape[1:]).mean(1)
        return output[:, self.count:]

    def finish_block(self, block: nn.Module, last: bool, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        """The rest of the block for the prompts: residual, norm2 and MLP (as timm's block does for
        the grid). After the last block the prompts are dropped: nothing reads them."""
        if last:
            self.prompts = self.attended = None
            return
        prompts = self.prompts + block.drop_path1(self.attended)
        self.prompts = prompts + block.drop_path2(block.mlp(block.norm2(prompts)))
        self.attended = None

    def merge(self, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        """Patch merging for the prompts: four copies of each through the merge's norm and reduction."""
        if self.prompts is not None:
            self.prompts = module.reduction(module.norm(self.prompts.repeat(1, 1, 4)))
