"""Token prompts: the shared base of every prompt that lives in a transformer's tokens, and VPT.

A [`TokenPrompt`][vprompt.prompts.TokenPrompt] only says which prompt tokens enter block 0 and which
replace those entering a later block ([`PromptSource`][vprompt.families.PromptSource]). Where they
go, and what the backbone's attention needs for them, is the job of the backbone family's adapter
([`vprompt.families`][vprompt.families]): in every family the prompts carry no position embedding and timm's
own pooling never sees them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from functools import partial
from dataclasses import dataclass
from itertools import groupby
from typing import Annotated, Iterator

import torch
from torch import nn

from vprompt.errors import ConfigError
from vprompt.validation import at_least, below
from vprompt.families import TokenLayout, token_family
from vprompt.families.base import Handle
from vprompt.families.lean import Lean
from vprompt.methods import LinearHeadConfig, Method, register_method


class AttachedPrompt(nn.Module):
    """A prompt that lives inside the backbone through its family adapter's handles, which
    ``detach`` removes, so the backbone computes exactly what it did before."""

    def __init__(self) -> None:
        super().__init__()
        self._handles: list[Handle] = []

    def family_handles(self, backbone: nn.Module, lean: Lean | None) -> list[Handle]:
        """Change the backbone through its family adapter, returning the handles that undo it."""
        raise NotImplementedError

    def attach(self, backbone: nn.Module, lean: Lean | None = None) -> None:
        """Make the backbone carry this prompt (with the lean forward when ``lean`` is given);
        call once, the PromptedModel does."""
        if self._handles:
            raise RuntimeError("prompt is already attached to a backbone")
        self._handles = self.family_handles(backbone, lean)

    def detach(self) -> None:
        """Take the prompt out again."""
        for handle in reversed(self._handles):
            handle.remove()
        self._handles = []


class TokenPrompt(AttachedPrompt):
    """Base class of prompts that live in a transformer's token sequence.

    Subclasses implement [`initial_prompts`][vprompt.prompts.TokenPrompt.initial_prompts] (layer 0)
    and may override [`block_prompts`][vprompt.prompts.TokenPrompt.block_prompts] to replace the
    prompt tokens entering later blocks; the family adapter does the rest, so one prompt runs on
    every supported backbone.

    Args:
        num_tokens: Prompt tokens per layer (``p``).
        layout: The backbone's token geometry, from its family's adapter.
    """

    num_tokens: int
    """Prompt tokens per layer (``p``)."""
    layout: TokenLayout
    """The backbone's token geometry."""

    def __init__(self, num_tokens: int, layout: TokenLayout) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ConfigError(f"prompt length must be at least 1, got {num_tokens}")
        self.num_tokens = num_tokens
        self.layout = layout

    @property
    def depth(self) -> int:
        """Blocks of the backbone."""
        return self.layout.depth

    @property
    def num_prefix_tokens(self) -> int:
        """CLS, register and distillation tokens the prompts follow."""
        return self.layout.num_prefix_tokens

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        """Prompt tokens inserted before block 0, shape (B, p, d)."""
        raise NotImplementedError

    def block_prompts(self, index: int, patches: torch.Tensor) -> torch.Tensor | None:
        """Replacement prompt tokens for block ``index`` >= 1 given the (B, N, d) patch tokens
        entering it, or None to keep the previous block's prompt outputs."""
        return None

    def replaces(self, index: int) -> bool:
        """Whether ``block_prompts(index, ...)`` always returns prompts (the lean forward then
        never computes block ``index - 1``'s prompt outputs)."""
        return False

    def family_handles(self, backbone: nn.Module, lean: Lean | None) -> list[Handle]:
        """The prompt tokens enter and leave the backbone's sequence."""
        return token_family(backbone, "token prompts").attach(backbone, self, lean)


def vpt_init_bound(patch_size: tuple[int, int], embed_dim: int) -> float:
    """VPT's uniform init bound: sqrt(6 / (3·patch_h·patch_w + d)) (a xavier bound for the patch projection)."""
    return math.sqrt(6.0 / (3 * patch_size[0] * patch_size[1] + embed_dim))


@dataclass
class VPTConfig(LinearHeadConfig):
    """Options of ``vpt-shallow`` and ``vpt-deep``."""

    prompt_len: Annotated[int, at_least(1)] = 10
    """Prompt tokens per layer."""
    prompt_dropout: Annotated[float, at_least(0), below(1)] = 0.0
    """Dropout on the prompt tokens while training."""


class VPTPrompt(TokenPrompt):
    """VPT (Jia et al. 2022): free prompt tokens at layer 0 (shallow) or at every block (deep).

    Deep: block i gets its own P_i; the prompt outputs of block i-1 are dropped and replaced. On a
    backbone whose width changes by stage (Swin), each stage's prompts have that stage's width,
    held as one tensor per stage (``stage_prompts``); otherwise all layers are one (layers, p, d)
    tensor, ``prompts``. Every layer draws from VPT's bound for block 0's width, as VPT's Swin does.

    Args:
        layout: The backbone's token geometry.
        config: Prompt length and dropout.
        deep: One prompt per block (VPT-deep) instead of block 0 only (VPT-shallow).
    """

    prompts: nn.Parameter | None
    """Every layer's prompt, (layers, p, d), when all layers have one width; else None."""
    stage_prompts: nn.ParameterList | None
    """One (layers, p, d_stage) tensor per stage when the width changes by stage; else None."""
    num_layers: int
    """Layers that get their own prompt: 1 (shallow) or every block (deep)."""
    dropout: nn.Dropout
    """Dropout on the shared prompts (per-sample prompts skip it)."""
    shared_tensor_name = "prompts"
    """Multi-source transfer's shared tensor ([`SharedPrompt`][vprompt.prompts.SharedPrompt]): ``prompts``."""

    def __init__(self, layout: TokenLayout, config: VPTConfig, deep: bool) -> None:
        super().__init__(config.prompt_len, layout)
        dims = layout.block_dims if deep else layout.block_dims[:1]
        self.num_layers = len(dims)
        bound = vpt_init_bound(layout.patch_size, dims[0])
        self.prompts = self.stage_prompts = None
        self._rows: list[tuple[int, int]] = []
        if len(set(dims)) == 1:
            self.prompts = nn.Parameter(torch.empty(len(dims), self.num_tokens, dims[0]))
            nn.init.uniform_(self.prompts, -bound, bound)
        else:
            stages = [(width, len(list(run))) for width, run in groupby(dims)]
            self.stage_prompts = nn.ParameterList(
                nn.Parameter(torch.empty(count, self.num_tokens, width).uniform_(-bound, bound)) for width, count in stages
            )
            self._rows = [(stage, row) for stage, (_, count) in enumerate(stages) for row in range(count)]
        self.dropout = nn.Dropout(config.prompt_dropout)
        self._per_sample: torch.Tensor | None = None

    def shared_prompts(self) -> torch.Tensor | None:
        """The (layers, p, d) parameter every sample shares, or None on a backbone whose widths change by stage."""
        return self.prompts

    @contextmanager
    def per_sample(self, prompts: torch.Tensor) -> Iterator[None]:
        """Inside the block, sample i is prompted with ``prompts[i]`` (B, layers, p, d) instead of
        the shared parameter. Given a leaf tensor, one backward pass yields every sample's own prompt
        gradient (what multi-source transfer needs); the batch must have B samples."""
        if self.prompts is None:
            raise ConfigError("per-sample prompts need one token width in every layer; this backbone's "
                              "stages have different widths")
        if tuple(prompts.shape[1:]) != tuple(self.prompts.shape):
            raise ConfigError(f"per-sample prompts of shape {tuple(prompts.shape[1:])} for a prompt of shape "
                              f"{tuple(self.prompts.shape)}")
        self._per_sample = prompts
        try:
            yield
        finally:
            self._per_sample = None

    def layer_prompt(self, index: int) -> torch.Tensor:
        """The (p, d) parameter of layer ``index``."""
        if self.prompts is not None:
            return self.prompts[index]
        stage, row = self._rows[index]
        return self.stage_prompts[stage][row]

    def _layer(self, index: int, batch_size: int) -> torch.Tensor:
        if self._per_sample is not None:
            return self._per_sample[:, index]
        return self.dropout(self.layer_prompt(index)).expand(batch_size, -1, -1)

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        """Layer 0's prompt for every sample, shape (B, p, d)."""
        return self._layer(0, batch_size)

    def block_prompts(self, index: int, patches: torch.Tensor) -> torch.Tensor | None:
        """Deep: block ``index``'s own prompt; shallow: None, the prompt outputs go on."""
        if index >= self.num_layers:
            return None
        return self._layer(index, patches.shape[0])

    def replaces(self, index: int) -> bool:
        """Deep: every block's prompts are replaced."""
        return 1 <= index < self.num_layers


def build_vpt(config: VPTConfig, layout: TokenLayout, deep: bool) -> VPTPrompt:
    return VPTPrompt(layout, config, deep=deep)


register_method(
    Method("vpt-shallow", VPTConfig, partial(build_vpt, deep=False),
           summary="VPT-shallow: p prompt tokens at the input of block 0")
)
register_method(
    Method("vpt-deep", VPTConfig, partial(build_vpt, deep=True),
           summary="VPT-deep: p prompt tokens per block, replaced at every block")
)
