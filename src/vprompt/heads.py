"""Heads that turn backbone features into target-task logits."""

from __future__ import annotations

from torch import nn


def linear_head(feature_dim: int, num_classes: int) -> nn.Linear:
    """A plain linear classifier on pooled features (VPT's head)."""
    return nn.Linear(feature_dim, num_classes)
