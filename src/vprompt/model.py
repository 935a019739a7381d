"""PromptedModel: input prompt → normalise → frozen backbone (+ token prompts) → head.

Every trainer, evaluator and attack only sees this module: images in [0, 1] in, logits out.
It also says what a prompt checkpoint of it holds (its trainable state and metadata; the files
themselves are ``vprompt.checkpoint``'s) and counts trainable parameters.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from vprompt.backbones import (ADOPTED, BackboneSpec, DataConfig, adopt_module, create_backbone,
                                data_config, fingerprint, meta_backbone, module_spec, random_weights_note)
from vprompt.card import model_card
from vprompt.checkpoint import (CHECKPOINT_FORMAT, WEIGHTS_FILE, read_metadata, read_tensors, resolve_prompt_dir,
                                write_prompt_files)
from vprompt.errors import CheckpointError, ConfigError, DataError, VpromptNotice, VpromptWarning
from vprompt.hub import is_hub_reference
from vprompt.prompt_file import MAX_BYTES, MAX_SIDE, check_shapes, checked_metadata, header_shapes
from vprompt.families import find_family, source_classifier, token_family
from vprompt.families.base import Handle
from vprompt.families.lean import Lean
from vprompt.heads import LinearHead, source_head
from vprompt.methods import LinearHeadConfig, Method, MethodConfig, get_method, make_config
from vprompt.names import TRANSFORMERS_PREFIX
from vprompt.prompts.shared import SharedPrompt



class PromptedModel(nn.Module):
    """A frozen backbone adapted by a method's prompts and a head.

    The one module every trainer, evaluator and attack sees: images in [0, 1] in, logits out. Most
    code builds it with [`create_model`][vprompt.create_model] or
    [`load_prompt`][vprompt.load_prompt]. Images enter at
    [`image_size`][vprompt.PromptedModel.image_size] (the input size, or an expansive prompt's
    inner size).

    Args:
        backbone: The timm model built from ``backbone_spec``; its classifier is replaced by
            the head (a label-mapping head keeps reading it).
        backbone_spec: How ``backbone`` was built, recorded in every checkpoint.
        method: A registered method name (see [`method_names`][vprompt.method_names]).
        method_config: That method's config.
        num_classes: Classes of the target task.
        class_names: Their names, saved with the prompt (default ``"0"``, ``"1"``, ...).
    """

    method: Method
    """The registered method: what it trains and how it builds prompts and head."""
    method_config: MethodConfig
    """The method's options, saved with the prompt."""
    backbone_spec: BackboneSpec
    """How the backbone was built, saved with the prompt."""
    backbone_fingerprint: str
    """A hash of the frozen weights, so a checkpoint refuses to load on another network."""
    data_config: DataConfig
    """The backbone's input size and normalisation (applied inside the model)."""
    class_names: list[str]
    """One name per class, in label order."""
    backbone: nn.Module
    """The frozen timm model, its classifier reset."""
    input_prompt: nn.Module | None
    """The pixel-space prompt applied to images before normalisation, if the method has one."""
    token_prompt: nn.Module | None
    """The prompt attached to the backbone's tokens, if the method has one."""
    head: nn.Module
    """A new linear head, or the source classifier read through a label mapping."""

    def __init__(
        self,
        backbone: nn.Module,
        backbone_spec: BackboneSpec,
        method: str,
        method_config: MethodConfig,
        num_classes: int,
        class_names: list[str] | None = None,
    ) -> None:
        super().__init__()
        self.inputs_checked = False
        """Whether a batch has been checked to lie in [0, 1] since the last ``train()`` / ``eval()``."""
        self.method = get_method(method)
        if type(method_config) is not self.method.config_cls:
            raise ConfigError(f"method '{method}' takes a {self.method.config_cls.__name__}, not a "
                              f"{type(method_config).__name__} (build it with vprompt.make_config('{method}', ...))")
        self.method_config = method_config
        self.backbone_spec = backbone_spec
        self.backbone_fingerprint = fingerprint(backbone)
        self.data_config = data_config(backbone)
        self.class_names = class_names or [str(i) for i in range(num_classes)]
        if len(self.class_names) != num_classes:
            raise ConfigError(f"{len(self.class_names)} class names for {num_classes} classes")
        self.register_buffer("mean", torch.tensor(self.data_config.mean).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(self.data_config.std).view(1, 3, 1, 1), False)
        source, num_source = source_classifier(backbone), int(getattr(backbone, "num_classes", 0))
        if self.method.head == "label-map" and num_source < 1:  # refusals first: a refused backbone stays as it was
            raise ConfigError(f"method {method} reads the source classifier through a label mapping, "
                              f"but backbone '{backbone_spec.name}' has no classifier (num_classes=0)")
        layout = None
        if self.method.build_prompt is not None:
            family = token_family(backbone, method)
            layout = family.layout(backbone)
            refusal = self.method.refusal(layout)
            if refusal:
                raise ConfigError(f"method '{method}' does not run on {family.name}: {refusal}")
        backbone.reset_classifier(0)  # the head below replaces (or wraps a frozen copy of) the source classifier
        self.backbone = backbone
        build_input = self.method.build_input_prompt
        self.input_prompt = build_input(method_config, self.data_config.input_size) if build_input else None
        self.token_prompt = self.method.build_prompt(method_config, layout) if layout is not None else None
        own = {id(param) for param in backbone.parameters()}
        if self.method.adapt_backbone is not None:
            self.method.adapt_backbone(method_config, backbone)
        for name, param in backbone.named_parameters():  # what an adaptation added trains, as the method says
            param.requires_grad_(id(param) not in own or self.method.trains(name))
        self.source_tokens: int | None = None
        """Label mapping on a distilled DeiT: its two heads read the first two output tokens."""
        if self.method.head == "label-map":
            self.head = source_head(source.module, num_source, num_classes,
                                    method_config.label_mapping(num_source, num_classes))
            self.source_tokens = source.token_features
        else:
            standardize = isinstance(method_config, LinearHeadConfig) and method_config.head_norm
            self.head = LinearHead(int(backbone.num_features), num_classes, standardize)
        self.lean = True
        """Whether the backbone computes only the rows whose output is used
        ([`set_lean`][vprompt.PromptedModel.set_lean])."""
        self._lean_handles: list[Handle] = []
        self._attach_backbone()
        setattr(backbone, ADOPTED, True)

    def _attach_backbone(self) -> None:
        """Attach the token prompt (if any) and, where the family has one, the lean forward."""
        family = find_family(self.backbone)
        lean = None
        if self.lean and family is not None and family.lean_forward:
            lean = Lean(self.source_tokens or family.pooled_rows(self.backbone))
        if self.token_prompt is not None:
            self.token_prompt.attach(self.backbone, lean)
        elif lean is not None:
            self._lean_handles = family.attach(self.backbone, None, lean)

    def set_lean(self, enabled: bool = True) -> None:
        """Compute only the rows whose output is used (the default), or every row through every
        block (``False``, the computation as timm writes it). Both give the same logits and
        gradients within float rounding (tested per family, method and pooling); the full path
        is there for tests, benchmarks and debugging.

        Args:
            enabled: The lean forward on (or off).
        """
        if self.token_prompt is not None:
            self.token_prompt.detach()
        for handle in reversed(self._lean_handles):
            handle.remove()
        self._lean_handles = []
        self.lean = enabled
        self._attach_backbone()

    @property
    def num_classes(self) -> int:
        """Classes the head predicts."""
        return self.head.out_features

    @property
    def image_size(self) -> tuple[int, int]:
        """The size images should have when they enter the model (datasets resize to it)."""
        return self.input_prompt.image_size if self.input_prompt is not None else self.data_config.input_size

    def epoch_start(self, train_set: Dataset, epoch: int, seed: int) -> None:
        """What the method does before each training epoch (VP recomputes its label mapping)."""
        if self.method.epoch_start is not None:
            self.method.epoch_start(self, train_set, epoch, seed)

    def shared_prompt(self) -> SharedPrompt:
        """The token prompt as multi-source transfer uses it: one tensor shared by every sample.

        Raises:
            ConfigError: The method's prompt is not one (no token prompt, a generated one, or a
                backbone whose token width changes by stage).
        """
        prompt = self.token_prompt
        if not isinstance(prompt, SharedPrompt) or prompt.shared_prompts() is None:
            raise ConfigError(f"multi-source transfer needs a prompt of one shared tensor (VPT's, on a backbone of "
                              f"one token width), not {self.method.name} on {type(self.backbone).__name__}")
        return prompt

    def shared_prompt_key(self) -> str:
        """The shared prompt tensor's key in a prompt checkpoint."""
        return f"token_prompt.{self.shared_prompt().shared_tensor_name}"

    def train(self, mode: bool = True) -> PromptedModel:
        """Keep a frozen backbone in eval mode: its dropout and norm statistics are not ours to train."""
        super().train(mode)
        self.inputs_checked = False
        if not self.method.trains_backbone:
            self.backbone.eval()
        return self

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the backbone's block activations during the backward pass instead of keeping
        them: a large backbone trains in less memory for more compute (timm's own checkpointing).

        Args:
            enable: Turn checkpointing on (or back off).

        Raises:
            ConfigError: The backbone has no checkpointing, the prompt's family cannot be
                recomputed (Swin), or timm is set to re-entrant checkpointing, which drops the
                gradients of prompts that enter inside a block.
        """
        from timm.layers import use_reentrant_ckpt

        name = self.backbone_spec.name
        if not hasattr(self.backbone, "set_grad_checkpointing"):
            raise ConfigError(f"backbone '{name}' ({type(self.backbone).__name__}) has no gradient checkpointing")
        family = find_family(self.backbone) if self.token_prompt is not None else None
        if enable and family is not None and family.checkpointing:
            raise ConfigError(f"--grad-checkpointing cannot run {self.method.name} on {family.name}: "
                              f"{family.checkpointing}")
        if enable and use_reentrant_ckpt():
            raise ConfigError("--grad-checkpointing needs timm's non-reentrant checkpointing (unset "
                              "TIMM_REENTRANT_CKPT): re-entrant checkpointing drops the prompts' gradients")
        self.backbone.set_grad_checkpointing(enable)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features of images in [0, 1] (prompt tokens never pooled)."""
        if self.input_prompt is not None:
            images = self.input_prompt(images)
        x = (images - self.mean) / self.std
        tokens = self.backbone.forward_features(x)
        if self.source_tokens:
            return tokens[:, :self.source_tokens].flatten(1)
        return self.backbone.forward_head(tokens, pre_logits=True)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of images (B, 3, H, W) in [0, 1]; the first batch after each ``train()`` or
        ``eval()`` is checked to lie in that range (``vprompt.model.check_pixels``)."""
        if not self.inputs_checked and not capturing():
            check_pixels(images, self.data_config)
            self.inputs_checked = True
        return self.head(self.features(images))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities (B, C) of images in [0, 1], computed in eval mode (the training
        mode is restored afterwards)."""
        was_training = self.training
        self.eval()
        try:
            return self(images).float().softmax(dim=1)
        finally:
            self.train(was_training)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Exactly the tensors a prompt checkpoint stores: every trainable parameter, the persistent
        buffers of prompts and head (a label mapping), and when the backbone trains, its buffers too
        (BatchNorm statistics change with its weights)."""
        state = {name: p.detach() for name, p in self.named_parameters() if p.requires_grad}
        buffers = dict(self.named_buffers())
        state |= {name: b.detach() for name, b in self.state_dict().items()
                  if name in buffers and not name.startswith("backbone.")}
        if self.method.trains_backbone:  # persistent buffers: what the backbone's state dict holds beyond weights
            weights = dict(self.backbone.named_parameters())
            state |= {f"backbone.{name}": b.detach() for name, b in self.backbone.state_dict().items()
                      if name not in weights}
        return state

    def metadata(self) -> dict[str, Any]:
        """What ``prompt.json`` records, enough to rebuild this model and to refuse another one."""
        return {
            "format": CHECKPOINT_FORMAT,
            "method": self.method.name,
            "method_config": self.method_config.to_dict(),
            "backbone": self.backbone_spec.to_dict(),
            "backbone_fingerprint": self.backbone_fingerprint,
            "input_size": list(self.data_config.input_size),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
        }


PIXEL_SLACK = 0.25
"""How far outside [0, 1] a batch may reach (a bicubic resize overshoots a little) before it is
taken for normalised or 0-255 pixels."""


def check_pixels(images: torch.Tensor, config: DataConfig) -> None:
    """Refuse a batch far outside [0, 1]: the model normalises its input itself, so an image
    already normalised (or in 0-255) would be transformed twice and train on nonsense, silently."""
    if images.numel() == 0:
        return
    low, high = (float(v) for v in torch.aminmax(images.detach().float()))
    if low < -PIXEL_SLACK or high > 1 + PIXEL_SLACK:
        raise DataError(f"images reaching the model lie in [{low:.2f}, {high:.2f}], not [0, 1]: the model normalises "
                        f"them itself (mean {tuple(round(m, 3) for m in config.mean)}, std "
                        f"{tuple(round(s, 3) for s in config.std)}), so give it pixels in [0, 1] (no "
                        "transforms.Normalize; uint8 images divided by 255)")


def capturing() -> bool:
    """Whether the forward is being traced, compiled or exported (no data-dependent check then)."""
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export()


def create_model(
    model: str | BackboneSpec | nn.Module,
    method: str,
    num_classes: int,
    class_names: list[str] | None = None,
    **method_options: Any,
) -> PromptedModel:
    """The one-call API: a backbone, a method name and its options.

    Args:
        model: A name as [`BackboneSpec.name`][vprompt.BackboneSpec.name] takes it (a plain
            timm name gets random weights), a full [`BackboneSpec`][vprompt.BackboneSpec], or a
            module you built (a timm model, e.g. fine-tuned and loaded by your own code). A module
            becomes the model's backbone in place (frozen, its classifier replaced by the head);
            the prompt records its class and weight fingerprint, and loads back only onto a
            module with the same weights: ``load_prompt(path, backbone=module)``.
        method: A registered method name, one of [`method_names`][vprompt.method_names].
        num_classes: Classes of the target task.
        class_names: Their names, saved with the prompt (default ``"0"``, ``"1"``, ...).
        **method_options: Fields of the method's config, e.g. ``prompt_len=10``; one it does
            not take is a ``ConfigError`` naming the ones it does.

    Returns:
        A frozen backbone with freshly initialised prompts and head.
    """
    config = make_config(method, **method_options)
    if isinstance(model, nn.Module):
        prompted = PromptedModel(adopt_module(model), module_spec(model), method, config, num_classes, class_names)
        setattr(model, ADOPTED, True)  # also a transformers model, which serves through a wrapper
        return prompted
    spec = BackboneSpec(model) if isinstance(model, str) else model
    note = random_weights_note(spec)
    if note:
        warnings.warn(note, VpromptWarning, stacklevel=2)
    return PromptedModel(create_backbone(spec), spec, method, config, num_classes, class_names)


@dataclass(frozen=True)
class ParameterReport:
    """Trainable parameter counts, split the way papers report them."""

    prompt: int
    head: int
    backbone: int
    total_trainable: int
    backbone_total: int

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def count_parameters(model: str | BackboneSpec, method: str, num_classes: int, **method_options: Any) -> ParameterReport:
    """[`parameter_report`][vprompt.parameter_report] of a model whose backbone is never
    materialised: counting needs shapes only, so the backbone is built on the meta device (its
    weights are not downloaded, initialised or hashed), in a moment and no memory whatever its size.

    Args:
        model: As [`create_model`][vprompt.create_model] takes it.
        method: A registered method name.
        num_classes: Classes of the target task (the head's size).
        **method_options: Fields of the method's config.

    Returns:
        The counts, exactly those of the built model.
    """
    spec = BackboneSpec(model) if isinstance(model, str) else model
    config = make_config(method, **method_options)
    return parameter_report(PromptedModel(meta_backbone(spec), spec, method, config, num_classes))


def parameter_report(model: PromptedModel) -> ParameterReport:
    """Count what a method trains, split the way papers report it.

    Args:
        model: The model to count.

    Returns:
        Trainable parameters of the prompts (token and input prompts), the head and the
        backbone (0 unless the method trains it), their total, and every backbone parameter,
        frozen or not (``backbone_total``).
    """
    def count(module: nn.Module | None) -> int:
        if module is None:
            return 0
        return sum(p.numel() for p in module.parameters() if p.requires_grad)

    prompt = count(model.token_prompt) + count(model.input_prompt)
    head, backbone = count(model.head), count(model.backbone)
    return ParameterReport(
        prompt=prompt,
        head=head,
        backbone=backbone,
        total_trainable=count(model),
        backbone_total=sum(p.numel() for p in model.backbone.parameters()),
    )


def save_prompt(model: PromptedModel, directory: Path | str, training: dict[str, Any] | None = None) -> Path:
    """Write the prompt-only checkpoint (trainable tensors + metadata) and its model card.

    Only what the method trains is stored, so a prompt's checkpoint stays small: the frozen
    backbone is rebuilt from its spec. A full disk raises an OSError naming the file.

    Args:
        model: The trained model.
        directory: Where ``prompt.safetensors``, ``prompt.json`` and ``README.md`` go (created
            if needed; files written before are replaced).
        training: What the run knows for the model card (config, metrics, task; see
            ``vprompt.card.model_card``).

    Returns:
        ``directory``, as a path.
    """
    directory = Path(directory)
    meta = model.metadata()
    write_prompt_files(directory, model.trainable_state(), meta,
                       model_card(meta, model.backbone_spec.weights_source(), training))
    return directory


def load_prompt(directory: Path | str, backbone: BackboneSpec | nn.Module | None = None,
                weights: Path | str | None = None) -> PromptedModel:
    """Rebuild a PromptedModel from a prompt checkpoint.

    The checkpoint's ``prompt.json`` is data, never instructions: it is checked before anything is
    built (``vprompt.prompt_file``; "Sharing prompts safely" in the docs), the model is first built
    on the meta device to bound its size and to check the weights file's shapes, and a local weights file it
    names is refused unless ``weights`` gives it.

    Args:
        directory: A folder written by [`save_prompt`][vprompt.save_prompt], a training run's
            folder (its final prompt), or a Hub reference ``hf://ORG/NAME[@REVISION]``.
        backbone: Build on this spec instead of the recorded one (e.g. weights moved to another
            path), or on this module (a prompt trained on a module you built needs it); its
            weights must still be those the prompt was trained on.
        weights: A local file of the recorded backbone's weights (a prompt trained with
            ``--weights`` needs it: a prompt file does not choose which files are opened).

    Returns:
        The model in eval mode, so the head's feature statistics are the saved ones, not those
        of the next batch.

    Raises:
        CheckpointError: The checkpoint is missing, corrupt, says what a prompt file may not, or
            does not fit the backbone.
    """
    folder = resolve_prompt_dir(directory)
    meta = checked_metadata(read_metadata(folder), folder, own_weights=backbone is not None or weights is not None)
    spec = backbone if backbone is not None else BackboneSpec.from_record(meta["backbone"])
    if weights is not None and isinstance(spec, BackboneSpec):
        spec = with_weights(spec, weights)
    if is_hub_reference(directory) and isinstance(spec, BackboneSpec):
        warnings.warn(f"{directory}: builds backbone {spec.describe()}",
                      VpromptNotice, stacklevel=2)
    if isinstance(spec, BackboneSpec):  # bounded before anything is allocated; the file's own model: shapes too
        shapes = meta_trainable_shapes(spec, meta, folder)
        if backbone is None:
            check_shapes(header_shapes(folder / WEIGHTS_FILE), shapes, folder)
    model = create_model(
        spec, meta["method"], meta["num_classes"], meta["class_names"], **meta["method_config"]
    )
    load_prompt_into(model, folder, meta)
    return model.eval()


def with_weights(spec: BackboneSpec, weights: Path | str) -> BackboneSpec:
    """``spec`` with the user's own weights: a file for a timm backbone, the checkpoint folder for a
    transformers one (whose weights its folder holds)."""
    if spec.name.startswith(TRANSFORMERS_PREFIX):
        return replace(spec, name=f"{TRANSFORMERS_PREFIX}{weights}")
    return replace(spec, checkpoint=str(weights))


def meta_trainable_shapes(spec: BackboneSpec, meta: dict[str, Any], source: Path) -> dict[str, tuple[int, ...]]:
    """The shapes of what the recorded model trains, from a build on the meta device (nothing
    allocated), once its input size is within ``MAX_SIDE`` and its whole size (parameters and
    buffers) within ``MAX_BYTES``."""
    backbone = meta_backbone(spec)
    side = max(data_config(backbone).input_size)
    if side > MAX_SIDE:
        raise CheckpointError(f"{source}/prompt.json describes a backbone whose input is {side} pixels a side, more "
                              f"than {MAX_SIDE}: refused before anything is allocated")

    def build(backbone: nn.Module) -> PromptedModel:
        return PromptedModel(backbone, spec, meta["method"], make_config(meta["method"], **meta["method_config"]),
                             meta["num_classes"], meta["class_names"])

    try:
        with torch.device("meta"):
            model = build(backbone)
    except NotImplementedError:  # a prompt whose init needs values (VP's mask): its size is the input's, bounded above
        model = build(meta_backbone(spec))  # a fresh one: the failed build may have half-wrapped the first
    size = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    if size > MAX_BYTES:
        raise CheckpointError(f"{source}/prompt.json describes a model of {size / 2 ** 30:.1f} GiB (parameters and "
                              f"buffers), more than {MAX_BYTES / 2 ** 30:.0f} GiB: refused before anything is allocated")
    return {name: tuple(value.shape) for name, value in model.trainable_state().items()}


def load_prompt_into(model: PromptedModel, directory: Path | str, meta: dict[str, Any] | None = None) -> None:
    """Load checkpoint tensors into ``model`` after checking it is the model they were trained for
    (and that the file's header declares exactly its tensors, before any is read)."""
    meta = meta or read_metadata(directory)
    problems = compatibility_problems(meta, model)
    if problems:
        raise CheckpointError(f"prompt checkpoint {directory} does not fit this model: {'; '.join(problems)}")
    expected = {name: tuple(value.shape) for name, value in model.trainable_state().items()}
    check_shapes(header_shapes(Path(directory) / WEIGHTS_FILE), expected, directory)
    tensors = read_tensors(directory)
    with torch.no_grad():
        targets = dict(model.named_parameters()) | dict(model.named_buffers())
        for name, value in tensors.items():
            targets[name].copy_(value)


def recorded_config(meta: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint's method config with today's defaults for options added since it was saved."""
    try:
        return make_config(meta["method"], **meta["method_config"]).to_dict()
    except ConfigError:  # an option since removed, or a method no longer registered
        return meta["method_config"]


def compatibility_problems(meta: dict[str, Any], model: PromptedModel) -> list[str]:
    """Every way the checkpoint's recorded model differs from ``model``, as short phrases."""
    problems = []
    recorded = meta["backbone"]
    if meta["backbone_fingerprint"] != model.backbone_fingerprint:
        problems.append(
            f"it was trained on backbone '{recorded['name']}' (weights {meta['backbone_fingerprint']}), "
            f"this is '{model.backbone_spec.name}' (weights {model.backbone_fingerprint})"
        )
    if meta["method"] != model.method.name or recorded_config(meta) != model.method_config.to_dict():
        problems.append(
            f"method {meta['method']} {meta['method_config']} vs "
            f"{model.method.name} {model.method_config.to_dict()}"
        )
    if list(meta["input_size"]) != list(model.data_config.input_size):
        problems.append(f"input size {meta['input_size']} vs {list(model.data_config.input_size)}")
    if meta["num_classes"] != model.num_classes:
        problems.append(f"{meta['num_classes']} classes vs {model.num_classes}")
    return problems
