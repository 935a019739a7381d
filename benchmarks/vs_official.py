"""VPT and VAPT in vprompt against their official code (KMnP/vpt, Minhchuyentoancbn/VAPT): the same
network, the same numbers; then VPT's training step's time and memory as ratios ours ÷ official.

1. **Same network.** One random-init ViT (fixed seed, no download) is built by vprompt
   (``create_model(..., "vpt-shallow" | "vpt-deep", prompt_len=p, head_norm=False)``) and by the
   official code (``PromptedVisionTransformer`` with ``num_classes=-1``, the way their
   ``build_vit_sup_models`` builds it, followed by their ``MLP`` head with ``MLP_NUM`` = 0, i.e. one
   linear layer, as their ``vit_models.ViT`` does). Every tensor of theirs is set from ours
   (timm's fused ``qkv`` split into their query/key/value) through a strict ``load_state_dict``, so
   none is left at its own init. Both put the prompts after CLS and before the patches, carry no
   position embedding on them, replace them at every block (deep) and pool the CLS token after the
   final norm; both train exactly the prompts and the head (the trainable counts are in the rows).
   Our head runs without feature standardisation (``head_norm=False``), so that it is their
   single linear layer.
2. **Parity.** In eval mode, one batch in [0, 1]: ours normalises inside the model, theirs gets
   the normalised batch. The largest logit difference must stay within ``--tolerance`` (1e-4) for
   VPT-shallow and VPT-deep, and the gradients of one backward pass (every trainable tensor,
   compared per kind of tensor) must agree too; otherwise the script exits with status 1 before
   timing anything.
3. **Cost.** VPT-deep training steps (forward, cross-entropy, backward, SGD step on the prompts
   and head only; both sides use their solver's defaults: SGD, lr 0.01, momentum 0.9, weight
   decay 1e-4), all variants interleaved in one run (``_common.interleaved_timings``):
   equal settings (both fp32, eager; ours with its lean forward, which skips the rows whose
   output is never read, and ours on the full path, ``set_lean(False)``, which does the official
   code's work), and ours at its best: the precision
   ``vprompt.hardware.resolve_precision("auto")`` picks, eager and under ``torch.compile``
   (compilation happens in the untimed warm-up rounds), plus explicit bf16 autocast (``auto``
   stays fp32 on CPUs without AMX), each on the attention path ``vprompt.train`` takes (timm's
   explicit matmul-softmax on a CPU under bf16, torch's fused kernel elsewhere). The official code has nothing else to offer: its trainer
   (``src/engine/trainer.py``) has no autocast and no compile, so its best settings are fp32 eager.
   Ratios are medians of per-round ratios with their interquartile range. Memory as
   ``step_cost.py`` measures it: on CPU counted (weights + gradients + optimizer state + the
   storages autograd saves), on CUDA the allocator peak of one step.

**VAPT** (``--official-vapt``, parity only). Our ``vapt`` with every option at the official
default (``src/configs/config.py``: shared feature projector of width 8, one K = 2 kernel shared
by all channels, padding 0, relu, static prompts at block 0 only (``VPT_DEPTH`` 1), residual;
dropouts as theirs, off in eval mode anyway; ``head_norm=False``) against their
``PromptedVisionTransformer`` built as ``build_vit_sup_models`` builds it with ``ADAPTIVE`` and
``DEEP`` on, and the same ``MLP`` head. Every tensor of theirs is set from ours as for VPT, plus
the static prompts, each generated layer's LayerNorm, conv kernel and token projector, and the
shared feature projector. Both initialise the token projectors at zero, which makes every
generated prompt 0 and the conv and feature projector invisible to the check, so ours get
``nn.Linear``'s random init first. Their generator is hard-coded to a 14×14 patch grid, so
``--quick`` uses a small ViT at 224² with patch 16 for this row. The rows carry ``"method":
"vapt"``, with the same tolerances and the same exit status as VPT's.

The official code is never copied into this repository: it is imported from the checkouts given
with ``--official-vpt`` and ``--official-vapt`` (their ``src`` packages; both are named ``src``, so
each is imported with the name free and then lets go of it). At least one of the two is needed;
without ``--official-vpt`` nothing is timed. Importing their ViT needs

    pip install ml_collections simplejson termcolor iopath

(its ViT configs are ``ml_collections`` objects; its logging module imports the other three;
Python's ``turtle``/``tkinter``, ``scipy`` and ``torchvision`` must be importable). Its yacs/fvcore
config is not needed: the few prompt options its constructor reads are passed as a namespace.

    python benchmarks/vs_official.py --quick --official-vpt /path/to/vpt
    python benchmarks/vs_official.py --official-vpt /path/to/vpt --out docs/results/vs_official.json
    python benchmarks/vs_official.py --parity-only --official-vapt /path/to/VAPT --batch 2
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from _common import (Column, Row, base_parser, interleaved_timings, markdown_table, paired_ratios, quartiles, setup,
                     write_outputs)
from step_cost import counted_memory, cuda_peak_memory, device_name
from vprompt.backbones import BackboneSpec
from vprompt.hardware import resolve_precision, training_attention
from vprompt.model import PromptedModel, create_model

AUTOCAST = {"no": None, "bf16": torch.bfloat16}
# The official solver's defaults (src/configs/config.py), used on both sides.
SGD = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}


@dataclass(frozen=True)
class Arch:
    """One ViT, as timm kwargs for ours and as the fields of the official ViT config."""

    label: str
    image: int
    patch: int
    depth: int
    width: int
    heads: int
    timm_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def mlp_dim(self) -> int:
        return 4 * self.width


VIT_B16 = Arch("ViT-B/16 224²", image=224, patch=16, depth=12, width=768, heads=12)
QUICK = Arch("ViT q64-p8-d4-w192", image=64, patch=8, depth=4, width=192, heads=3,
             timm_kwargs={"img_size": 64, "patch_size": 8, "depth": 4, "embed_dim": 192, "num_heads": 3})
# The official VAPT generator reshapes the patches to a hard-coded 14×14 grid: its quick size keeps 224² / 16.
QUICK_VAPT = Arch("ViT q224-p16-d4-w192", image=224, patch=16, depth=4, width=192, heads=3,
                  timm_kwargs={"depth": 4, "embed_dim": 192, "num_heads": 3})


@dataclass(frozen=True)
class Official:
    """The three things of the official code this benchmark uses."""

    prompted_vit: type[nn.Module]
    configs: dict[str, Any]
    mlp_head: type[nn.Module]


@dataclass(frozen=True)
class Checkout:
    """An official repository: the option that names its checkout, and a class of its
    ``vit_prompt/vit.py`` that tells it apart (VAPT's file also holds VPT's classes)."""

    option: str
    repo: str
    marker: str


VPT_CHECKOUT = Checkout("--official-vpt", "KMnP/vpt", "PromptedVisionTransformer")
VAPT_CHECKOUT = Checkout("--official-vapt", "Minhchuyentoancbn/VAPT", "PromptedTransformerAdaptive")
OFFICIAL_DEPS = "ml_collections simplejson termcolor iopath"
OFFICIAL_MODULES = ("src.models.vit_prompt.vit", "src.models.vit_backbones.vit", "src.models.mlp")


def release_src() -> None:
    """Forget every imported ``src`` module: both official repositories are a package named ``src``."""
    for name in [name for name in sys.modules if name == "src" or name.startswith("src.")]:
        del sys.modules[name]


def import_modules(root: Path) -> list[ModuleType]:
    """``OFFICIAL_MODULES`` from ``root`` alone, leaving the name ``src`` free afterwards: the
    imported modules keep working (they hold their globals), and the other checkout can be imported
    the same way."""
    release_src()
    sys.path.insert(0, str(root))
    try:
        return [importlib.import_module(name) for name in OFFICIAL_MODULES]
    except ModuleNotFoundError as exc:
        sys.exit(f"the official code needs {exc.name}: pip install {OFFICIAL_DEPS}")
    finally:
        sys.path.remove(str(root))
        release_src()


def import_official(root: Path, checkout: Checkout) -> Official:
    """Import the official modules from the user's checkout: their code is CC-BY-NC and never
    copied into this repository."""
    if not (root / "src" / "models" / "vit_prompt" / "vit.py").is_file():
        sys.exit(f"{checkout.option} {root}: no src/models/vit_prompt/vit.py there "
                 f"(give the root of a {checkout.repo} checkout)")
    prompt, backbone, head = import_modules(root)
    if not Path(prompt.__file__).resolve().is_relative_to(root.resolve()):
        sys.exit(f"'src.models.vit_prompt.vit' was imported from {prompt.__file__}, not from {root}")
    if not hasattr(prompt, checkout.marker):
        sys.exit(f"{checkout.option} {root}: its vit_prompt/vit.py has no {checkout.marker} "
                 f"(give the root of a {checkout.repo} checkout)")
    return Official(prompt.PromptedVisionTransformer, backbone.CONFIGS, head.MLP)


def official_model_type(official: Official, arch: Arch) -> str:
    """A key of their CONFIGS for ``arch``: their ViT-B/16 entry, or one registered for the quick size.

    Their constructor looks the config up by name, so a small one has to be added to that dict
    (at run time, in this process only)."""
    if arch == VIT_B16:
        name = "sup_vitb16_224"
    else:
        name = f"vs_official_{arch.label}"
        config = official.configs["sup_vitb16_224"].copy_and_resolve_references()
        config.patches.size = (arch.patch, arch.patch)
        config.hidden_size = arch.width
        config.transformer.mlp_dim = arch.mlp_dim
        config.transformer.num_heads = arch.heads
        config.transformer.num_layers = arch.depth
        official.configs[name] = config
    config = official.configs[name]
    found = (config.hidden_size, config.transformer.num_layers, config.transformer.num_heads,
             config.transformer.mlp_dim, tuple(config.patches.size))
    if found != (arch.width, arch.depth, arch.heads, arch.mlp_dim, (arch.patch, arch.patch)):
        sys.exit(f"official config {name} is {found}, expected {arch}")
    return name


# VAPT's generator options at their defaults (MODEL.PROMPT in the VAPT repository's src/configs/config.py).
VAPT_THEIRS = {"ADAPTIVE": True, "DROPOUT_MLP": 0.1, "ACTIVATION": "relu", "HIDDEN_DIM": 8, "CONV": True, "KERNEL": 2,
               "PADDING": 0, "VPT_DEPTH": 1, "LEARNABLE_SCALE": False, "CHANNELWISE": True, "FEAT_PROJECTOR": True,
               "SHARE_PROJECTOR": True}
# Our vapt options at the same choices, in VAPT_THEIRS' order (conv_dropout and the residual are fixed in theirs;
# prompt_dropout is their DROPOUT, 0.0; conv_init is theirs, though the loaded weights make init irrelevant).
VAPT_OURS = {"projector_dropout": 0.1, "activation": "relu", "projector_width": 8, "conv": True, "kernel": 2,
             "padding": 0, "static_layers": 1, "learnable_scale": False, "channelwise": True, "projector": "shared",
             "conv_dropout": 0.1, "residual": True, "prompt_dropout": 0.0, "conv_init": "normal"}


def prompt_config(prompt_len: int, method: str) -> SimpleNamespace:
    """The prompt options their constructors read (the rest of their yacs config is unused);
    VAPT is their deep prompt config with ``ADAPTIVE`` and its generator options."""
    config = SimpleNamespace(NUM_TOKENS=prompt_len, DEEP=method != "vpt-shallow", DROPOUT=0.0, PROJECT=-1,
                             LOCATION="prepend", INITIATION="random", NUM_DEEP_LAYERS=None, DEEP_SHARED=False,
                             VIT_POOL_TYPE="original", ADAPTIVE=False)
    return SimpleNamespace(**vars(config) | VAPT_THEIRS) if method == "vapt" else config


def build_ours(arch: Arch, method: str, args: argparse.Namespace) -> PromptedModel:
    """Our model as vprompt trains it, except a plain linear head (theirs has no standardisation)."""
    torch.manual_seed(args.seed)  # prompts and head; the backbone comes from the spec's init_seed
    spec = BackboneSpec("vit_base_patch16_224", kwargs=arch.timm_kwargs, init_seed=args.seed)
    options = VAPT_OURS if method == "vapt" else {}
    model = create_model(spec, method, args.num_classes, prompt_len=args.prompt_len, head_norm=False, **options)
    if method == "vapt":
        for generator in model.token_prompt.generators:
            # zero-init on both sides: every generated prompt would be 0, hiding the conv and the projector
            generator.to_prompts.reset_parameters()
    return model


View = Callable[[torch.Tensor], torch.Tensor]
Names = dict[str, tuple[nn.Parameter, View]]
"""Their state-dict name → our parameter, and how its tensor (and so its gradient) becomes theirs."""


def whole(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def backbone_names(ours: PromptedModel) -> Names:
    """The ViT (``0.`` encoder) and the linear head (``1.``), the same for every method."""
    vit, fc = ours.backbone, ours.head.fc
    names: Names = {
        "0.transformer.embeddings.patch_embeddings.weight": (vit.patch_embed.proj.weight, whole),
        "0.transformer.embeddings.patch_embeddings.bias": (vit.patch_embed.proj.bias, whole),
        "0.transformer.embeddings.cls_token": (vit.cls_token, whole),
        "0.transformer.embeddings.position_embeddings": (vit.pos_embed, whole),
        "0.transformer.encoder.encoder_norm.weight": (vit.norm.weight, whole),
        "0.transformer.encoder.encoder_norm.bias": (vit.norm.bias, whole),
        "1.last_layer.weight": (fc.weight, whole),
        "1.last_layer.bias": (fc.bias, whole),
    }
    for index, block in enumerate(vit.blocks):
        theirs = f"0.transformer.encoder.layer.{index}"
        for kind in ("weight", "bias"):
            qkv = getattr(block.attn.qkv, kind)  # timm's qkv rows: all queries, then keys, then values
            names |= {f"{theirs}.attn.{part}.{kind}": (qkv, lambda t, i=i: t.chunk(3)[i])
                      for i, part in enumerate(("query", "key", "value"))}
            names |= {
                f"{theirs}.attn.out.{kind}": (getattr(block.attn.proj, kind), whole),
                f"{theirs}.attention_norm.{kind}": (getattr(block.norm1, kind), whole),
                f"{theirs}.ffn_norm.{kind}": (getattr(block.norm2, kind), whole),
                f"{theirs}.ffn.fc1.{kind}": (getattr(block.mlp.fc1, kind), whole),
                f"{theirs}.ffn.fc2.{kind}": (getattr(block.mlp.fc2, kind), whole),
            }
    return names


def vpt_names(ours: PromptedModel) -> Names:
    """VPT's prompts: ours are one (blocks, p, d) tensor, theirs block 0's and the deep ones apart."""
    prompts = ours.token_prompt.prompts
    names: Names = {"0.transformer.prompt_embeddings": (prompts, lambda t: t[:1])}
    if len(prompts) > 1:
        names["0.transformer.deep_prompt_embeddings"] = (prompts, lambda t: t[1:])
    return names


def vapt_names(ours: PromptedModel) -> Names:
    """VAPT's static prompts, per generated layer its LayerNorm, conv kernel and token projector
    (ours counts from the first generated block, theirs from ``VPT_DEPTH``, both 0), and the
    shared feature projector (their ``nn.Sequential`` of down, activation, up)."""
    prompt = ours.token_prompt
    if prompt.static_deep is not None or len(prompt.projectors) != 1:
        raise ValueError("the VAPT mapping covers the official defaults: static_layers=1, one shared projector")
    projector = prompt.projectors[0]
    names: Names = {
        "0.transformer.prompt_embeddings": (prompt.static, lambda t: t.unsqueeze(0)),
        "0.transformer.deep_prompt_embeddings_mlp.block.0.weight": (projector.down.weight, whole),
        "0.transformer.deep_prompt_embeddings_mlp.block.2.weight": (projector.up.weight, whole),
    }
    for index, generator in enumerate(prompt.generators):
        norm, downsample = f"0.transformer.deep_prompt_norm.{index}", f"0.transformer.deep_prompt_downsample.{index}"
        names |= {
            f"{norm}.weight": (generator.norm.weight, whole),
            f"{norm}.bias": (generator.norm.bias, whole),
            f"{downsample}.conv.kernel": (generator.conv.weight, whole),  # their shared kernel, (1, 1, K, K) as ours
            f"{downsample}.linear.weight": (generator.to_prompts.weight, whole),
            f"{downsample}.linear.bias": (generator.to_prompts.bias, whole),
        }
    return names


PROMPT_NAMES: dict[str, Callable[[PromptedModel], Names]] = {
    "vpt-shallow": vpt_names, "vpt-deep": vpt_names, "vapt": vapt_names,
}


def official_names(ours: PromptedModel, method: str) -> Names:
    return backbone_names(ours) | PROMPT_NAMES[method](ours)


def build_official(official: Official, arch: Arch, ours: PromptedModel, method: str, prompt_len: int) -> nn.Sequential:
    """Their encoder and head holding our weights, with only prompts and head trainable (their
    ``TRANSFER_TYPE: prompt``: parameters named ``prompt``, plus the head outside the encoder;
    for VAPT that takes the generators and the feature projector too)."""
    encoder = official.prompted_vit(prompt_config(prompt_len, method), official_model_type(official, arch),
                                    img_size=arch.image, num_classes=-1)
    head = official.mlp_head(input_dim=arch.width, mlp_dims=[ours.num_classes], special_bias=True)
    model = nn.Sequential(encoder, head)
    state = {name: view(param).detach().clone() for name, (param, view) in official_names(ours, method).items()}
    model.load_state_dict(state, strict=True)  # every tensor of theirs is one of ours
    for name, param in encoder.named_parameters():
        param.requires_grad_("prompt" in name)
    return model


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest elementwise difference relative to the largest magnitude (gradients vary in scale)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def gradient_differences(ours: PromptedModel, theirs: nn.Sequential, names: Names) -> dict[str, float]:
    """The relative gradient difference per kind of our trainable tensor (layers pooled, e.g. every
    generator's conv kernel; our name with ``*`` for the layer). A tensor trainable on one side only,
    or with no gradient, is infinitely different."""
    our_names = {param: name for name, param in ours.named_parameters()}
    pairs: dict[str, list[tuple[torch.Tensor | None, torch.Tensor | None]]] = {}
    for their_name, param in theirs.named_parameters():
        ours_param, view = names[their_name]
        if param.requires_grad or ours_param.requires_grad:
            group = re.sub(r"\.\d+\.", ".*.", our_names[ours_param])
            ours_grad = None if ours_param.grad is None else view(ours_param.grad)
            pairs.setdefault(group, []).append((ours_grad, param.grad))
    mapped = {param for param, _ in names.values()}
    for name, param in ours.named_parameters():  # a trainable tensor of ours that theirs does not hold
        if param.requires_grad and param not in mapped:
            pairs[name] = [(param.grad, None)]
    return {group: pooled_difference(found) for group, found in pairs.items()}


def pooled_difference(found: list[tuple[torch.Tensor | None, torch.Tensor | None]]) -> float:
    """``relative_difference`` over a group's (ours, theirs) gradients flattened together, so that
    the layers share one scale; infinite when a side has none."""
    if any(ours is None or theirs is None for ours, theirs in found):
        return float("inf")
    return relative_difference(torch.cat([ours.flatten() for ours, _ in found]),
                               torch.cat([theirs.flatten() for _, theirs in found]))


def parity_row(official: Official, arch: Arch, method: str, args: argparse.Namespace, device: torch.device) -> Row:
    """Logits and one backward pass of both models in eval mode on one batch."""
    ours = build_ours(arch, method, args).to(device).eval()
    theirs = build_official(official, arch, ours, method, args.prompt_len).to(device).eval()
    images, labels = batch(arch, args, device)
    ours_logits = ours(images)
    theirs_logits = theirs((images - ours.mean) / ours.std)
    F.cross_entropy(ours_logits, labels).backward()
    F.cross_entropy(theirs_logits, labels).backward()
    grads = gradient_differences(ours, theirs, official_names(ours, method))
    logit_diff = float((ours_logits - theirs_logits).detach().abs().max())
    return {
        "kind": "parity",
        "model": arch.label,
        "method": method,
        "max_abs_logit_diff": logit_diff,
        "max_abs_logit": float(theirs_logits.detach().abs().max()),
        "max_rel_grad_diff": max(grads.values()),
        "rel_grad_diff": grads,
        "tolerance": args.tolerance,
        "parity": logit_diff <= args.tolerance and max(grads.values()) <= args.grad_tolerance,
        "trainable_params_ours": sum(p.numel() for p in trainable(ours)),
        "trainable_params_official": sum(p.numel() for p in trainable(theirs)),
        "prompt_len": args.prompt_len,
        "num_classes": args.num_classes,
        "batch": args.batch,
        "device": device_name(device),
        "torch": torch.__version__,
    }


def batch(arch: Arch, args: argparse.Namespace, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The same images in [0, 1] and labels for every model."""
    generator = torch.Generator().manual_seed(args.seed)
    images = torch.rand(args.batch, 3, arch.image, arch.image, generator=generator)
    labels = torch.randint(0, args.num_classes, (args.batch,), generator=generator)
    return images.to(device), labels.to(device)


@dataclass
class Side:
    """One timed variant. Its fields are what ``step_cost``'s memory counters read (``model``,
    ``trainable``, ``optimizer``, ``loss``, ``train_step``)."""

    model: nn.Module
    forward: Callable[[torch.Tensor], torch.Tensor]
    """The model itself, or its ``torch.compile`` wrapper."""
    trainable: list[nn.Parameter]
    optimizer: torch.optim.Optimizer
    images: torch.Tensor
    labels: torch.Tensor
    precision: str

    def loss(self, images: torch.Tensor) -> torch.Tensor:
        """The loss under the precision's autocast, on the attention path ``vprompt.train`` takes
        (timm's explicit one on a CPU under bf16; the official ViT has only its explicit path)."""
        dtype = AUTOCAST[self.precision]
        with torch.autocast(images.device.type, dtype=dtype or torch.float32, enabled=dtype is not None), \
                training_attention(self.model, images.device.type, self.precision):
            logits = self.forward(images)
        return F.cross_entropy(logits.float(), self.labels)

    def train_step(self, loss_of: Callable[[torch.Tensor], torch.Tensor] | None = None) -> None:
        """Forward, zero grads, backward, SGD step (the order ``vprompt.train`` uses)."""
        loss = (loss_of or self.loss)(self.images)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def make_side(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, precision: str, compiled: bool) -> Side:
    params = trainable(model)
    model.train()
    return Side(model, torch.compile(model) if compiled else model, params, torch.optim.SGD(params, **SGD),
                images, labels, precision)


@dataclass(frozen=True)
class Variant:
    """A timed configuration: whose code, at which precision, compiled or not."""

    code: str
    precision: str
    compiled: bool = False
    lean: bool = True
    """Ours with the lean forward (the default) or every row through every block (``set_lean(False)``)."""

    @property
    def name(self) -> str:
        precision = "fp32" if self.precision == "no" else self.precision
        return f"{self.code} {precision} {'compiled' if self.compiled else 'eager'}{'' if self.lean else ' full path'}"


def variants(auto: str, compile_: bool) -> list[Variant]:
    """Official fp32 eager first (every ratio's denominator), then ours: fp32 eager (lean, and
    the full path, which does the official code's work), ``auto`` eager and compiled, bf16 eager
    (each once: ``auto`` = fp32 is not timed twice)."""
    found = [Variant("official", "no"), Variant("ours", "no"), Variant("ours", "no", lean=False), Variant("ours", auto)]
    if compile_:
        found.append(Variant("ours", auto, compiled=True))
    found.append(Variant("ours", "bf16"))
    return list(dict.fromkeys(found))


def timing_rows(official: Official, arch: Arch, args: argparse.Namespace, device: torch.device) -> list[Row]:
    """Time every variant of VPT-deep in interleaved rounds; one row per comparison with the official code."""
    auto = resolve_precision("auto", device)
    if auto not in AUTOCAST:
        sys.exit(f"precision 'auto' resolved to {auto}, which this benchmark does not time")
    images, labels = batch(arch, args, device)
    sides: dict[Variant, Side] = {}
    for variant in variants(auto, not args.no_compile):
        ours = build_ours(arch, "vpt-deep", args).to(device)
        ours.set_lean(variant.lean)
        model = ours
        if variant.code == "official":
            model = build_official(official, arch, ours, "vpt-deep", args.prompt_len).to(device)
        sides[variant] = make_side(model, images, labels, variant.precision, variant.compiled)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = interleaved_timings({v.name: s.train_step for v, s in sides.items()}, rounds=args.rounds,
                                warmup=args.warmup, sync=sync)
    memory = {v: measure_memory(side, device) for v, side in sides.items()}
    reference = Variant("official", "no")
    best = min((v for v in sides if v.code == "ours" and v.precision == auto and v.lean),
               key=lambda v: quartiles(times[v.name])[1])
    load = round(os.getloadavg()[0], 2)
    rows = []
    for variant, side in sides.items():
        if variant == reference:
            continue
        q1, ratio, q3 = quartiles(paired_ratios(times[variant.name], times[reference.name]))
        rows.append({
            "kind": "timing",
            "model": arch.label,
            "method": "vpt-deep",
            "settings": settings_label(variant, auto),
            "ours": variant.name,
            "ours_precision": variant.precision,
            "ours_compiled": variant.compiled,
            "ours_best": variant == best,
            "ours_lean": variant.lean,
            "official": reference.name,
            "auto_precision": auto,
            "step_ratio_vs_official": round(ratio, 3),
            "step_ratio_vs_official_q1": round(q1, 3),
            "step_ratio_vs_official_q3": round(q3, 3),
            "mem_ratio_vs_official": round(memory[variant] / memory[reference], 3) if memory[variant] is not None else None,
            "step_ms_ours": round(quartiles(times[variant.name])[1] * 1e3, 2),
            "step_ms_official": round(quartiles(times[reference.name])[1] * 1e3, 2),
            "peak_bytes_ours": memory[variant],
            "peak_bytes_official": memory[reference],
            "memory_source": memory_source(device),
            "trainable_params_ours": sum(p.numel() for p in side.trainable),
            "trainable_params_official": sum(p.numel() for p in sides[reference].trainable),
            "prompt_len": args.prompt_len,
            "num_classes": args.num_classes,
            "batch": args.batch,
            "image_size": arch.image,
            "optimizer": "SGD lr 0.01 momentum 0.9 weight decay 1e-4 (both)",
            "rounds": args.rounds,
            "warmup_rounds": args.warmup,
            "device_type": device.type,
            "device": device_name(device),
            "threads": args.threads,
            "torch": torch.__version__,
            "load_avg_1m": load,
        })
    return rows


def settings_label(variant: Variant, auto: str) -> str:
    """Which comparison a row belongs to: equal settings, ours at ``auto``, or explicit bf16."""
    if not variant.lean:
        return "equal, ours on the full path (every row through every block)"
    if variant.precision == "no" and not variant.compiled:
        return "equal (fp32 eager)" + (" = ours auto" if auto == "no" else "")
    if variant.precision == auto:
        return f"best: ours auto ({auto})"
    return "ours bf16 autocast"


def measure_memory(side: Side, device: torch.device) -> int | None:
    """``step_cost``'s measure, or None for a compiled variant on CPU: under autograd's
    saved-tensor hooks the compiled model runs its eager graph, so the count would be eager's."""
    if device.type == "cuda":
        return cuda_peak_memory(side, reference=False)
    if side.forward is not side.model:
        return None
    return counted_memory(side, reference=False)


def memory_source(device: torch.device) -> str:
    return "cuda max_memory_allocated" if device.type == "cuda" else "saved-tensors accounting (CPU)"


def parity_table(parity: list[Row]) -> str:
    """Logit and gradient differences, with the trainable counts of both sides."""
    first = parity[0]
    has_vapt = any(r["method"] == "vapt" for r in parity)
    codes = "; ".join(code for code, shown in (("VPT: KMnP/vpt", any(r["method"] != "vapt" for r in parity)),
                                               ("VAPT: Minhchuyentoancbn/VAPT", has_vapt)) if shown)
    vapt_parts = "; VAPT's generators and feature projector too" if has_vapt else ""
    columns: list[Column] = [
        ("model", lambda r: r["model"]),
        ("method", lambda r: r["method"]),
        ("max abs. Δ logit", lambda r: f"{r['max_abs_logit_diff']:.1e}"),
        ("max abs. logit", lambda r: f"{r['max_abs_logit']:.2f}"),
        ("max rel. Δ grad", lambda r: f"{r['max_rel_grad_diff']:.1e}"),
        ("trainable ours / official", lambda r: f"{r['trainable_params_ours']:,} / {r['trainable_params_official']:,}"),
    ]
    caption = (
        f"Parity with the official code ({codes}): the same random-init ViT "
        f"in both, our weights, prompts (p = {first['prompt_len']}{vapt_parts}) and linear head copied into "
        f"theirs; eval mode, one batch of {first['batch']}, "
        f"{first['num_classes']} classes, on {first['device']}; gradients of one backward pass (every "
        f"trainable tensor) relative to their largest magnitude, the largest over the kinds of tensor."
    )
    return caption + "\n\n" + markdown_table(parity, columns)


def median_rows(timing: list[Row]) -> list[Row]:
    """One row per variant: the median over runs of each run's step ratio (and of the memory
    ratio, which is counted, not timed), with every run's ratio and interquartile range."""
    rows = []
    for ours in dict.fromkeys(r["ours"] for r in timing):
        runs = [r for r in timing if r["ours"] == ours]
        memory = [r["mem_ratio_vs_official"] for r in runs if r["mem_ratio_vs_official"] is not None]
        rows.append({**runs[0], "kind": "timing median", "runs": len(runs),
                     "ours_best": sum(r["ours_best"] for r in runs) > len(runs) / 2,  # best in most runs
                     "step_ratio_vs_official": round(statistics.median(r["step_ratio_vs_official"] for r in runs), 3),
                     "step_ratios_per_run": [r["step_ratio_vs_official"] for r in runs],
                     "step_iqr_per_run": [[r["step_ratio_vs_official_q1"], r["step_ratio_vs_official_q3"]] for r in runs],
                     "mem_ratio_vs_official": round(statistics.median(memory), 3) if memory else None,
                     "step_ms_ours": statistics.median(r["step_ms_ours"] for r in runs),
                     "step_ms_official": statistics.median(r["step_ms_official"] for r in runs),
                     "load_avg_1m": max(r["load_avg_1m"] for r in runs)})
    return rows


def timing_table(timing: list[Row]) -> str:
    """Step-time and memory ratios ours ÷ official (absolute step times only on a GPU), the median
    of the runs, each run's ratio and interquartile range beside it."""
    first = timing[0]

    def per_run(row: Row) -> str:
        return "; ".join(f"{ratio:.2f} ({q1:.2f}–{q3:.2f})"
                         for ratio, (q1, q3) in zip(row["step_ratios_per_run"], row["step_iqr_per_run"]))

    columns: list[Column] = [
        ("settings", lambda r: r["settings"]),
        ("ours", lambda r: r["ours"] + (" (best)" if r["ours_best"] else "")),
        ("official", lambda r: r["official"]),
        ("step ours ÷ official, median of runs", lambda r: f"{r['step_ratio_vs_official']:.2f}"),
        ("each run (IQR)", per_run),
        ("memory ours ÷ official", lambda r: "not counted" if r["mem_ratio_vs_official"] is None
                                            else f"{r['mem_ratio_vs_official']:.2f}"),
    ]
    if first["device_type"] == "cuda":
        columns.insert(3, ("step ms ours / official", lambda r: f"{r['step_ms_ours']:.1f} / {r['step_ms_official']:.1f}"))
    caption = (
        f"VPT-deep training step (forward, cross-entropy, backward, SGD step on prompts + head; "
        f"{first['trainable_params_ours']:,} trainable parameters on both sides) on {first['device']}, "
        f"{first['threads']} threads, torch {first['torch']}, batch {first['batch']}, {first['image_size']}² pixels. "
        f"`auto` precision resolves to `{first['auto_precision']}` here; the official trainer has no autocast "
        f"and no compile, so fp32 eager is its best. {first['runs']} runs, each with fresh models; a run's ratio "
        f"is the median over {first['rounds']} interleaved rounds (after {first['warmup_rounds']} warm-up rounds, "
        f"which include compilation) of per-round paired ratios, and the table gives the median of the runs. "
        f"Memory: {first['memory_source']}; a compiled variant on CPU is not counted. "
        f"Highest 1-minute load average of a run: {first['load_avg_1m']}."
    )
    return caption + "\n\n" + markdown_table(timing, columns)


def main(argv: list[str] | None = None) -> None:
    parser = base_parser("VPT and VAPT in vprompt against their official code: parity, then VPT's step time "
                         "and memory ratios")
    parser.add_argument("--official-vpt", type=Path, help="root of a KMnP/vpt checkout: VPT parity and timing")
    parser.add_argument("--official-vapt", type=Path, help="root of a Minhchuyentoancbn/VAPT checkout: VAPT parity")
    parser.add_argument("--prompt-len", type=int, default=10)
    parser.add_argument("--num-classes", type=int, default=100)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=8, help="timed rounds of a run (default: 8)")
    parser.add_argument("--runs", type=int, default=2, help="runs, each interleaved with fresh models; the table "
                                                            "gives their median (default: 2)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first (compilation happens here)")
    parser.add_argument("--tolerance", type=float, default=1e-4, help="largest logit difference allowed")
    parser.add_argument("--grad-tolerance", type=float, default=1e-3,
                        help="largest gradient difference allowed, relative to the gradient's largest magnitude")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    parser.add_argument("--parity-only", action="store_true", help="check parity and time nothing (the committed docs/results/official_parity.json)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.official_vpt is None and args.official_vapt is None:
        sys.exit("vs_official.py: give --official-vpt (a KMnP/vpt checkout), --official-vapt "
                 "(a Minhchuyentoancbn/VAPT checkout) or both")
    setup(args)
    device = torch.device(args.device)
    arch = QUICK if args.quick else VIT_B16
    official = import_official(args.official_vpt, VPT_CHECKOUT) if args.official_vpt else None
    parity = [parity_row(official, arch, method, args, device) for method in ("vpt-shallow", "vpt-deep")
              if official is not None]
    if args.official_vapt:
        vapt = import_official(args.official_vapt, VAPT_CHECKOUT)
        parity.append(parity_row(vapt, QUICK_VAPT if args.quick else VIT_B16, "vapt", args, device))
    for row in parity:
        groups = ", ".join(f"{group} {diff:.1e}" for group, diff in row["rel_grad_diff"].items())
        print(f"[vs_official] {row['method']}: max |Δ logit| {row['max_abs_logit_diff']:.2e}, "
              f"max rel. Δ grad {row['max_rel_grad_diff']:.2e} ({groups}), trainable {row['trainable_params_ours']} / "
              f"{row['trainable_params_official']}", file=sys.stderr)
    broken = [r["method"] for r in parity
              if not r["parity"] or r["trainable_params_ours"] != r["trainable_params_official"]]
    if broken:
        sys.exit(f"[vs_official] parity broken for {', '.join(broken)}: nothing timed")
    if args.parity_only or official is None:
        if official is None and not args.parity_only:
            print("[vs_official] no --official-vpt: parity only (the timing compares VPT-deep)", file=sys.stderr)
        write_outputs(parity, parity_table(parity), args.out, args.quick)
        return
    timing = []
    for run in range(args.runs):
        timing += [{**row, "run": run} for row in timing_rows(official, arch, args, device)]
    medians = median_rows(timing)
    write_outputs(parity + timing + medians, parity_table(parity) + "\n\n" + timing_table(medians), args.out,
                  args.quick)


if __name__ == "__main__":
    main()
