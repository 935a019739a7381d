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
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Literal

from torch import nn

from vprompt.errors import ConfigError
from vprompt.validation import Validated

if TYPE_CHECKING:
    from torch.utils.data import Dataset

    from vprompt.families.base import TokenLayout


@dataclass
class MethodConfig(Validated):
    """Options shared by every method; subclasses add their own typed fields, which are checked
    against their types and bounds when the config is built (see ``vprompt.validation``)."""

    small_build: ClassVar[dict[str, Any]] = {}
    """Options that fit the tiny random builds `vprompt models --check` runs, where a default would
    not (a tuner's coefficients per layer above a tiny layer's weight count)."""

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
    """A registered method: its name, config type, how it changes the model, and the facts the
    rest of vprompt asks of it (the sweep, the compatibility matrix, the CLI and the trainer read
    them here instead of keeping lists of method names)."""

    name: str
    config_cls: type[MethodConfig]
    build_prompt: Callable[[MethodConfig, TokenLayout], nn.Module] | None = None
    """Builds the token prompt for a backbone of this token layout, which the model then attaches
    (None: the method puts no tokens in the backbone, so it runs on any backbone; otherwise only on
    a supported transformer family, `vprompt.families`)."""
    trains_backbone: bool = False
    """Every backbone parameter trains (full fine-tuning)."""
    backbone_params: Callable[[str], bool] | None = None
    """Which backbone parameters, by name, train besides the method's own modules (BitFit: the
    biases); None: none, unless ``trains_backbone``."""
    adapt_backbone: Callable[[MethodConfig, nn.Module], None] | None = None
    """Changes the backbone's modules in place before training (peft injects its tuner layers);
    the parameters it adds train with the head, the backbone's own stay frozen."""
    summary: str = ""
    build_input_prompt: Callable[[MethodConfig, tuple[int, int]], nn.Module | None] | None = None
    """A pixel-space prompt for images in [0, 1] at the given canvas size, or None."""
    head: Literal["linear", "label-map"] = "linear"
    """A new linear head on features, or the source classifier read through a label mapping (the
    config then provides ``label_mapping(num_source, num_classes)``)."""
    layout_refusal: Callable[[TokenLayout], str | None] | None = None
    """Why the method cannot run on a backbone of this token layout, or None when it can (token
    methods only; None: every layout)."""
    epoch_start: Callable[[nn.Module, Dataset, int, int], None] | None = None
    """Called by the trainer before every epoch as ``(model, train_set, epoch, seed)`` (VP's label
    mapping is recomputed there)."""

    @property
    def changes_backbone(self) -> bool:
        """Whether training changes any backbone parameter, so its features cannot be computed once."""
        return self.trains_backbone or self.backbone_params is not None or self.adapt_backbone is not None

    def trains(self, backbone_param: str) -> bool:
        """Whether the backbone parameter of this name trains."""
        return self.trains_backbone or (self.backbone_params is not None and self.backbone_params(backbone_param))

    @property
    def token_prompts(self) -> bool:
        """Whether the method puts prompt tokens into the backbone."""
        return self.build_prompt is not None

    @property
    def takes_prompt_len(self) -> bool:
        """Whether the method has a prompt length, which the sweep searches over."""
        return any(f.name == "prompt_len" for f in fields(self.config_cls))

    def refusal(self, layout: TokenLayout | None) -> str | None:
        """Why the method cannot run at its defaults on a backbone of ``layout`` (None: a backbone of
        no supported token family), or None when it can."""
        if self.adapt_backbone is not None and layout is None:
            return "it adapts a supported family's layers by default (target_modules names others)"
        if not self.token_prompts:
            return None
        if layout is None:
            return "it puts prompt tokens into a transformer of a supported family"
        return self.layout_refusal(layout) if self.layout_refusal else None


_REGISTRY: dict[str, Method] = {}
_BY_PREFIX: dict[str, Callable[[str], Method]] = {}
_BUILT_BY_PREFIX: dict[str, Method] = {}
"""Methods a prefix built when asked for; kept apart, so the registered list (the CLI's help, the
matrix) never depends on what a process asked for before."""
DEFAULT_METHOD = "vpt-deep"
"""The method the command line trains when none is named."""


def register_method(method: Method) -> Method:
    """Make ``method`` known by name to the model builder, the CLI, the sweep and the matrix."""
    if method.name in _REGISTRY:
        raise ValueError(f"method '{method.name}' is registered twice")
    _REGISTRY[method.name] = method
    return method


def register_method_prefix(prefix: str, build: Callable[[str], Method]) -> None:
    """Methods named ``prefix`` + a name (``peft:loha``), built by ``build`` the first time one is
    asked for: a library's whole list of tuners, without a registration each."""
    _BY_PREFIX[prefix] = build


def _ensure_builtin_methods() -> None:
    import vprompt.prompts  # noqa: F401  (each prompt family registers itself on import)
    import vprompt.tuners  # noqa: F401  (peft's tuners, registered without importing peft)


def get_method(name: str) -> Method:
    _ensure_builtin_methods()
    if name in _REGISTRY:
        return _REGISTRY[name]
    prefix = next((p for p in _BY_PREFIX if name.startswith(p) and len(name) > len(p)), None)
    if prefix is None:
        others = "".join(f", {p}NAME" for p in _BY_PREFIX)
        raise ConfigError(f"unknown method '{name}'; choose from {', '.join(method_names())}{others}")
    if name not in _BUILT_BY_PREFIX:
        _BUILT_BY_PREFIX[name] = _BY_PREFIX[prefix](name)
    return _BUILT_BY_PREFIX[name]


def registered_methods() -> list[Method]:
    """Every registered method, in registration order."""
    _ensure_builtin_methods()
    return list(_REGISTRY.values())


def method_names() -> list[str]:
    """Every registered method, for choosing one by name.

    Returns:
        The names, in registration order (``linear``, ``full``, ``bitfit``, then the prompt methods).
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


register_method(Method("linear", LinearHeadConfig, summary="linear probe on frozen features"))
register_method(Method("full", LinearHeadConfig, trains_backbone=True, summary="full fine-tuning"))


def is_bias(name: str) -> bool:
    """A bias term: BitFit trains exactly these (of linear layers, norms and the patch embedding)."""
    return name == "bias" or name.endswith(".bias")


register_method(Method("bitfit", LinearHeadConfig, backbone_params=is_bias,
                       summary="BitFit: the backbone's bias terms and a linear head (Ben Zaken et al., 2022)"))
