"""Frozen timm backbones: loading, freezing, data config and a weight fingerprint.

A backbone is always described by a [`BackboneSpec`][vprompt.BackboneSpec] so that a prompt checkpoint can say
exactly which frozen network it was trained on, and rebuild it offline.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vprompt import zoo
from vprompt.errors import CheckpointError, ConfigError
from vprompt.hub import cache_only_when_unreachable
from vprompt.names import MODULE_PREFIX, ROBUSTBENCH_PREFIX, TRANSFORMERS_PREFIX


@dataclass
class BackboneSpec:
    """How to build a backbone: a timm name plus where its weights come from.

    A prompt checkpoint records only this spec, so the same spec must always rebuild the same
    frozen network, offline: with neither ``pretrained`` nor ``checkpoint``, the weights are random
    but drawn from ``init_seed``.
    """

    name: str
    """A timm model name, ``zoo:NAME`` (the offline zoo) or ``robustbench:[THREAT/]NAME``."""
    pretrained: bool = False
    """Download timm's pretrained weights (needs the network or a filled Hugging Face cache)."""
    checkpoint: str | None = None
    """A local safetensors or ``.pt`` file of weights, read without executing pickled code."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra timm constructor arguments, e.g. ``img_size`` or ``num_classes``."""
    init_seed: int | None = None
    """Seeds the random init when no weights are given; None is seed 0, with a warning that the
    weights are random (nobody asked for them)."""
    input_size: list[int] | None = None
    """(height, width) overriding timm's default, for networks without a fixed size (CNNs); a
    ViT's size comes from its ``img_size``."""

    def to_dict(self) -> dict[str, Any]:
        """The spec as JSON-ready data, as ``prompt.json`` records it."""
        return asdict(self)

    @property
    def seed(self) -> int:
        """The seed a random init is drawn from (``init_seed``, 0 when not given)."""
        return self.init_seed or 0

    @property
    def random_init(self) -> bool:
        """Whether the weights are drawn at random: no timm weights, file, zoo card, RobustBench model,
        module of your own or transformers checkpoint gives them."""
        if self.pretrained or self.checkpoint or zoo.is_zoo_name(self.name) or \
                self.name.startswith((ROBUSTBENCH_PREFIX, MODULE_PREFIX)):
            return False
        if self.name.startswith(TRANSFORMERS_PREFIX):
            from vprompt.families.hf_transformers import KINDS

            return self.name.removeprefix(TRANSFORMERS_PREFIX) in KINDS  # a class built at random, not a checkpoint
        return True

    def weights_source(self) -> str:
        """Where the weights come from, in words (table captions and model cards)."""
        if zoo.is_zoo_name(self.name):
            return "offline zoo weights"
        if self.name.startswith(MODULE_PREFIX):
            return "a module built by your own code"
        if self.name.startswith(ROBUSTBENCH_PREFIX):
            return "RobustBench weights"
        if self.name.startswith(TRANSFORMERS_PREFIX) and not self.random_init:
            return "a transformers checkpoint"
        if self.pretrained:
            return "timm pretrained"
        if self.checkpoint:
            return f"local weights {self.checkpoint}"
        return f"random init, seed {self.seed}"

    def describe(self) -> str:
        """The name, overrides and where the weights come from, for table captions."""
        source = self.weights_source()
        return f"{self.name} {self.kwargs} ({source})" if self.kwargs else f"{self.name} ({source})"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackboneSpec:
        """The spec that [`to_dict`][vprompt.BackboneSpec.to_dict] wrote."""
        return cls(**data)

    @classmethod
    def from_record(cls, data: dict[str, Any]) -> BackboneSpec:
        """A backbone a prompt was trained on, to rebuild: its seed is the one it was built with, so
        rebuilding it is asked for (no random-weights warning)."""
        spec = cls.from_dict(data)
        return replace(spec, init_seed=spec.seed) if spec.random_init else spec


@dataclass(frozen=True)
class DataConfig:
    """What the backbone expects of its input: size and the normalisation applied inside the model."""

    input_size: tuple[int, int]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def timm_with_zoo():
    """timm, with the zoo's own architectures registered. Imported on first use, not with vprompt:
    timm (and the torchvision it loads) is most of the start-up time of a command that builds no model."""
    import timm

    from vprompt.zoo import architectures  # noqa: F401  (registers the zoo's own timm architectures)

    return timm


ADOPTED = "_vprompt_backbone"
"""Set on a module once a PromptedModel has made it its backbone."""
TIMM_INTERFACE = ("forward_features", "forward_head", "reset_classifier", "get_classifier", "num_features")
"""What a PromptedModel calls on its backbone: timm's classifier interface."""


def module_spec(module: nn.Module) -> BackboneSpec:
    """How a prompt trained on a module built by the user's own code records its backbone: its class
    (with the weight fingerprint the prompt keeps beside it). Only the module itself rebuilds it."""
    cls = type(module)
    return BackboneSpec(f"{MODULE_PREFIX}{cls.__module__}.{cls.__qualname__}")


def adopt_module(module: nn.Module) -> nn.Module:
    """``module`` in eval mode, as a PromptedModel's backbone (a transformers model wrapped in timm's
    interface); a module without timm's classifier interface, or one already serving a
    PromptedModel, is a ConfigError."""
    from vprompt.families.hf_transformers import kind_of, wrap

    if getattr(module, ADOPTED, False):
        raise ConfigError(f"this {type(module).__name__} already serves a PromptedModel (its classifier is replaced "
                          "and its prompts attached): build the module again, or use that model")
    if kind_of(module) is not None:
        module = wrap(module)
    missing = [name for name in TIMM_INTERFACE if not hasattr(module, name)]
    if missing:
        raise ConfigError(f"a {type(module).__name__} cannot be a backbone: it lacks timm's {', '.join(missing)} "
                          "(a timm model, or a supported family: see `vprompt models`)")
    return module.eval()  # the PromptedModel freezes what its method does not train



def random_weights_note(spec: BackboneSpec) -> str | None:
    """Why ``spec``'s weights will be random although nothing asked for that (None when they come
    from somewhere, or when an init seed asks for a random network)."""
    if spec.init_seed is not None or not spec.random_init:
        return None
    return (f"backbone {spec.name} has random weights: fine for trying things, meaningless for results; ask for "
            "pretrained weights (--pretrained; pretrained=True) or give a file (--weights; checkpoint=), or an init "
            "seed to mean it (--init-seed; init_seed=)")


def create_backbone(spec: BackboneSpec) -> nn.Module:
    """Build the timm model named by ``spec`` (or a ``zoo:NAME`` / ``robustbench:NAME``), load its
    weights and freeze it."""
    if spec.name.startswith(MODULE_PREFIX):
        raise CheckpointError(f"backbone '{spec.name}' was built by your own code and cannot be rebuilt from its "
                              "name: build it again and pass it, load_prompt(path, backbone=module)")
    if spec.name.startswith(ROBUSTBENCH_PREFIX):
        return robustbench_backbone(spec)
    if zoo.is_zoo_name(spec.name):
        return create_backbone(zoo_spec(spec))
    if spec.name.startswith(TRANSFORMERS_PREFIX):
        from vprompt.families.hf_transformers import transformers_backbone

        if spec.pretrained or spec.checkpoint:
            raise ConfigError(f"{spec.name} takes its weights from the checkpoint it names (a folder written by "
                              "save_pretrained, or ORG/NAME in the local cache): --pretrained and --weights do not apply")
        model = transformers_backbone(spec.name.removeprefix(TRANSFORMERS_PREFIX), spec.kwargs, spec.seed)
        freeze(model)
        return model.eval()
    check_argument_types(spec.name, spec.kwargs)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            with cache_only_when_unreachable() if spec.pretrained else contextlib.nullcontext():
                model = timm_with_zoo().create_model(spec.name, pretrained=spec.pretrained, **spec.kwargs)
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise unknown_model(spec.name) from exc
        raise
    except TypeError as exc:
        raise ConfigError(f"bad model arguments for '{spec.name}': {exc}") from exc
    except Exception as exc:
        if spec.pretrained and type(exc).__module__.startswith("huggingface_hub"):
            raise ConfigError(f"--pretrained needs timm's weights for {spec.name} from the Hugging Face Hub, which "
                              "is not reachable and whose cache does not hold them: fill the cache on a machine with "
                              "the network (HF_HOME or HF_HUB_CACHE point at it), or pass the weights with --weights "
                              "FILE") from exc
        raise
    if spec.checkpoint:
        load_weights(model, Path(spec.checkpoint))
    if spec.input_size is not None:
        model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, *spec.input_size)}
    freeze(model)
    return model.eval()


TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number"}


@functools.cache
def constructor_defaults(name: str) -> tuple[str, dict[str, Any], bool] | None:
    """The class timm builds for model ``name`` (built once, on the meta device), its constructor's
    arguments with their defaults, and whether it takes any other keyword; None when timm does not
    know the name."""
    import inspect

    with torch.device("meta"):
        try:
            cls = type(timm_with_zoo().create_model(name))
        except Exception:  # an unknown name or the like: the real build says what is wrong
            return None
    defaults: dict[str, Any] = {}
    for base in cls.__mro__:  # a subclass passing **kwargs on (DeiT's distilled ViT) takes its base's too
        parameters = inspect.signature(base.__init__).parameters
        for key, p in parameters.items():
            if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD) and key != "self":
                defaults.setdefault(key, p.default)
        if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
            return cls.__name__, defaults, False
    return cls.__name__, defaults, True


def check_argument_types(name: str, kwargs: dict[str, Any]) -> None:
    """Refuse a text value where the model's constructor takes a flag or a number (``img_size=abc``
    would fail deep inside timm, ``qkv_bias=maybe`` would pass as true), naming the argument and
    the type; checked only when some value is text, against the defaults of the model's class."""
    texts = {key: value for key, value in kwargs.items() if isinstance(value, str)}
    found = constructor_defaults(name) if texts else None
    if found is None:
        return
    cls_name, defaults, _ = found
    for key, value in texts.items():
        wanted = type(defaults.get(key))
        if wanted in TYPE_WORDS:
            raise ConfigError(f"model argument {key}={value}: {cls_name} takes {TYPE_WORDS[wanted]} there "
                              f"(default {defaults[key]!r})")


def zoo_twin(name: str, init_seed: int = 0) -> BackboneSpec:
    """The architecture of zoo model ``name`` at random init: the baseline its pretraining must beat."""
    return card_architecture(zoo.find_card(name), init_seed)


def meta_backbone(spec: BackboneSpec) -> nn.Module:
    """The backbone's architecture on the meta device: every shape, no weights (none downloaded,
    read, initialised or hashed), whatever the model's size."""
    if zoo.is_zoo_name(spec.name):
        spec = zoo_spec(spec)
    if spec.name.startswith(ROBUSTBENCH_PREFIX):  # its timm architecture: no weights fetched or read
        name = robustbench_parts(spec.name)[1]
        if name not in ROBUSTBENCH_ARCHITECTURES:
            raise ConfigError(f"no timm equivalent known for RobustBench model '{name}'")
        spec = replace(spec, name=ROBUSTBENCH_ARCHITECTURES[name])
    with torch.device("meta"):
        if spec.name.startswith(TRANSFORMERS_PREFIX):
            from vprompt.families.hf_transformers import transformers_backbone

            return transformers_backbone(spec.name.removeprefix(TRANSFORMERS_PREFIX), spec.kwargs, 0, weights=False)
        return create_backbone(replace(spec, pretrained=False, checkpoint=None))


def zoo_spec(spec: BackboneSpec) -> BackboneSpec:
    """What a ``zoo:NAME`` spec builds: the card's architecture with the card's weights, and the
    spec's own constructor arguments on top."""
    card = zoo.find_card(spec.name)
    architecture = card_architecture(card)
    return replace(architecture, checkpoint=card["weights"], kwargs={**architecture.kwargs, **spec.kwargs})


def card_architecture(card: dict[str, Any], init_seed: int = 0) -> BackboneSpec:
    """A zoo card's timm architecture, source head and input size, without its weights."""
    return BackboneSpec(card["arch"], kwargs={**card["kwargs"], "num_classes": card["num_classes"]},
                        init_seed=init_seed, input_size=card.get("input_size"))


def check_model_name(name: str) -> None:
    """Refuse an unknown backbone name before any work starts (a run would otherwise fail only
    when it builds the model, after writing its data). timm's ``hf-hub:`` and ``local-dir:`` names
    are only known once their config is read, so they pass."""
    if zoo.is_zoo_name(name):
        zoo.find_card(name)
        return
    if name.startswith((ROBUSTBENCH_PREFIX, TRANSFORMERS_PREFIX)):
        return
    timm = timm_with_zoo()
    try:
        source = timm.models.parse_model_name(name)[0]
    except ValueError as exc:  # an unknown NAME: prefix, or a path where a model name belongs
        raise unknown_model(name) from exc
    if source is None and not timm.is_model(name):
        raise unknown_model(name)


def unknown_model(name: str) -> ConfigError:
    return ConfigError(f"unknown timm model '{name}' (see timm.list_models())")


def load_weights(model: nn.Module, path: Path | str) -> None:
    """Load a local checkpoint without executing pickled code."""
    load_state(model, read_state_dict(Path(path)), str(path))


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` (unwrapped from its training wrapper) into ``model``; only a head may be missing."""
    missing, unexpected = model.load_state_dict(unwrap_state_dict(state), strict=False)
    if unexpected or [k for k in missing if not k.startswith("head")]:
        raise CheckpointError(
            f"{source} does not match the backbone: {len(missing)} missing and {len(unexpected)} "
            f"unexpected keys (first: {(missing + unexpected)[:3]})"
        )


WRAPPER_COPIES = ("attacker.", "normalizer.", "normalize.")


def unwrap_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The bare network's weights from a wrapped one: DataParallel's ``module.``, and the wrappers
    around ``model.`` of the robustness library (Salman et al. 2020: ``attacker.*`` and
    ``normalizer.*`` copies) and of RobustBench (``normalize.*``). Their normalisation is
    ImageNet's mean/std, which timm's data config applies inside the PromptedModel instead."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("model.") for k in state) and all(k.startswith(("model.", *WRAPPER_COPIES)) for k in state):
        state = {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    return state


ROBUSTBENCH_ARCHITECTURES = {  # RobustBench ImageNet model → the timm architecture with the same weight names
    "Salman2020Do_R18": "resnet18",
    "Salman2020Do_R50": "resnet50",
    "Salman2020Do_50_2": "wide_resnet50_2",
}


ROBUSTBENCH_THREATS = ("Linf", "L2")


def robustbench_parts(name: str) -> tuple[str, str]:
    """THREAT (Linf by default) and NAME of ``robustbench:[THREAT/]NAME``; another threat is refused."""
    threat, _, model = name.removeprefix(ROBUSTBENCH_PREFIX).rpartition("/")
    if threat and threat not in ROBUSTBENCH_THREATS:
        raise ConfigError(f"RobustBench threat '{threat}' in {name}: choose {' or '.join(ROBUSTBENCH_THREATS)}")
    return threat or "Linf", model


def robustbench_backbone(spec: BackboneSpec) -> nn.Module:
    """``robustbench:[THREAT/]NAME`` (THREAT: Linf by default): a RobustBench ImageNet model's weights
    in the equivalent timm architecture. Needs the optional extra and the network (or RobustBench's
    filled cache in ``$ROBUSTBENCH_MODELS``, default ``~/.cache/robustbench``)."""
    threat, name = robustbench_parts(spec.name)
    if name not in ROBUSTBENCH_ARCHITECTURES:
        raise ConfigError(f"no timm equivalent known for RobustBench model '{name}'; supported: "
                          f"{', '.join(ROBUSTBENCH_ARCHITECTURES)} (or load its weights with --weights)")
    try:
        from robustbench.utils import load_model
    except ImportError as exc:
        raise ConfigError("robustbench: models need the optional extra: pip install 'vprompt[robustbench]'") from exc
    model_dir = os.environ.get("ROBUSTBENCH_MODELS", str(Path.home() / ".cache" / "robustbench"))
    wrapped = load_model(model_name=name, dataset="imagenet", threat_model=threat, model_dir=model_dir)
    backbone = create_backbone(replace(spec, name=ROBUSTBENCH_ARCHITECTURES[name], pretrained=False))
    load_state(backbone, wrapped.state_dict(), spec.name)
    return backbone


def check_weights(path: Path) -> None:
    """Refuse a weights file that does not hold tensors, reading no more of it than needed (a
    safetensors header, a memory-mapped .pt), so a command refuses it before it writes anything."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), "pt"):
                return
        torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001  (a full read decides, and says why in one line)
        read_state_dict(path)


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read tensors from safetensors, or from a ``.pt`` file with ``weights_only=True``."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure is the file's fault, not ours
        kind = ("a safetensors file" if path.suffix == ".safetensors"
                else "a PyTorch file of tensors (read without pickle)")
        raise CheckpointError(f"cannot read checkpoint {path}: it is not {kind}") from exc
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no state dict")
    return state


def freeze(model: nn.Module) -> None:
    for param in model.parameters():
        param.requires_grad_(False)


def data_config(model: nn.Module) -> DataConfig:
    """Mean/std from timm's data config; input size from the model itself when it is fixed.

    timm's pretrained config keeps the default 224 even when ``img_size`` is overridden, so a
    ViT's real size is read from its patch embedding.
    """
    cfg = timm_with_zoo().data.resolve_data_config(model=model)
    size = tuple(cfg["input_size"][1:])
    patch_embed = getattr(model, "patch_embed", None)
    if patch_embed is not None and getattr(patch_embed, "img_size", None) is not None:
        size = tuple(patch_embed.img_size)
    return DataConfig(input_size=size, mean=tuple(cfg["mean"]), std=tuple(cfg["std"]))


def feature_dim(model: nn.Module) -> int:
    return int(model.num_features)


def fingerprint(model: nn.Module) -> str:
    """A short hash of the frozen weights, to refuse prompts trained on another network (``meta``
    for a model built on the meta device, which has shapes but no weights)."""
    if any(tensor.is_meta for tensor in model.state_dict().values()):
        return "meta"
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
