"""peft's tuners as methods: LoRA, DoRA, IA³, OFT, FourierFT and VeRA on the frozen backbone's linear layers.

The baselines every VTAB-1k table puts beside prompts, computed by peft (the maintained library
for them), never re-implemented here: peft injects its layers into the backbone's modules in
place (``inject_adapter_in_model``), and the parameters it adds train with the head while every
weight of the backbone stays frozen. By default a tuner adapts each block's attention projections
and MLP layers, as the backbone's family names them (``TokenFamily.tuner_targets``);
``target_modules`` takes any other pattern, and makes a tuner run on any backbone. peft is an
optional extra (``pip install 'vprompt[peft]'``), imported when such a model is built.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from torch import nn

from vprompt.errors import ConfigError
from vprompt.methods import LinearHeadConfig, Method, register_method, register_method_prefix
from vprompt.validation import above, at_least, below

PEFT_HINT = "pip install 'vprompt[peft]'"


@dataclass
class TunerConfig(LinearHeadConfig):
    """Options every peft tuner takes."""

    target_modules: str | None = None
    """Pattern the full names of the adapted modules must match (peft's regex); default: the
    family's attention projections and MLP layers of every block."""

    def peft_config(self, targets: str, feedforward: str) -> Any:
        """The peft config of this tuner on the modules ``targets`` matches (``feedforward``: the MLP ones)."""
        raise NotImplementedError


@dataclass
class LoRAConfig(TunerConfig):
    """LoRA (Hu et al., 2022): W + (α / r)·B·A beside each adapted layer, B zero at init."""

    r: Annotated[int, at_least(1)] = 8
    """Rank of the update."""
    alpha: Annotated[float, above(0)] = 8.0
    """Scale numerator: the update is multiplied by alpha / r."""
    dropout: Annotated[float, at_least(0), below(1)] = 0.0
    """Dropout on the adapted layer's input, in the update's branch only."""
    use_dora: ClassVar[bool] = False

    def peft_config(self, targets: str, feedforward: str) -> Any:
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout, target_modules=targets,
                          use_dora=self.use_dora)


@dataclass
class DoRAConfig(LoRAConfig):
    """DoRA (Liu et al., 2024): LoRA on the direction of each weight, plus a learned magnitude per output."""

    use_dora: ClassVar[bool] = True


@dataclass
class IA3MethodConfig(TunerConfig):
    """IA³ (Liu et al., 2022): a learned vector scaling each adapted layer's output, or its input
    for the MLP layers."""

    feedforward_modules: str | None = None
    """Pattern of the adapted modules whose input is scaled; default: the family's MLP layers."""

    def peft_config(self, targets: str, feedforward: str) -> Any:
        from peft import IA3Config

        return IA3Config(target_modules=targets, feedforward_modules=self.feedforward_modules or feedforward)


@dataclass
class OFTMethodConfig(TunerConfig):
    """OFT (Qiu et al., 2023): each adapted weight rotated by a learned block-diagonal orthogonal matrix."""

    block_size: Annotated[int, at_least(1)] = 32
    """Side of each orthogonal block; it must divide the adapted layers' input width."""
    small_build: ClassVar[dict[str, Any]] = {"block_size": 4}

    def peft_config(self, targets: str, feedforward: str) -> Any:
        from peft import OFTConfig

        return OFTConfig(r=0, oft_block_size=self.block_size, target_modules=targets)


@dataclass
class FourierFTMethodConfig(TunerConfig):
    """FourierFT (Gao et al., 2024): the weight update as a sparse set of learned 2-D Fourier coefficients."""

    n_frequency: Annotated[int, at_least(1)] = 1000
    """Learned coefficients per adapted layer (at most its number of weights)."""
    scaling: Annotated[float, above(0)] = 150.0
    """Scale of the update, peft's default for vision."""
    small_build: ClassVar[dict[str, Any]] = {"n_frequency": 16}

    def peft_config(self, targets: str, feedforward: str) -> Any:
        from peft import FourierFTConfig

        return FourierFTConfig(n_frequency=self.n_frequency, scaling=self.scaling, target_modules=targets)


@dataclass
class VeRAMethodConfig(TunerConfig):
    """VeRA (Kopiczko et al., 2024): one pair of frozen random projections shared by every adapted
    layer, scaled per layer by two learned vectors (one per rank, one per output)."""

    r: Annotated[int, at_least(1)] = 256
    """Rank of the shared projections."""
    dropout: Annotated[float, at_least(0), below(1)] = 0.0
    """Dropout on the adapted layer's input, in the update's branch only."""
    d_initial: Annotated[float, above(0)] = 0.1
    """Initial value of the per-rank scaling vector."""
    projection_seed: Annotated[int, at_least(0)] = 0
    """Seed of the shared projections: a checkpoint stores only the learned vectors and draws the
    projections again from it."""

    def peft_config(self, targets: str, feedforward: str) -> Any:
        from peft import VeraConfig

        return VeraConfig(r=self.r, vera_dropout=self.dropout, d_initial=self.d_initial,
                          projection_prng_key=self.projection_seed, target_modules=targets)


def require_peft() -> None:
    """Refuse in one line, naming the extra, when peft is not installed."""
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError(f"the peft tuners need peft: {PEFT_HINT}") from None


def inject_tuner(config: TunerConfig, backbone: nn.Module) -> None:
    """Put the tuner's layers into ``backbone`` in place, on its family's (or the given) modules."""
    from vprompt.families import find_family

    require_peft()
    from peft import inject_adapter_in_model
    from peft.mapping import PEFT_TYPE_TO_TUNER_MAPPING

    family = find_family(backbone)
    if config.target_modules is None and family is None:
        raise ConfigError(f"{type(backbone).__name__} is of no family with default target modules: pass "
                          "--method-arg target_modules=PATTERN (a regex the adapted modules' full names match)")
    targets = config.target_modules or family.tuner_targets
    feedforward = family.tuner_feedforward if family is not None else targets
    try:
        peft_config = config.peft_config(targets, feedforward)
        tuner = PEFT_TYPE_TO_TUNER_MAPPING.get(peft_config.peft_type)
        if getattr(tuner, "uses_shared_state", False):
            # VeRA's projections live on the tuner object, which inject_adapter_in_model drops (so it
            # refuses such tuners); every adapted layer holds a reference to them, which is all they need.
            tuner(backbone, peft_config, adapter_name="default")
        else:
            inject_adapter_in_model(peft_config, backbone)
    except (ValueError, TypeError) as exc:  # peft's refusal: an option it needs or of another type, no module matched
        raise ConfigError(f"peft could not adapt {type(backbone).__name__}: {exc}") from None


PEFT_PREFIX = "peft:"
NOT_OPTIONS = frozenset({"task_type", "peft_type", "auto_mapping", "peft_version", "base_model_name_or_path",
                         "revision", "inference_mode", "target_modules", "modules_to_save"})
"""Fields of a peft config that are peft's bookkeeping, or set by vprompt (the targets)."""


def peft_method(name: str) -> Method:
    """``peft:KIND``: any tuner peft injects into a model, its plain options as the method's options
    (``--method-arg r=4``), with the family's default targets like the named tuners."""
    import dataclasses

    require_peft()
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING

    # A tuner that adapts a model's layers is told which by target_modules (prompt learning wraps a model).
    layer_tuners = {str(t).split(".")[-1].lower(): cls for t, cls in PEFT_TYPE_TO_CONFIG_MAPPING.items()
                    if "target_modules" in {f.name for f in dataclasses.fields(cls)}}
    kind = name.removeprefix(PEFT_PREFIX)
    peft_cls = layer_tuners.get(kind.lower())
    if peft_cls is None:
        known = ", ".join(sorted(PEFT_PREFIX + tuner for tuner in layer_tuners))
        raise ConfigError(f"peft has no tuner '{kind}' that adapts a model's layers (peft's: {known})")
    plain = [f for f in dataclasses.fields(peft_cls)
             if f.name not in NOT_OPTIONS and f.default is not dataclasses.MISSING
             and (f.default is None or isinstance(f.default, (bool, int, float, str)))]

    def peft_config(self: TunerConfig, targets: str, feedforward: str) -> Any:
        return peft_cls(target_modules=targets, **{f.name: getattr(self, f.name) for f in plain})

    config_cls = dataclasses.make_dataclass(
        f"Peft{kind.capitalize()}Config", [(f.name, Any, dataclasses.field(default=f.default)) for f in plain],
        bases=(TunerConfig,), namespace={"peft_config": peft_config, "__doc__": f"peft's {peft_cls.__name__}."})
    return Method(name, config_cls, adapt_backbone=inject_tuner, summary=f"peft's {kind} tuner")


register_method_prefix(PEFT_PREFIX, peft_method)

for _name, _config, _summary in (
    ("lora", LoRAConfig, "LoRA on the attention and MLP layers (peft)"),
    ("dora", DoRAConfig, "DoRA, LoRA with learned magnitudes (peft)"),
    ("ia3", IA3MethodConfig, "IA³ scaling vectors (peft)"),
    ("oft", OFTMethodConfig, "OFT orthogonal rotations (peft)"),
    ("fourierft", FourierFTMethodConfig, "FourierFT spectral updates (peft)"),
    ("vera", VeRAMethodConfig, "VeRA: shared random projections, learned scaling vectors (peft)"),
):
    register_method(Method(_name, _config, adapt_backbone=inject_tuner, summary=_summary))


def merged_copy(model: nn.Module) -> nn.Module | None:
    """A copy of ``model`` with every peft layer folded into the weight it adapts and unwrapped, so
    an export holds plain layers; None when ``model`` has no peft layer or one cannot be merged."""
    try:
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return None
    if not any(isinstance(module, BaseTunerLayer) for module in model.modules()):
        return None
    copy = deepcopy(model)
    for name, module in list(copy.named_modules()):
        if isinstance(module, BaseTunerLayer):
            try:
                module.merge(safe_merge=True)
            except (NotImplementedError, ValueError):
                return None
            parent, _, child = name.rpartition(".")
            setattr(copy.get_submodule(parent), child, module.get_base_layer())
    return copy
