"""Arguments several commands share: the backbone, the method and its options, adversarial
training, and ``KEY=VALUE`` lists. Each is checked when built, before any model is."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

import tyro

from vprompt.backbones import BackboneSpec, check_argument_types, check_model_name, check_weights
from vprompt.errors import ConfigError
from vprompt.methods import DEFAULT_METHOD, make_config, method_names
from vprompt.robust.adversarial import AdversarialConfig
from vprompt.robust.evaluation import attack_threat
from vprompt.train import TrainConfig
from vprompt.validation import Existing, Validated, above, at_least, below


def parse_key_values(items: list[str]) -> dict[str, Any]:
    """KEY=VALUE pairs; values are JSON when they parse (numbers, booleans, lists), else strings."""
    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE, got '{item}'")
        try:
            parsed[key] = json.loads(value)
        except json.JSONDecodeError:
            parsed[key] = value
    return parsed


def refuse_single_seed(train: TrainConfig) -> None:
    """Commands that run every seed in --seeds share TrainConfig's --seed flag; a value there would
    otherwise be silently ignored, so a user who meant --seeds learns it at once."""
    if train.seed != TrainConfig.seed:
        raise ConfigError(f"--seed does not apply to this command, which runs each seed in --seeds "
                          f"(use --seeds {train.seed})")


def refuse_preset(train: TrainConfig, command: str) -> None:
    """--preset fills one run's settings; a command that searches or sets them itself refuses it."""
    if train.preset is not None:
        raise ConfigError(f"--preset applies to `vprompt train`; `vprompt {command}` sets the learning rate and "
                          "weight decay itself")


ConfigFile = Annotated[Path | None, tyro.conf.arg(name="config")]
"""--config FILE: a config.yaml written by an earlier run (or by hand), read by vprompt.cli.config_file."""


TASK_KINDS = ("a VTAB-1k-layout folder, an image folder of class sub-folders (imagefolder:PATH), "
              "a Hugging Face dataset (hf:PATH_OR_NAME[:CONFIG]: save_to_disk folder, parquet/arrow files, "
              "or a cached ORG/NAME), fgvc:[NAME:]PATH (VPT's json splits) or torchvision:NAME:ROOT")
"""What --data takes (vprompt.data.registry reads it), said once for every command's help."""
Task = Annotated[str, tyro.conf.arg(help=f"Task: {TASK_KINDS}.")]


Progress = Annotated[bool, tyro.conf.arg(
    help="Show progress bars (--no-progress for logs; sweeps and recipes then print a line per finished run).")]
"""The one declaration of ``--no-progress``, on every command that draws progress bars."""


@dataclass
class RayArgs(Validated):
    """Where a command's training runs execute: declared once, for every command that can hand them to Ray."""

    ray: str = "local"
    """none: in this process; local: a Ray instance on this machine; auto or HOST:PORT: a Ray cluster."""
    ray_timeout: Annotated[float, above(0)] = 30.0
    """Seconds to wait for a Ray cluster to answer before giving up."""
    cpus_per_run: Annotated[float, above(0)] = 1.0
    gpus_per_run: Annotated[float, at_least(0)] = 0.0
    """GPUs each run reserves on Ray (e.g. 1, or 0.5 to share)."""

    def executor(self) -> Any:
        """The executor these settings ask for (joining or starting Ray, or this process)."""
        from vprompt.sweep import make_executor

        return make_executor(self.ray, self.cpus_per_run, self.gpus_per_run, ray_timeout=self.ray_timeout)


@dataclass
class PromptWeights(Validated):
    """The backbone weights a saved prompt needs, when it was trained on a local file."""

    weights: Annotated[Path, Existing()] | None = None
    """Local weights of the backbone the prompt was trained on (.safetensors, or .pt read with
    weights_only=True; a transformers backbone's checkpoint folder): a prompt file never chooses a
    file to open, so a prompt trained on local weights needs them given again here."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.weights is not None and not self.weights.is_dir():
            check_weights(self.weights)


@dataclass
class ColumnArgs:
    """Which columns of a Hugging Face dataset hold the images and labels, where its features do not say."""

    image_column: str | None = None
    """Hugging Face datasets (--data hf:…): the image column, when there is not exactly one Image feature."""
    label_column: str | None = None
    """Hugging Face datasets: the label column (ClassLabel or integers), when there is not exactly one ClassLabel."""

    def on(self, data: str) -> str:
        """``data`` with the columns folded into the spec, which is what runs record."""
        from vprompt.data.huggingface import with_columns

        return with_columns(data, self.image_column, self.label_column)


def method_choices() -> str:
    """The --method help. Annotations are strings here, evaluated each time a parser is built, so
    a method registered after this module was imported is listed too."""
    return f"Method: {', '.join(method_names())}."


class Group:
    """A command with subcommands: runs the one chosen."""

    command: Any

    def run(self) -> None:
        self.command.run()


@dataclass
class BackboneArgs(Validated):
    model: str
    """timm model name, e.g. vit_base_patch16_224."""
    model_arg: list[str] = field(default_factory=list)
    """Extra timm constructor arguments as KEY=VALUE (VALUE parsed as JSON when it can be), e.g. img_size=32."""
    pretrained: bool = False
    """Load timm's pretrained weights (needs the network or a filled cache)."""
    weights: Annotated[Path, Existing()] | None = None
    """Local backbone weights: .safetensors, or .pt read with weights_only=True."""
    init_seed: Annotated[int, at_least(0)] | None = None
    """Seed of the random init when neither --pretrained nor --weights is given (default 0, with a warning that
    the weights are random; giving it says you mean it)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.model_kwargs  # noqa: B018  (parsed once, here, so a bad pair is refused before anything runs)
        if self.weights is not None:
            check_weights(self.weights)
        if self.model is not None:
            check_model_name(self.model)
            check_argument_types(self.model, self.model_kwargs)  # before any command writes anything
        elif self.model_arg or self.weights or self.pretrained:
            raise ConfigError("--model-arg, --weights and --pretrained describe a backbone: name it with --model")

    @cached_property
    def model_kwargs(self) -> dict[str, Any]:
        """--model-arg as constructor keyword arguments."""
        return parse_key_values(self.model_arg)

    def spec(self) -> BackboneSpec:
        return BackboneSpec(self.model, self.pretrained, str(self.weights) if self.weights else None,
                            self.model_kwargs, self.init_seed)


@dataclass
class OptionalBackboneArgs(BackboneArgs):
    model: str | None = None  # type: ignore[assignment]
    """timm model name (default: the recipe's own offline backbone)."""

    def spec_or_none(self) -> BackboneSpec | None:
        return self.spec() if self.model else None


@dataclass
class MethodArgs(Validated):
    method: Annotated[str, tyro.conf.arg(help=method_choices())] = DEFAULT_METHOD
    prompt_len: Annotated[int, at_least(1)] | None = None
    """Prompt tokens per layer (token-prompt methods; default 10)."""
    prompt_dropout: Annotated[float, at_least(0), below(1)] | None = None
    """Dropout on prompt tokens (token-prompt methods; default 0.0)."""
    method_arg: list[str] = field(default_factory=list)
    """Other method options as KEY=VALUE, e.g. for vapt: kernel=3 projector=per-layer residual=false; for vp:
    template=expansive|pad|patch|full mapping=flm|ilm|rlm|first-n|linear mapping_k=2 pbl=output pbl_strength=0.1;
    head_norm=false for a plain linear head."""

    def __post_init__(self) -> None:
        super().__post_init__()
        make_config(self.method, **self.options)  # the method's own types and bounds, before anything is built

    @cached_property
    def options(self) -> dict[str, Any]:
        """The method's options: the flags given and --method-arg, parsed once."""
        given = {"prompt_len": self.prompt_len, "prompt_dropout": self.prompt_dropout}
        return {k: v for k, v in given.items() if v is not None} | parse_key_values(self.method_arg)


@dataclass
class AdversarialArgs(Validated):
    adv_train: Literal["none", "fgsm-rs", "pgd"] = "none"
    """Train the prompt on adversarial examples: fgsm-rs (fast AT) or pgd (Madry); none: clean training."""
    adv_norm: Literal["linf", "l2"] = "linf"
    adv_eps: str = "8/255"
    """Training eps in [0, 1] pixel units (a number or a fraction like 8/255)."""
    adv_steps: Annotated[int, at_least(1)] = 7
    """PGD steps per training example (pgd only)."""
    adv_ramp_steps: Annotated[int, at_least(0)] = 0
    """Ramp eps up linearly from 0 over this many optimizer steps."""

    def __post_init__(self) -> None:
        super().__post_init__()
        attack_threat(self.adv_norm, self.adv_eps)

    def config(self) -> AdversarialConfig | None:
        if self.adv_train == "none":
            return None
        threat = attack_threat(self.adv_norm, self.adv_eps)
        return AdversarialConfig(threat, self.adv_train, pgd_steps=self.adv_steps, ramp_steps=self.adv_ramp_steps)
