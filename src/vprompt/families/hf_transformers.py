"""Hugging Face transformers vision backbones: ViTModel and ViTForImageClassification, Dinov2Model,
Dinov2WithRegistersModel, CLIPVisionModel and SiglipVisionModel.

[`TransformersBackbone`][vprompt.families.hf_transformers.TransformersBackbone] gives such a model
timm's classifier interface (``forward_features``: the tokens after the last layer;
``forward_head``: the feature the model's own pooling gives; ``reset_classifier``;
``pretrained_cfg`` with the image processor's size, mean and std), so the PromptedModel, the
trainer, export and the attacks use it like any timm model.
[`TransformersFamily`][vprompt.families.hf_transformers.TransformersFamily] attaches token prompts
with hooks on the instance's encoder layers (transformers' classes are never patched): the prompts
enter after the prefix tokens (CLS and registers) at the input of layer 0, are replaced at later
layers when the prompt says so, and leave at the output of the last layer, before the final norm
and the pooling. A model whose attention is not eager or sdpa (flex attention builds its mask for
the length without prompts) is refused.

Names: ``hf-transformers:ORG/NAME`` (or a local folder) loads a checkpoint from the local Hugging
Face cache, never the network; ``hf-transformers:CLASS`` (e.g. ``Dinov2Model``) builds that class
at random from its config, the constructor arguments being config fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from torch import nn

from vprompt.errors import ConfigError
from vprompt.families.base import Handle, PromptSource, SequenceFamily, TokenLayout, drop_prompts
from vprompt.families.lean import Lean
from vprompt.names import TRANSFORMERS_PREFIX as PREFIX

INSTALL = "pip install 'vprompt[transformers]'"
IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))
ATTENTION = ("eager", "sdpa")
"""Attention implementations whose mask does not depend on the sequence length prompts change."""


@dataclass(frozen=True)
class Kind:
    """One supported transformers class: its config, its image processor's defaults, its pooling."""

    config: str
    """The config class that builds it at random."""
    normalization: tuple[tuple[float, ...], tuple[float, ...]]
    """(mean, std) when no image processor config is found beside the weights."""
    pooling: str
    """"cls" (the normed CLS token), "cls-post-norm" (CLIP: post_layernorm on CLS) or "map" (SigLIP's head)."""
    model_types: tuple[str, ...]
    """``config.model_type`` values loaded as this class."""
    base: str | None = None
    """The attribute holding the base model, for a class with a classifier on top."""
    largest_default: int | None = None
    """Without an image processor, the input side is the config's image size, at most this: DINOv2
    interpolates its position embeddings and is configured at 518 but preprocessed to 224."""


KINDS: dict[str, Kind] = {
    "ViTModel": Kind("ViTConfig", HALF, "cls", ("vit",)),
    "ViTForImageClassification": Kind("ViTConfig", HALF, "cls", (), base="vit"),
    "Dinov2Model": Kind("Dinov2Config", IMAGENET, "cls", ("dinov2",), largest_default=224),
    "Dinov2WithRegistersModel": Kind("Dinov2WithRegistersConfig", IMAGENET, "cls", ("dinov2_with_registers",),
                                     largest_default=224),
    "CLIPVisionModel": Kind("CLIPVisionConfig", OPENAI_CLIP, "cls-post-norm", ("clip", "clip_vision_model")),
    "SiglipVisionModel": Kind("SiglipVisionConfig", HALF, "map", ("siglip", "siglip_vision_model")),
}
"""Every transformers class vprompt prompts, by class name."""


def import_transformers() -> Any:
    try:
        import transformers
    except ImportError:
        raise ConfigError(f"hf-transformers: backbones need the transformers package: {INSTALL}") from None
    return transformers


def kind_of(model: nn.Module) -> str | None:
    """The supported transformers class ``model`` is an instance of (None for any other module)."""
    if not type(model).__module__.startswith("transformers."):
        return None
    transformers = import_transformers()
    return next((name for name in KINDS if isinstance(model, getattr(transformers, name))), None)


class TransformersBackbone(nn.Module):
    """A transformers vision model with timm's classifier interface (see the module docstring).

    Args:
        model: An instance of a class in [`KINDS`][vprompt.families.hf_transformers.KINDS].
        mean: Normalisation mean of its inputs (its image processor's).
        std: Normalisation std.
        input_size: (height, width) its images are resized to.
    """

    def __init__(self, model: nn.Module, mean: tuple[float, ...], std: tuple[float, ...],
                 input_size: tuple[int, int]) -> None:
        super().__init__()
        self.kind = kind_of(model)
        if self.kind is None:
            raise ConfigError(f"{type(model).__name__} is not a supported transformers backbone "
                              f"(supported: {', '.join(KINDS)})")
        spec = KINDS[self.kind]
        self.body = getattr(model, spec.base) if spec.base else model
        classifier = getattr(model, "classifier", None) if spec.base else None
        self.head = classifier if isinstance(classifier, nn.Linear) else nn.Identity()
        self.num_classes = self.head.out_features if isinstance(self.head, nn.Linear) else 0
        config = self.body.config
        self.num_features = self.embed_dim = int(config.hidden_size)
        registers = int(getattr(config, "num_register_tokens", 0) or 0)
        self.num_prefix_tokens = 0 if spec.pooling == "map" else 1 + registers
        patch = config.patch_size
        self.patch_size = (patch, patch) if isinstance(patch, int) else tuple(patch)
        self.input_size = tuple(input_size)
        self.pretrained_cfg = {"input_size": (3, *self.input_size), "mean": tuple(mean), "std": tuple(std),
                               "interpolation": "bicubic", "crop_pct": 1.0, "num_classes": self.num_classes}

    @property
    def inner(self) -> nn.Module:
        """The module holding embeddings, encoder and norms (older transformers nest a vision_model)."""
        return getattr(self.body, "vision_model", self.body)

    @property
    def layers(self) -> nn.ModuleList:
        """The encoder layers, wherever this version of transformers keeps them."""
        inner = self.inner
        for path in ("encoder.layer", "encoder.layers", "layers", "layer"):
            found: Any = inner
            for name in path.split("."):
                found = getattr(found, name, None)
            if isinstance(found, nn.ModuleList):
                return found
        raise ConfigError(f"cannot find the encoder layers of {self.kind} in this transformers version")

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        """Every token after the last layer (and the final norm where the model applies it to all)."""
        return self.body(pixel_values=images).last_hidden_state

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """The feature the model's own pooling gives (``pre_logits``), or the classifier's logits."""
        pooling = KINDS[self.kind].pooling
        if pooling == "map":
            head = getattr(self.inner, "head", None)
            pooled = head(tokens) if head is not None else tokens.mean(1)
        elif pooling == "cls-post-norm":
            pooled = self.inner.post_layernorm(tokens[:, 0])
        else:
            pooled = tokens[:, 0]
        return pooled if pre_logits else self.head(pooled)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(images))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Drop the classifier (the PromptedModel's head replaces it); only 0 classes is supported."""
        if num_classes != 0:
            raise ConfigError("a transformers backbone's classifier can only be removed (num_classes=0)")
        self.head, self.num_classes = nn.Identity(), 0


class TransformersFamily(SequenceFamily):
    """Token prompts on a [`TransformersBackbone`][vprompt.families.hf_transformers.TransformersBackbone]."""

    name = "transformers"
    module_path = "vprompt.families.hf_transformers"

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, TransformersBackbone)

    def layout(self, model: nn.Module) -> TokenLayout:
        grid = tuple(size // patch for size, patch in zip(model.input_size, model.patch_size))
        return TokenLayout(block_dims=(model.embed_dim,) * len(model.layers), num_prefix_tokens=model.num_prefix_tokens,
                           patch_grid=grid, patch_size=model.patch_size)

    lean_forward = False  # transformers' layers are not timm's modules: the full path
    tuner_targets = (r".*\.layers?\.\d+\.((attention|self_attn)\.(q_proj|k_proj|v_proj|o_proj|out_proj)"
                     r"|mlp\.(fc1|fc2))")
    tuner_feedforward = r".*\.layers?\.\d+\.mlp\.(fc1|fc2)"

    def attach(self, model: nn.Module, source: PromptSource | None, lean: Lean | None = None) -> list[Handle]:
        if source is None:
            return []
        attention = getattr(model.body.config, "_attn_implementation", None) or "eager"
        if attention not in ATTENTION:
            raise ConfigError(f"token prompts need eager or sdpa attention, not {attention} (load the model with "
                              "attn_implementation='sdpa')")
        prefix, count, layers = model.num_prefix_tokens, source.num_tokens, model.layers
        handles: list[Handle] = [
            layer.register_forward_pre_hook(partial(self.enter_block, source, index, prefix, index == 0),
                                           with_kwargs=True)
            for index, layer in enumerate(layers)
        ]
        # prepend: before transformers' own output-recording hooks, so recorded states have no prompts
        handles.append(layers[-1].register_forward_hook(partial(leave_last_layer, prefix, count), prepend=True))
        return handles


def leave_last_layer(prefix: int, count: int, module: nn.Module, args: tuple, output: Any) -> Any:
    """The last layer's output without the prompt tokens (a tensor, or a tuple led by one)."""
    if isinstance(output, tuple):
        return (drop_prompts(prefix, count, module, (output[0],))[0], *output[1:])
    return drop_prompts(prefix, count, module, (output,))[0]


def wrap(model: nn.Module, processor: Any = None) -> TransformersBackbone:
    """``model`` with timm's interface; size, mean and std from its image processor when given,
    else the family's defaults and the config's image size."""
    kind = KINDS[kind_of(model) or ""]
    base = getattr(model, kind.base) if kind.base else model
    mean, std = kind.normalization
    size = base.config.image_size
    input_size = (size, size) if isinstance(size, int) else tuple(size)
    if kind.largest_default is not None:
        input_size = tuple(min(side, kind.largest_default) for side in input_size)
    if processor is not None:
        mean = tuple(getattr(processor, "image_mean", None) or mean)
        std = tuple(getattr(processor, "image_std", None) or std)
        crop = getattr(processor, "crop_size", None) if getattr(processor, "do_center_crop", False) else None
        chosen = crop or getattr(processor, "size", None) or {}
        if "height" in chosen and "width" in chosen:
            input_size = (int(chosen["height"]), int(chosen["width"]))
        elif "shortest_edge" in chosen:
            input_size = (int(chosen["shortest_edge"]),) * 2
    return TransformersBackbone(model, mean, std, input_size)


def class_for(config: Any, name: str) -> str:
    """The supported class that loads a checkpoint with ``config``."""
    if config.model_type == "vit":
        return "ViTForImageClassification" if "ViTForImageClassification" in (config.architectures or []) \
            else "ViTModel"
    found = next((cls for cls, kind in KINDS.items() if config.model_type in kind.model_types), None)
    if found is None:
        raise ConfigError(f"{PREFIX}{name} is a {config.model_type} model; vprompt prompts "
                          f"{', '.join(KINDS)}")
    return found


def transformers_backbone(name: str, kwargs: dict[str, Any], init_seed: int,
                          weights: bool = True) -> TransformersBackbone:
    """``hf-transformers:NAME`` built (see the module docstring); ``weights=False`` builds the
    architecture only (for counting parameters on the meta device). transformers' own log lines
    (config notes) are kept out: a failure is reported once, as a ConfigError."""
    transformers = import_transformers()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        return build(transformers, name, kwargs, init_seed, weights)
    finally:
        transformers.logging.set_verbosity(verbosity)


def build(transformers: Any, name: str, kwargs: dict[str, Any], init_seed: int,
          weights: bool) -> TransformersBackbone:
    """See [`transformers_backbone`][vprompt.families.hf_transformers.transformers_backbone]."""
    options = {("num_labels" if k == "num_classes" else k): v for k, v in kwargs.items()}
    if name in KINDS:  # a random network of that class, from a config
        try:
            config = getattr(transformers, KINDS[name].config)(**options)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"bad config for {PREFIX}{name}: {exc}") from None
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)
            return wrap(getattr(transformers, name)._from_config(config, attn_implementation="sdpa"))
    try:
        config = transformers.AutoConfig.from_pretrained(name, local_files_only=True, **options)
    except OSError as exc:
        raise ConfigError(f"{PREFIX}{name} is not in the local Hugging Face cache (HF_HOME) nor a folder holding a "
                          f"config.json: fetch it once where there is a network (huggingface-cli download {name})"
                          ) from exc
    except ValueError as exc:
        raise ConfigError(f"cannot read the config of {PREFIX}{name}: {' '.join(str(exc).split())}") from None
    cls = getattr(transformers, class_for(config, name))
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(name, local_files_only=True)
    except (OSError, ValueError):
        processor = None
    if not weights:
        return wrap(cls._from_config(config, attn_implementation="sdpa"), processor)
    return wrap(cls.from_pretrained(name, config=config, local_files_only=True, attn_implementation="sdpa"), processor)
