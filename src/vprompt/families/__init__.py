"""Backbone families: which timm (and Hugging Face transformers) models token prompts attach to, and how.

[`token_family`][vprompt.families.token_family] finds the adapter of a model; a model of no
supported family gets one line naming the supported ones. Adding a family is one adapter module
and one entry in [`FAMILIES`][vprompt.families.FAMILIES]; the prompt methods never change.
"""

from __future__ import annotations

from torch import nn

from vprompt.errors import ConfigError
from vprompt.families.base import PromptSource, TokenFamily, TokenLayout
from vprompt.families.beit import BeitFamily
from vprompt.families.classifiers import SourceClassifier, source_classifier
from vprompt.families.eva import EvaFamily
from vprompt.families.hf_transformers import TransformersFamily
from vprompt.families.swin import SwinFamily
from vprompt.families.vit import VisionTransformerFamily

FAMILIES: tuple[TokenFamily, ...] = (VisionTransformerFamily(), EvaFamily(), BeitFamily(), SwinFamily(),
                                    TransformersFamily())
"""The adapter of every supported family; a model gets the first that matches it (its timm class, or a
wrapped transformers model)."""

__all__ = ["FAMILIES", "PromptSource", "SourceClassifier", "TokenFamily", "TokenLayout", "find_family",
           "source_classifier", "token_family"]


def find_family(model: nn.Module) -> TokenFamily | None:
    """The adapter that serves ``model``, for callers that handle an unsupported model themselves.

    Args:
        model: A timm model.

    Returns:
        The first adapter of [`FAMILIES`][vprompt.families.FAMILIES] that matches, or None.
    """
    return next((family for family in FAMILIES if family.matches(model)), None)


def token_family(model: nn.Module, method: str) -> TokenFamily:
    """The adapter through which ``method`` puts prompt tokens into ``model``.

    Args:
        model: A timm model.
        method: The method asking, named in the error.

    Returns:
        The first adapter of [`FAMILIES`][vprompt.families.FAMILIES] that matches.

    Raises:
        ConfigError: ``model`` is of no supported family; the message lists the supported ones.
    """
    family = find_family(model)
    if family is None:
        raise ConfigError(
            f"method '{method}' puts prompt tokens into a transformer, and {type(model).__name__} is not "
            f"a supported family (supported: {', '.join(f.name for f in FAMILIES)}; see `vprompt models`)"
        )
    return family
