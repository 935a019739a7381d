"""VAPT (Le et al. 2025): prompts that are functions of the input, on any transformer family with
one patch grid (ViT, EVA, BEiT; not Swin, whose stages merge patches).

Re-implemented from the specification (docs/methods/vapt.md), not from the official code. Block 0 gets
VPT-style static prompts (blocks 0..``static_layers``−1 with ``static_layers`` > 1). Every later
block ``l`` gets ``p`` prompts generated from what enters it: the previous block's patch tokens
(prompt and prefix tokens dropped), layer-normalised and laid out on the backbone's own patch
grid, go through

1. a K×K convolution of each of the d channels (by default one kernel per layer, shared by all
   channels; ``channelwise=False``: one per channel) + Dropout2d,
2. a per-layer token-wise projector from the conv's grid positions to p prompts (zero-init, so
   adaptive prompts start at exactly 0 and the model starts as VPT-shallow with frozen prompts
   beyond block 0),
3. a feature projector ``G + s·W2·drop(act(W1·G))`` (width r, no bias, act = relu and s = 1 by
   default), shared by all layers.

Every design choice is an option, for ablations: the kernel's init (``conv_init``), sharing
(``channelwise``), size and padding; the convolution itself (``conv``) and its channel dropout;
how many blocks keep static prompts (``static_layers``); the feature projector's width,
activation, dropout, sharing, a learnable output scale (``learnable_scale``) and the residual.
``docs/results/vapt_differences.md`` lists how each compares with the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vprompt.errors import ConfigError
from vprompt.families import TokenLayout
from vprompt.methods import LinearHeadConfig, Method, register_method
from vprompt.prompts.tokens import TokenPrompt, vpt_init_bound
from vprompt.validation import at_least, below


@dataclass
class VAPTConfig(LinearHeadConfig):
    """Options of ``vapt``; each design choice of the paper is one, for ablations."""

    prompt_len: Annotated[int, at_least(1)] = 10
    """Prompts per block, static at the first `static_layers` blocks and generated at later blocks."""
    prompt_dropout: Annotated[float, at_least(0), below(1)] = 0.0
    """Dropout on the static prompts only."""
    static_layers: Annotated[int, at_least(1)] = 1
    """Blocks 0..static_layers-1 get free VPT-deep prompts; generated prompts start after them."""
    kernel: Annotated[int, at_least(1)] = 2
    """Side K of the convolution: (Hp+2·padding-K+1)×(Wp+2·padding-K+1) positions."""
    padding: Annotated[int, at_least(0)] = 0
    """Zero padding on every side of the patch grid before the convolution."""
    channelwise: bool = True
    """One K×K kernel per layer shared by all d channels (on), or one per channel (off: d·K² weights)."""
    conv_init: Literal["uniform", "normal"] = "uniform"
    """Kernel init: nn.Conv2d's default U(±1/K) (uniform), or N(0, 1) as the official code (normal)."""
    conv: bool = True
    """Off: the token projector reads the patch grid directly."""
    conv_dropout: Annotated[float, at_least(0), below(1)] = 0.1
    """Dropout2d after the convolution (none when conv is off)."""
    projector_width: Annotated[int, at_least(1)] = 8
    """Width r of the feature projector."""
    projector_dropout: Annotated[float, at_least(0), below(1)] = 0.1
    """Dropout inside the feature projector."""
    activation: Literal["relu", "gelu", "sigmoid", "softmax", "none"] = "relu"
    """Activation inside the feature projector; softmax runs over its r hidden units."""
    projector: Literal["shared", "per-layer", "none"] = "shared"
    """One feature projector for all layers (the paper), one per layer, or none."""
    learnable_scale: bool = False
    """A learnable scalar (init 1) multiplying the feature projector's output, before the residual."""
    residual: bool = True
    """P = G + projector(G) (on) or P = projector(G) (off)."""


_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,
    "sigmoid": torch.sigmoid,
    "softmax": lambda hidden: F.softmax(hidden, dim=-1),
    "none": lambda hidden: hidden,
}


class FeatureProjector(nn.Module):
    """``s·W2·drop(act(W1·G))``: a bias-free bottleneck MLP on each token; s = 1 unless learnable."""

    def __init__(self, dim: int, width: int, dropout: float, activation: str = "relu",
                 learnable_scale: bool = False) -> None:
        super().__init__()
        self.down = nn.Linear(dim, width, bias=False)
        self.up = nn.Linear(width, dim, bias=False)
        self.dropout = nn.Dropout(dropout)
        self.activation = _ACTIVATIONS[activation]
        self.scale = nn.Parameter(torch.ones(())) if learnable_scale else None

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        out = self.up(self.dropout(self.activation(self.down(tokens))))
        return out if self.scale is None else out * self.scale


class PromptGenerator(nn.Module):
    """One block's path from its incoming patch tokens to its p adaptive prompts (before projection).

    conv → channel dropout → token projector is linear in the patch grid, so it is computed as one
    (Hp·Wp → p) map: the projector's weight pulled back through the convolution (its adjoint,
    a transposed convolution over p tiny images, with the same padding). With per-channel kernels
    it is one such map per channel, (d, p, Hp·Wp). Same function and parameters as running the
    convolution on every one of the B·d channels, at the cost of a single small matrix product.
    """

    def __init__(self, dim: int, grid: tuple[int, int], config: VAPTConfig) -> None:
        super().__init__()
        self.grid = grid
        self.norm = nn.LayerNorm(dim)
        self.padding = config.padding
        if config.conv:
            # one kernel shared by all channels, or one per channel (depthwise); same default init bound
            channels = 1 if config.channelwise else dim
            self.conv = nn.Conv2d(channels, channels, config.kernel, padding=config.padding, groups=channels,
                                  bias=False)
            if config.conv_init == "normal":
                nn.init.normal_(self.conv.weight)
            self.conv_grid = tuple(side + 2 * config.padding - config.kernel + 1 for side in grid)
        else:
            self.conv = None
            self.conv_grid = grid
        self.channel_dropout = config.conv_dropout if config.conv else 0.0  # Dropout2d belongs to the conv
        self.to_prompts = nn.Linear(self.conv_grid[0] * self.conv_grid[1], config.prompt_len)
        nn.init.zeros_(self.to_prompts.weight)
        nn.init.zeros_(self.to_prompts.bias)

    def grid_map(self) -> torch.Tensor:
        """The (p, Hp·Wp) matrix of conv followed by the token projector; (d, p, Hp·Wp) with one kernel
        per channel."""
        weight = self.to_prompts.weight
        if self.conv is None:
            return weight
        channels = self.conv.weight.shape[0]
        images = weight.view(-1, 1, *self.conv_grid).expand(-1, channels, -1, -1)
        maps = F.conv_transpose2d(images, self.conv.weight, padding=self.padding, groups=channels)
        return maps.flatten(2).transpose(0, 1) if channels > 1 else maps.flatten(1)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, Hp·Wp, d) patch tokens → (B, p, d) prompts."""
        grid_map, tokens = self.grid_map(), self.norm(patches)
        if grid_map.dim() == 2:
            prompts = grid_map @ tokens  # (p, N) @ (B, N, d)
        else:
            prompts = torch.einsum("dpn,bnd->bpd", grid_map, tokens)
        if self.training and self.channel_dropout > 0:  # Dropout2d after the conv: whole channels per image
            prompts = prompts * F.dropout(prompts.new_ones(len(prompts), 1, prompts.shape[-1]), self.channel_dropout)
        return prompts + self.to_prompts.bias.unsqueeze(-1)


class VAPTPrompt(TokenPrompt):
    """Static prompts at blocks 0..S-1 (S = ``static_layers``, 1 by default), input-generated prompts
    at blocks S..L-1.

    Args:
        layout: The backbone's token geometry; it needs one patch grid for every block.
        config: The VAPT options.
    """

    static: nn.Parameter
    """Block 0's prompts, (p, d)."""
    static_deep: nn.Parameter | None
    """The static prompts of blocks 1..S-1, (S-1, p, d), when ``static_layers`` > 1; else None."""
    static_dropout: nn.Dropout
    """Dropout on the static prompts."""
    static_layers: int
    """Blocks with static prompts (S); generated prompts start at block S."""
    generators: nn.ModuleList
    """One prompt generator per block from block S on."""
    projectors: nn.ModuleList
    """The feature projectors: one shared, one per generated block, or none."""
    residual: bool
    """Generated prompts plus their projection (True), or the projection alone."""
    num_patches: int
    """Patch tokens the generators expect: VAPT is built for one input size."""

    def __init__(self, layout: TokenLayout, config: VAPTConfig) -> None:
        super().__init__(config.prompt_len, layout)
        grid, self.embed_dim = layout.patch_grid, layout.block_dims[0]
        if config.conv and min(grid) + 2 * config.padding < config.kernel:
            padded = f" padded by {config.padding}" if config.padding else ""
            raise ConfigError(f"VAPT kernel {config.kernel} is larger than the {grid[0]}×{grid[1]} patch grid{padded}")
        if config.static_layers >= self.depth:
            raise ConfigError(f"VAPT static_layers must be below the backbone's depth ({self.depth} blocks) so that "
                              f"some blocks get generated prompts, got {config.static_layers}")
        self.num_patches = grid[0] * grid[1]
        self.residual = config.residual
        self.static_layers = config.static_layers
        bound = vpt_init_bound(layout.patch_size, self.embed_dim)
        self.static = nn.Parameter(torch.empty(self.num_tokens, self.embed_dim).uniform_(-bound, bound))
        self.static_deep = None
        if self.static_layers > 1:  # a separate tensor, so that checkpoints of the default keep their layout
            self.static_deep = nn.Parameter(
                torch.empty(self.static_layers - 1, self.num_tokens, self.embed_dim).uniform_(-bound, bound)
            )
        self.static_dropout = nn.Dropout(config.prompt_dropout)
        generated = self.depth - self.static_layers
        self.generators = nn.ModuleList(PromptGenerator(self.embed_dim, grid, config) for _ in range(generated))
        layers = {"shared": 1, "per-layer": generated, "none": 0}[config.projector]
        self.projectors = nn.ModuleList(
            FeatureProjector(self.embed_dim, config.projector_width, config.projector_dropout, config.activation,
                             config.learnable_scale)
            for _ in range(layers)
        )

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        """The static block-0 prompts for every sample, shape (B, p, d)."""
        return self.static_dropout(self.static).expand(batch_size, -1, -1)

    def block_prompts(self, index: int, patches: torch.Tensor) -> torch.Tensor:
        """Prompts (B, p, d) for block ``index``: its static prompts before block S, else generated
        from the patch tokens entering it."""
        if index < self.static_layers:
            return self.static_dropout(self.static_deep[index - 1]).expand(patches.shape[0], -1, -1)
        if patches.shape[1] != self.num_patches:
            raise ConfigError(f"VAPT was built for a {self.layout.patch_grid[0]}×{self.layout.patch_grid[1]} patch "
                              f"grid, and {patches.shape[1]} patch tokens arrived: feed images at the model's input size")
        layer = index - self.static_layers
        generated = self.generators[layer](patches)
        if not self.projectors:
            return generated
        projector = self.projectors[0] if len(self.projectors) == 1 else self.projectors[layer]
        projected = projector(generated)
        return generated + projected if self.residual else projected

    def replaces(self, index: int) -> bool:
        """Every block after block 0 gets its own prompts."""
        return index >= 1


def build_vapt(config: VAPTConfig, layout: TokenLayout) -> VAPTPrompt:
    return VAPTPrompt(layout, config)


def layout_refusal(layout: TokenLayout) -> str | None:
    """VAPT's generators read one patch grid of one width in every block."""
    if layout.fixed_grid and layout.uniform_width:
        return None
    return ("VAPT generates prompts from one fixed patch grid and width, and this backbone's stages merge "
            "patches and widen (use vpt-shallow or vpt-deep on it)")


register_method(Method("vapt", VAPTConfig, build_vapt, layout_refusal=layout_refusal,
                       summary="VAPT: static prompts at block 0, input-generated prompts at later blocks"))
