"""Token prompts for timm VisionTransformers: the shared injection machinery and VPT.

Prompts enter a timm ``VisionTransformer`` through forward hooks on its public stages, never a
forked ViT:

* after ``norm_pre`` (patch embedding + position embedding done), ``p`` prompt tokens are
  inserted right after the prefix tokens (CLS and any register tokens), so they carry no
  position embedding: ``[prefix, P, patches]``;
* before each block ``i >= 1``, a subclass may replace the prompt slice (VPT-deep, VAPT);
* before the final ``norm`` the prompt tokens are removed again, so timm's own pooling
  (cls token, average, attention pool) never sees them.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from vprompt.backbones import is_vision_transformer
from vprompt.errors import ConfigError
from vprompt.methods import LinearHeadConfig, Method, MethodConfig, register_method


class TokenPrompt(nn.Module):
    """Base class of prompts that live in a ViT's token sequence.

    Subclasses implement :meth:`initial_prompts` (layer 0) and may override
    :meth:`block_prompts` to replace the prompt tokens entering later blocks.
    """

    def __init__(self, num_tokens: int, embed_dim: int, depth: int, num_prefix_tokens: int) -> None:
        super().__init__()
        if num_tokens < 1:
            raise ConfigError(f"prompt length must be at least 1, got {num_tokens}")
        self.num_tokens = num_tokens
        self.embed_dim = embed_dim
        self.depth = depth
        self.num_prefix_tokens = num_prefix_tokens
        self._handles: list[RemovableHandle] = []

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        """Prompt tokens inserted before block 0, shape (B, p, d)."""
        raise NotImplementedError

    def block_prompts(self, index: int, hidden: torch.Tensor) -> torch.Tensor | None:
        """Replacement prompt tokens for block ``index`` >= 1, or None to keep the previous output."""
        return None

    @property
    def prompt_slice(self) -> slice:
        return slice(self.num_prefix_tokens, self.num_prefix_tokens + self.num_tokens)

    def attach(self, vit: nn.Module) -> None:
        """Register the injection hooks on ``vit``; call once, the PromptedModel does."""
        if self._handles:
            raise RuntimeError("prompt is already attached to a backbone")
        self._handles.append(vit.norm_pre.register_forward_hook(self._insert))
        for index, block in enumerate(vit.blocks):
            if index > 0:
                self._handles.append(block.register_forward_pre_hook(self._replace_hook(index)))
        self._handles.append(vit.norm.register_forward_pre_hook(self._remove))

    def _insert(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        prompts = self.initial_prompts(output.shape[0]).to(output.dtype)
        prefix = self.num_prefix_tokens
        return torch.cat([output[:, :prefix], prompts, output[:, prefix:]], dim=1)

    def _replace_hook(self, index: int):
        def replace(module: nn.Module, inputs: tuple) -> tuple:
            hidden = inputs[0]
            prompts = self.block_prompts(index, hidden)
            if prompts is None:
                return inputs
            prefix, end = self.num_prefix_tokens, self.num_prefix_tokens + self.num_tokens
            hidden = torch.cat([hidden[:, :prefix], prompts.to(hidden.dtype), hidden[:, end:]], 1)
            return (hidden, *inputs[1:])

        return replace

    def _remove(self, module: nn.Module, inputs: tuple) -> tuple:
        hidden = inputs[0]
        prefix, end = self.num_prefix_tokens, self.num_prefix_tokens + self.num_tokens
        return (torch.cat([hidden[:, :prefix], hidden[:, end:]], dim=1), *inputs[1:])


def vpt_init_bound(patch_size: tuple[int, int], embed_dim: int) -> float:
    """VPT's uniform init bound: sqrt(6 / (3·patch_h·patch_w + d)) (a xavier bound for the patch projection)."""
    return math.sqrt(6.0 / (3 * patch_size[0] * patch_size[1] + embed_dim))


@dataclass
class VPTConfig(LinearHeadConfig):
    prompt_len: int = 10
    prompt_dropout: float = 0.0


class VPTPrompt(TokenPrompt):
    """VPT (Jia et al. 2022): free prompt tokens at layer 0 (shallow) or at every block (deep).

    Deep: block i gets its own P_i; the prompt outputs of block i-1 are dropped and replaced.
    """

    def __init__(self, vit: nn.Module, config: VPTConfig, deep: bool) -> None:
        super().__init__(config.prompt_len, vit.embed_dim, len(vit.blocks), vit.num_prefix_tokens)
        layers = self.depth if deep else 1
        bound = vpt_init_bound(tuple(vit.patch_embed.patch_size), self.embed_dim)
        self.prompts = nn.Parameter(torch.empty(layers, self.num_tokens, self.embed_dim))
        nn.init.uniform_(self.prompts, -bound, bound)
        self.dropout = nn.Dropout(config.prompt_dropout)
        self._per_sample: torch.Tensor | None = None

    @contextmanager
    def per_sample(self, prompts: torch.Tensor) -> Iterator[None]:
        """Inside the block, sample i is prompted with ``prompts[i]`` (B, layers, p, d) instead of
        the shared parameter. Given a leaf tensor, one backward pass yields every sample's own prompt
        gradient (what multi-source transfer needs); the batch must have B samples."""
        if tuple(prompts.shape[1:]) != tuple(self.prompts.shape):
            raise ConfigError(f"per-sample prompts of shape {tuple(prompts.shape[1:])} for a prompt of shape "
                              f"{tuple(self.prompts.shape)}")
        self._per_sample = prompts
        try:
            yield
        finally:
            self._per_sample = None

    def _layer(self, index: int, batch_size: int) -> torch.Tensor:
        if self._per_sample is not None:
            return self._per_sample[:, index]
        return self.dropout(self.prompts[index]).expand(batch_size, -1, -1)

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        return self._layer(0, batch_size)

    def block_prompts(self, index: int, hidden: torch.Tensor) -> torch.Tensor | None:
        if index >= self.prompts.shape[0]:
            return None
        return self._layer(index, hidden.shape[0])


def require_vit(method: str, backbone: nn.Module) -> None:
    if not is_vision_transformer(backbone):
        raise ConfigError(
            f"method '{method}' needs a timm VisionTransformer backbone, "
            f"not {type(backbone).__name__}"
        )


def _vpt_builder(deep: bool, name: str):
    def build(config: MethodConfig, backbone: nn.Module) -> VPTPrompt:
        require_vit(name, backbone)
        assert isinstance(config, VPTConfig)
        return VPTPrompt(backbone, config, deep=deep)

    return build


register_method(
    Method("vpt-shallow", VPTConfig, _vpt_builder(False, "vpt-shallow"),
           summary="VPT-shallow: p prompt tokens at the input of block 0")
)
register_method(
    Method("vpt-deep", VPTConfig, _vpt_builder(True, "vpt-deep"),
           summary="VPT-deep: p prompt tokens per block, replaced at every block")
)
