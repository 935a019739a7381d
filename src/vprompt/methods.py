"""The method registry: one typed config and one builder per prompting method.

A method decides what a [`PromptedModel`][vprompt.PromptedModel] learns: which prompt modules (if
any) act on the input pixels and inside the frozen backbone, which head reads the features (a new
linear head, or the source classifier through a label mapping), and whether the backbone itself is
trained. Method
families register themselves from their own module (``prompts/tokens.py`` registers VPT), so a
new method never needs an edit here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, Callable, Literal

from torch import nn

from vprompt.errors import ConfigError
from vprompt.validation import Validated


@dataclass
class MethodConfig(Validated):
    """Options shared by every method; subclasses add their own typed fields, which are checked
    against their types and bounds when the config is built (see ``vprompt.validation``)."""

    def to_dict(self) -> dict[str, Any]:
        """The options as JSON-ready data, as a checkpoint records them."""
        return asdict(self)


@dataclass
class LinearHeadConfig(MethodConfig):
    """Options of every method that trains a new linear head."""

    head_norm: bool = True
    """Standardise the features before the head (no parameters; see heads.FeatureStandardizer)."""


@dataclass(frozen=True)
class Method:
    """A registered method: its name, config type, and how it changes the model."""

    name: str
    config_cls: type[MethodConfig]
    build_prompt: Callable[[MethodConfig, nn.Module], nn.Module | None]
    """The token prompt attached to the backbone, or None."""
    trains_backbone: bool = False
    summary: str = ""
    build_input_prompt: Callable[[MethodConfig, tuple[int, int]], nn.Module | None] | None = None
    """A pixel-space prompt for images in [0, 1] at the given canvas size, or None."""
    head: Literal["linear", "label-map"] = "linear"
    """A new linear head on features, or the source classifier read through a label mapping (the
    config then provides ``label_mapping(num_source, num_classes)``)."""


_REGISTRY: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    if method.name in _REGISTRY:
        raise ValueError(f"method '{method.name}' is registered twice")
    _REGISTRY[method.name] = method
    return method


def _ensure_builtin_methods() -> None:
    import vprompt.prompts  # noqa: F401  (each prompt family registers itself on import)


def get_method(name: str) -> Method:
    _ensure_builtin_methods()
    if name not in _REGISTRY:
        raise ConfigError(f"unknown method '{name}'; choose from {', '.join(method_names())}")
    return _REGISTRY[name]


def method_names() -> list[str]:
    """Every registered method, for choosing one by name.

    Returns:
        The names, in registration order (``linear``, ``full``, then the prompt methods).
    """
    _ensure_builtin_methods()
    return list(_REGISTRY)


def make_config(name: str, **options: Any) -> MethodConfig:
    """Build the typed config of method ``name``; options it does not take are refused."""
    method = get_method(name)
    known = {f.name for f in fields(method.config_cls)}
    unknown = sorted(set(options) - known)
    if unknown:
        takes = ", ".join(sorted(known)) or "no options"
        raise ConfigError(f"method '{name}' does not take {', '.join(unknown)} (it takes: {takes})")
    try:
        return method.config_cls(**options)
    except ConfigError as exc:
        raise ConfigError(f"method '{name}': {exc}") from None


def no_prompt(config: MethodConfig, backbone: nn.Module) -> None:
    return None


register_method(
    Method("linear", LinearHeadConfig, no_prompt, summary="linear probe on frozen features")
)
register_method(
    Method("full", LinearHeadConfig, no_prompt, trains_backbone=True, summary="full fine-tuning")
)
