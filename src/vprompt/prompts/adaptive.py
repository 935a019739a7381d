"""VAPT (Le et al. 2025): prompts that are functions of the input, on any transformer family with
one patch grid (ViT, EVA, BEiT; not Swin, whose stages merge patches).

Re-implemented from the specification (METHODS.md §4), not from the official code. Block 0 gets
VPT-style static prompts. Every later block ``l`` gets ``p`` prompts generated from what enters
it: the previous block's patch tokens (prompt and prefix tokens dropped), layer-normalised and
laid out on the backbone's own patch grid, go through

1. a channel-wise K×K convolution (one kernel per layer, shared by all d channels) + Dropout2d,
2. a per-layer token-wise projector from the conv's grid positions to p prompts (zero-init, so
   adaptive prompts start at exactly 0 and the model starts as VPT-shallow with frozen prompts
   beyond block 0),
3. a feature projector ``G + W2·drop(relu(W1·G))`` (width r, no bias), shared by all layers.

Every design choice is an option, for ablations.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vprompt.errors import ConfigError
from vprompt.validation import at_least, below
from vprompt.methods import LinearHeadConfig, Method, MethodConfig, register_method
from vprompt.families import TokenLayout, token_family
from vprompt.prompts.tokens import TokenPrompt, vpt_init_bound


@dataclass
class VAPTConfig(LinearHeadConfig):
    """Options of ``vapt``; each design choice of the paper is one, for ablations."""

    prompt_len: Annotated[int, at_least(1)] = 10
    """Prompts per block, static at block 0 and generated at later blocks."""
    prompt_dropout: Annotated[float, at_least(0), below(1)] = 0.0
    """Dropout on the static block-0 prompts only."""
    kernel: Annotated[int, at_least(1)] = 2
    """Side K of the channel-wise convolution (no padding: (Hp-K+1)×(Wp-K+1) positions)."""
    conv: bool = True
    """Off: the token projector reads the patch grid directly."""
    conv_dropout: Annotated[float, at_least(0), below(1)] = 0.1
    """Dropout2d after the convolution."""
    projector_width: Annotated[int, at_least(1)] = 8
    """Width r of the feature projector."""
    projector_dropout: Annotated[float, at_least(0), below(1)] = 0.1
    """Dropout inside the feature projector."""
    projector: Literal["shared", "per-layer", "none"] = "shared"
    """One feature projector for all layers (the paper), one per layer, or none."""
    residual: bool = True
    """P = G + projector(G) (on) or P = projector(G) (off)."""


class FeatureProjector(nn.Module):
    """``W2·drop(relu(W1·G))``: a bias-free bottleneck MLP on each prompt token."""

    def __init__(self, dim: int, width: int, dropout: float) -> None:
        super().__init__()
        self.down = nn.Linear(dim, width, bias=False)
        self.up = nn.Linear(width, dim, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.up(self.dropout(F.relu(self.down(tokens))))


class PromptGenerator(nn.Module):
    """One block's path from its incoming patch tokens to its p adaptive prompts (before projection).

    conv → channel dropout → token projector is linear in the patch grid, so it is computed as one
    (Hp·Wp → p) map: the projector's weight pulled back through the convolution (its adjoint,
    a transposed convolution over p tiny images). Same function and parameters as running the
    convolution on every one of the B·d channels, at the cost of a single small matrix product.
    """

    def __init__(self, dim: int, grid: tuple[int, int], config: VAPTConfig) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(dim)
        if config.conv:
            self.conv = nn.Conv2d(1, 1, config.kernel, bias=False)  # one kernel shared by all channels
            self.conv_grid = (grid[0] - config.kernel + 1, grid[1] - config.kernel + 1)
        else:
            self.conv = None
            self.conv_grid = grid
        self.channel_dropout = config.conv_dropout
        self.to_prompts = nn.Linear(self.conv_grid[0] * self.conv_grid[1], config.prompt_len)
        nn.init.zeros_(self.to_prompts.weight)
        nn.init.zeros_(self.to_prompts.bias)

    def grid_map(self) -> torch.Tensor:
        """The (p, Hp·Wp) matrix of conv followed by the token projector."""
        weight = self.to_prompts.weight
        if self.conv is None:
            return weight
        maps = F.conv_transpose2d(weight.view(-1, 1, *self.conv_grid), self.conv.weight)
        return maps.flatten(1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, Hp·Wp, d) patch tokens → (B, p, d) prompts."""
        prompts = self.grid_map() @ self.norm(patches)  # (p, N) @ (B, N, d)
        if self.training and self.channel_dropout > 0:  # Dropout2d after the conv: whole channels per image
            prompts = prompts * F.dropout(prompts.new_ones(len(prompts), 1, prompts.shape[-1]), self.channel_dropout)
        return prompts + self.to_prompts.bias.unsqueeze(-1)


class VAPTPrompt(TokenPrompt):
    """Static prompts at block 0, input-generated prompts at blocks 1..L-1.

    Args:
        layout: The backbone's token geometry; it needs one patch grid for every block.
        config: The VAPT options.
    """

    static: nn.Parameter
    """Block 0's prompts, (p, d)."""
    static_dropout: nn.Dropout
    """Dropout on the static prompts."""
    generators: nn.ModuleList
    """One prompt generator per block after block 0."""
    projectors: nn.ModuleList
    """The feature projectors: one shared, one per generated block, or none."""
    residual: bool
    """Generated prompts plus their projection (True), or the projection alone."""
    num_patches: int
    """Patch tokens the generators expect: VAPT is built for one input size."""

    def __init__(self, layout: TokenLayout, config: VAPTConfig) -> None:
        super().__init__(config.prompt_len, layout)
        grid, self.embed_dim = layout.patch_grid, layout.block_dims[0]
        if config.conv and min(grid) < config.kernel:
            raise ConfigError(f"VAPT kernel {config.kernel} is larger than the {grid[0]}×{grid[1]} patch grid")
        self.num_patches = grid[0] * grid[1]
        self.residual = config.residual
        bound = vpt_init_bound(layout.patch_size, self.embed_dim)
        self.static = nn.Parameter(torch.empty(self.num_tokens, self.embed_dim).uniform_(-bound, bound))
        self.static_dropout = nn.Dropout(config.prompt_dropout)
        self.generators = nn.ModuleList(PromptGenerator(self.embed_dim, grid, config) for _ in range(self.depth - 1))
        layers = {"shared": 1, "per-layer": self.depth - 1, "none": 0}[config.projector]
        self.projectors = nn.ModuleList(
            FeatureProjector(self.embed_dim, config.projector_width, config.projector_dropout) for _ in range(layers)
        )

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        """The static block-0 prompts for every sample, shape (B, p, d)."""
        return self.static_dropout(self.static).expand(batch_size, -1, -1)

    def block_prompts(self, index: int, patches: torch.Tensor) -> torch.Tensor:
        """Prompts (B, p, d) generated from the patch tokens entering block ``index``."""
        if patches.shape[1] != self.num_patches:
            raise ConfigError(f"VAPT was built for a {self.layout.patch_grid[0]}×{self.layout.patch_grid[1]} patch "
                              f"grid, and {patches.shape[1]} patch tokens arrived: feed images at the model's input size")
        generated = self.generators[index - 1](patches)
        if not self.projectors:
            return generated
        projector = self.projectors[0] if len(self.projectors) == 1 else self.projectors[index - 1]
        projected = projector(generated)
        return generated + projected if self.residual else projected


def _build(config: MethodConfig, backbone: nn.Module) -> VAPTPrompt:
    family = token_family(backbone, "vapt")
    if family.vapt:
        raise ConfigError(f"method 'vapt' does not run on {family.name}: {family.vapt}")
    assert isinstance(config, VAPTConfig)
    return VAPTPrompt(family.layout(backbone), config)


register_method(Method("vapt", VAPTConfig, _build,
                       summary="VAPT: static prompts at block 0, input-generated prompts at later blocks"))
