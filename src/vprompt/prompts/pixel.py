"""Input-space visual prompts (VP): one learned pixel pattern shared by every image of a task.

The prompt acts on images in [0, 1] before the model normalises them, and the frozen source
classifier's own logits are re-used through a label mapping (``vprompt.heads``), as in Bahng
et al. 2022 and ILM-VP (Chen et al. 2023). Four templates (docs/methods/pixel-vp.md):

* ``expansive``: the target image is resized to ``image_size`` and placed in the centre of the
  source-size canvas; the prompt fills the rest;
* ``pad``: the target image is resized to the full canvas and the prompt replaces a border of
  ``pad_width`` pixels. Bahng adds an unbounded pattern to that border instead; replacing it keeps
  every canvas in [0, 1] like the expansive template;
* ``patch``: the prompt replaces a fixed ``patch_size`` square in the top-left corner;
* ``full``: the prompt is added to every pixel, as 2·sigmoid(θ) − 1 ∈ [−1, 1] (0 at init).

Except for ``full``, the canvas is ``image ⊙ (1 − mask) + sigmoid(θ) ⊙ mask`` with θ initialised at 0; θ
holds only the prompt pixels, so its size is the papers' parameter count (Bahng's pad prompt at
224 with width 30: 3 × (224² − 164²) = 69,840).

**Prompt Boundary Loosening** (PBL, docs/methods/pixel-vp.md) is a *reconstruction*: the paper's equations are
not available. A robust source is insensitive to small input changes, and the prompt is one, so
PBL loosens one boundary of the prompt by a strength λ ≥ 0 (λ = 0 is plain VP, bit for bit):

* ``value``: prompt = (1 + 2λ)·sigmoid(θ) − λ, so prompt pixels range over [−λ, 1 + λ] (no clip);
* ``spatial``: the prompt also acts on the image's own pixels, additively, as λ·tanh(φ) with φ = 0
  at init (3 more parameters per pixel of the image window; not for ``full``, which covers them);
* ``output``: many-to-one label mapping, k = 1 + round(λ·(⌊S/N⌋ − 1)) source classes per target
  class (S source, N target classes; λ = 1 spends the whole source head), logits averaged.

The adversary perturbs the target image before any of this, so loosening the prompt never widens
the threat model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vprompt.errors import ConfigError
from vprompt.validation import at_least
from vprompt.heads import LabelMapping, update_label_mapping
from vprompt.methods import Method, MethodConfig, register_method

Template = Literal["expansive", "pad", "patch", "full"]
MappingRule = Literal["flm", "ilm", "rlm", "first-n", "linear"]
BAHNG_PAD_FRACTION = 30 / 224  # Bahng et al.'s pad width (and fixed patch side) at 224 pixels


@dataclass
class VPConfig(MethodConfig):
    """Options of ``vp``: the prompt template, the label mapping and PBL's loosening."""

    template: Template = "expansive"
    """Where the prompt goes: around the image, its border, a corner patch, or added everywhere."""
    image_size: Annotated[int, at_least(0)] = 0
    """expansive: side of the target image in the canvas (0: half the canvas, as 32 in 64)."""
    pad_width: Annotated[int, at_least(0)] = 0
    """pad: border width in canvas pixels (0: Bahng's 30/224 of the canvas)."""
    patch_size: Annotated[int, at_least(0)] = 0
    """patch: side of the corner square in canvas pixels (0: Bahng's 30/224 of the canvas)."""
    mapping: MappingRule = "flm"
    """How target classes pick source classes, or a linear head on the source logits; see ``vprompt.heads``."""
    mapping_k: Annotated[int, at_least(1)] = 1
    """Source classes per target class (many-to-one when > 1)."""
    mapping_reduce: Literal["mean", "max"] = "mean"
    """How a many-to-one mapping combines a target class's source logits."""
    remap_every: Annotated[int, at_least(1)] = 1
    """ILM: recompute the mapping every this many epochs."""
    pbl: Literal["value", "spatial", "output"] = "output"
    """Which prompt boundary PBL loosens (a reconstruction; see the module docstring). The default is the
    one that raised clean accuracy on the robust zoo CNN without lowering robust accuracy
    (docs/results/pbl)."""
    pbl_strength: Annotated[float, at_least(0)] = 0.0
    """PBL's λ; 0 is plain VP."""

    def __post_init__(self) -> None:
        """Also refuse PBL settings that contradict the template or the mapping."""
        super().__post_init__()
        if self.loosens("spatial") and self.template == "full":
            raise ConfigError("PBL's spatial boundary lets the prompt into the image; the full template already is")
        if self.loosens("output") and (self.mapping_k != 1 or self.mapping == "linear"):
            raise ConfigError("PBL's output boundary sets mapping_k itself (leave it at 1) and needs a mapping "
                              "rule, not the linear head")
        LabelMapping(self.mapping, self.mapping_k, self.mapping_reduce, self.remap_every)  # checks the mapping

    def loosens(self, boundary: str) -> bool:
        """Whether PBL loosens ``boundary`` (``value``, ``spatial`` or ``output``) at all."""
        return self.pbl == boundary and self.pbl_strength > 0

    def label_mapping(self, num_source: int, num_classes: int) -> LabelMapping:
        """The mapping the head uses; PBL's output boundary widens it to k source classes per class."""
        k = self.mapping_k
        if self.loosens("output"):
            k = 1 + round(min(self.pbl_strength, 1.0) * max(num_source // num_classes - 1, 0))
        return LabelMapping(self.mapping, k, self.mapping_reduce, self.remap_every)


class PixelPrompt(nn.Module):
    """The prompt pattern θ, the mask of canvas pixels it owns, and the window the image fills.

    Args:
        config: The template, its size and PBL's value and spatial boundaries.
        canvas: (height, width) of the backbone's input, which the prompted image fills.
    """

    image_size: tuple[int, int]
    """The size images are resized to before they are placed on the canvas."""
    window: tuple[slice, slice]
    """The rows and columns of the canvas the image fills."""
    theta: nn.Parameter
    """θ: one value per prompt pixel and channel, (1, 3, prompt pixels); 0 at init."""
    value_slack: float
    """PBL's λ on the value boundary (0: off)."""
    window_strength: float
    """PBL's λ on the spatial boundary (0: off)."""
    phi: nn.Parameter
    """φ: the additive prompt on the image's own pixels, (1, 3, h, w); only with PBL's spatial boundary."""

    def __init__(self, config: VPConfig, canvas: tuple[int, int]) -> None:
        super().__init__()
        height, width = canvas
        self.canvas, self.additive = (height, width), config.template == "full"
        self.image_size, self.window = (height, width), (slice(0, height), slice(0, width))
        mask = torch.ones(1, 1, height, width)
        default_border = max(1, round(BAHNG_PAD_FRACTION * min(height, width)))
        if config.template == "expansive":
            side = config.image_size or min(height, width) // 2
            if not 0 < side < min(height, width):
                raise ConfigError(f"expansive image_size {side} leaves no prompt in a {height}x{width} canvas")
            self.image_size = (side, side)
            top, left = (height - side) // 2, (width - side) // 2
            self.window = (slice(top, top + side), slice(left, left + side))
            mask[:, :, self.window[0], self.window[1]] = 0
        elif config.template == "pad":
            border = config.pad_width or default_border
            if not 0 < 2 * border < min(height, width):
                raise ConfigError(f"pad_width {border} leaves no image in a {height}x{width} canvas")
            self.window = (slice(border, height - border), slice(border, width - border))
            mask[:, :, self.window[0], self.window[1]] = 0
        elif config.template == "patch":
            side = config.patch_size or default_border
            if not 0 < side < min(height, width):
                raise ConfigError(f"patch_size {side} does not fit a {height}x{width} canvas with room for the image")
            mask.zero_()
            mask[:, :, :side, :side] = 1
        self.register_buffer("mask", mask, persistent=False)  # derived from the config, never saved
        self.register_buffer("where", mask.flatten().nonzero().squeeze(1), persistent=False)
        self.theta = nn.Parameter(torch.zeros(1, 3, len(self.where)))  # one value per prompt pixel and channel
        self.value_slack = config.pbl_strength if config.loosens("value") else 0.0
        self.window_strength = config.pbl_strength if config.loosens("spatial") else 0.0
        if self.window_strength:
            window = (self.window[0].stop - self.window[0].start, self.window[1].stop - self.window[1].start)
            self.phi = nn.Parameter(torch.zeros(1, 3, *window))

    def pattern(self) -> torch.Tensor:
        """The prompt scattered onto the canvas, zero on the image window: (1, 3, H, W)."""
        values = torch.sigmoid(self.theta)
        if self.value_slack:
            values = (1 + 2 * self.value_slack) * values - self.value_slack
        flat = self.theta.new_zeros(1, 3, self.canvas[0] * self.canvas[1])
        flat = flat.index_copy(2, self.where, values)
        return flat.view(1, 3, *self.canvas)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, h, w) in [0, 1], resized to ``image_size`` if needed, on the prompted canvas."""
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bilinear", align_corners=False)
        if self.additive:
            return images + (2 * self.pattern() - 1)
        if self.image_size == self.canvas:
            placed = images * (1 - self.mask)
        else:
            placed = images.new_zeros(images.shape[0], 3, *self.canvas)
            placed[:, :, self.window[0], self.window[1]] = images
        canvas = placed + self.pattern()
        if self.window_strength:  # PBL's spatial boundary: the prompt reaches the image's own pixels
            inside = F.pad(self.window_strength * torch.tanh(self.phi),
                           (self.window[1].start, self.canvas[1] - self.window[1].stop,
                            self.window[0].start, self.canvas[0] - self.window[0].stop))
            canvas = canvas + inside * (1 - self.mask)
        return canvas

    def num_prompt_pixels(self) -> int:
        """Canvas pixels the prompt owns (θ has three values per pixel)."""
        return len(self.where)


register_method(Method(
    "vp", VPConfig, build_input_prompt=PixelPrompt,
    head="label-map", epoch_start=update_label_mapping,
    summary="input-space visual prompt (expansive / pad / patch / full) with label mapping on the source head, "
            "optionally loosened by PBL",
))
