"""A timm classifier's source head as timm reads it at eval, for methods that reuse it (label mapping).

Most models have one head on the pooled pre-logits. Distilled models have two, whose logits timm
averages at eval: DeiT's class-token head and distillation-token head read different tokens,
LeViT's both read the pooled features.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class MeanOfHeads(nn.Module):
    """Several heads read as one: the mean of their logits. With ``per_token``, head i reads the
    i-th of the equal slices of the features (the tokens laid side by side)."""

    def __init__(self, heads: tuple[nn.Module, ...], per_token: bool) -> None:
        super().__init__()
        self.heads = nn.ModuleList(heads)
        self.per_token = per_token

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        parts = features.chunk(len(self.heads), dim=1) if self.per_token else [features] * len(self.heads)
        logits = [head(part) for head, part in zip(self.heads, parts)]
        return sum(logits[1:], logits[0]) / len(logits)


@dataclass
class SourceClassifier:
    """A timm classifier's source head as one module, whatever timm's model keeps in it."""

    module: nn.Module
    """The head: timm's classifier, or the mean of a distilled model's two heads."""
    token_features: int | None = None
    """None: the head reads timm's pooled pre-logits; else it reads the first that many output
    tokens side by side (DeiT's class and distillation tokens)."""


def source_classifier(backbone: nn.Module) -> SourceClassifier:
    """``backbone``'s classifier as one module reading the features the PromptedModel gives it.

    Args:
        backbone: A timm classifier, before its classifier is reset.

    Returns:
        The head and which features it reads.
    """
    classifier = backbone.get_classifier()
    if not isinstance(classifier, tuple):
        return SourceClassifier(classifier)
    from timm.models.deit import VisionTransformerDistilled

    if isinstance(backbone, VisionTransformerDistilled):
        return SourceClassifier(MeanOfHeads(classifier, per_token=True), token_features=len(classifier))
    return SourceClassifier(MeanOfHeads(classifier, per_token=False))
