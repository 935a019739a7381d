"""VPT in vprompt against the official VPT code (KMnP/vpt): the same network, the same numbers,
then the training step's time and memory as ratios ours ÷ official.

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
   VPT-shallow and VPT-deep, and the gradients of one backward pass (prompts and head) must agree
   too; otherwise the script exits with status 1 before timing anything.
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

The official code is never copied into this repository: it is imported from the checkout given
with ``--official-vpt`` (its ``src`` package). Importing its ViT needs

    pip install ml_collections simplejson termcolor iopath

(its ViT configs are ``ml_collections`` objects; its logging module imports the other three;
Python's ``turtle``/``tkinter``, ``scipy`` and ``torchvision`` must be importable). Its yacs/fvcore
config is not needed: the few prompt options its constructor reads are passed as a namespace.

    python benchmarks/vs_official.py --quick --official-vpt /path/to/vpt
    python benchmarks/vs_official.py --official-vpt /path/to/vpt --out docs/results/vs_official.json
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
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


@dataclass(frozen=True)
class Official:
    """The three things of the official code this benchmark uses."""

    prompted_vit: type[nn.Module]
    configs: dict[str, Any]
    mlp_head: type[nn.Module]


OFFICIAL_DEPS = "ml_collections simplejson termcolor iopath"


def import_official(root: Path) -> Official:
    """Import the official VPT modules from the user's checkout: its code is CC-BY-NC and never
    copied into this repository."""
    if not (root / "src" / "models" / "vit_prompt" / "vit.py").is_file():
        sys.exit(f"--official-vpt {root}: no src/models/vit_prompt/vit.py there (give the root of a KMnP/vpt checkout)")
    sys.path.insert(0, str(root))
    try:
        prompt = importlib.import_module("src.models.vit_prompt.vit")
        backbone = importlib.import_module("src.models.vit_backbones.vit")
        head = importlib.import_module("src.models.mlp")
    except ModuleNotFoundError as exc:
        sys.exit(f"the official code needs {exc.name}: pip install {OFFICIAL_DEPS}")
    if not Path(prompt.__file__).resolve().is_relative_to(root.resolve()):
        sys.exit(f"'src.models.vit_prompt.vit' was imported from {prompt.__file__}, not from {root}")
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


def prompt_config(prompt_len: int, deep: bool) -> SimpleNamespace:
    """The prompt options their constructors read (the rest of their yacs config is unused)."""
    return SimpleNamespace(NUM_TOKENS=prompt_len, DEEP=deep, DROPOUT=0.0, PROJECT=-1, LOCATION="prepend",
                           INITIATION="random", NUM_DEEP_LAYERS=None, DEEP_SHARED=False, VIT_POOL_TYPE="original")


def build_ours(arch: Arch, method: str, args: argparse.Namespace) -> PromptedModel:
    """Our model as vprompt trains it, except a plain linear head (theirs has no standardisation)."""
    torch.manual_seed(args.seed)  # prompts and head; the backbone comes from the spec's init_seed
    spec = BackboneSpec("vit_base_patch16_224", kwargs=arch.timm_kwargs, init_seed=args.seed)
    return create_model(spec, method, args.num_classes, prompt_len=args.prompt_len, head_norm=False)


def official_state(ours: PromptedModel) -> dict[str, torch.Tensor]:
    """Our tensors under the official model's state-dict names (``0.`` encoder, ``1.`` head)."""
    vit, prompts, fc = ours.backbone, ours.token_prompt.prompts, ours.head.fc
    state = {
        "0.transformer.embeddings.patch_embeddings.weight": vit.patch_embed.proj.weight,
        "0.transformer.embeddings.patch_embeddings.bias": vit.patch_embed.proj.bias,
        "0.transformer.embeddings.cls_token": vit.cls_token,
        "0.transformer.embeddings.position_embeddings": vit.pos_embed,
        "0.transformer.encoder.encoder_norm.weight": vit.norm.weight,
        "0.transformer.encoder.encoder_norm.bias": vit.norm.bias,
        "0.transformer.prompt_embeddings": prompts[:1],
        "1.last_layer.weight": fc.weight,
        "1.last_layer.bias": fc.bias,
    }
    if len(prompts) > 1:
        state["0.transformer.deep_prompt_embeddings"] = prompts[1:]
    for index, block in enumerate(vit.blocks):
        theirs = f"0.transformer.encoder.layer.{index}"
        for kind in ("weight", "bias"):
            q, k, v = getattr(block.attn.qkv, kind).chunk(3)  # timm's qkv rows: all queries, then keys, then values
            state |= {
                f"{theirs}.attn.query.{kind}": q,
                f"{theirs}.attn.key.{kind}": k,
                f"{theirs}.attn.value.{kind}": v,
                f"{theirs}.attn.out.{kind}": getattr(block.attn.proj, kind),
                f"{theirs}.attention_norm.{kind}": getattr(block.norm1, kind),
                f"{theirs}.ffn_norm.{kind}": getattr(block.norm2, kind),
                f"{theirs}.ffn.fc1.{kind}": getattr(block.mlp.fc1, kind),
                f"{theirs}.ffn.fc2.{kind}": getattr(block.mlp.fc2, kind),
            }
    return {name: tensor.detach().clone() for name, tensor in state.items()}


def build_official(official: Official, arch: Arch, ours: PromptedModel, deep: bool, prompt_len: int) -> nn.Sequential:
    """Their encoder and head holding our weights, with only prompts and head trainable (their
    ``TRANSFER_TYPE: prompt``: parameters named ``prompt``, plus the head outside the encoder)."""
    encoder = official.prompted_vit(prompt_config(prompt_len, deep), official_model_type(official, arch),
                                    img_size=arch.image, num_classes=-1)
    head = official.mlp_head(input_dim=arch.width, mlp_dims=[ours.num_classes], special_bias=True)
    model = nn.Sequential(encoder, head)
    model.load_state_dict(official_state(ours), strict=True)  # every tensor of theirs is one of ours
    for name, param in encoder.named_parameters():
        param.requires_grad_("prompt" in name)
    return model


def trainable(model: nn.Module) -> list[nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def official_gradients(model: nn.Sequential) -> dict[str, torch.Tensor]:
    """Their prompt and head gradients, stacked the way ours hold them."""
    prompts = [model[0].transformer.prompt_embeddings]
    if hasattr(model[0].transformer, "deep_prompt_embeddings"):
        prompts.append(model[0].transformer.deep_prompt_embeddings)
    head = model[1].last_layer
    return {"prompts": torch.cat([p.grad for p in prompts]), "head.weight": head.weight.grad, "head.bias": head.bias.grad}


def our_gradients(model: PromptedModel) -> dict[str, torch.Tensor]:
    fc = model.head.fc
    return {"prompts": model.token_prompt.prompts.grad, "head.weight": fc.weight.grad, "head.bias": fc.bias.grad}


def relative_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest elementwise difference relative to the largest magnitude (gradients vary in scale)."""
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def parity_row(official: Official, arch: Arch, method: str, args: argparse.Namespace, device: torch.device) -> Row:
    """Logits and one backward pass of both models in eval mode on one batch."""
    ours = build_ours(arch, method, args).to(device).eval()
    theirs = build_official(official, arch, ours, method == "vpt-deep", args.prompt_len).to(device).eval()
    images, labels = batch(arch, args, device)
    ours_logits = ours(images)
    theirs_logits = theirs((images - ours.mean) / ours.std)
    F.cross_entropy(ours_logits, labels).backward()
    F.cross_entropy(theirs_logits, labels).backward()
    reference = official_gradients(theirs)
    grads = {name: relative_difference(g, reference[name]) for name, g in our_gradients(ours).items()}
    logit_diff = float((ours_logits - theirs_logits).detach().abs().max())
    return {
        "kind": "parity",
        "model": arch.label,
        "method": method,
        "max_abs_logit_diff": logit_diff,
        "max_abs_logit": float(theirs_logits.detach().abs().max()),
        "max_rel_grad_diff": max(grads.values()),
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
        model = build_official(official, arch, ours, True, args.prompt_len).to(device) if variant.code == "official" else ours
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
    columns: list[Column] = [
        ("model", lambda r: r["model"]),
        ("method", lambda r: r["method"]),
        ("max |Δ logit|", lambda r: f"{r['max_abs_logit_diff']:.1e}"),
        ("max |logit|", lambda r: f"{r['max_abs_logit']:.2f}"),
        ("max rel. Δ grad", lambda r: f"{r['max_rel_grad_diff']:.1e}"),
        ("trainable ours / official", lambda r: f"{r['trainable_params_ours']:,} / {r['trainable_params_official']:,}"),
    ]
    caption = (
        f"Parity with the official VPT code: the same random-init {first['model']} in both, our weights, "
        f"prompts (p = {first['prompt_len']}) and linear head copied into theirs; eval mode, one batch of "
        f"{first['batch']}, {first['num_classes']} classes, on {first['device']}; gradients of one backward "
        f"pass (prompts, head) relative to their largest magnitude."
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
    parser = base_parser("VPT in vprompt against the official VPT code: parity, then step time and memory ratios")
    parser.add_argument("--official-vpt", type=Path, required=True, help="root of a KMnP/vpt checkout")
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
    parser.add_argument("--parity-only", action="store_true", help="check parity and time nothing (with --out: the JSON rows only)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    setup(args)
    device = torch.device(args.device)
    arch = QUICK if args.quick else VIT_B16
    official = import_official(args.official_vpt)
    parity = [parity_row(official, arch, method, args, device) for method in ("vpt-shallow", "vpt-deep")]
    for row in parity:
        print(f"[vs_official] {row['method']}: max |Δ logit| {row['max_abs_logit_diff']:.2e}, "
              f"max rel. Δ grad {row['max_rel_grad_diff']:.2e}, trainable {row['trainable_params_ours']} / "
              f"{row['trainable_params_official']}", file=sys.stderr)
    broken = [r["method"] for r in parity
              if not r["parity"] or r["trainable_params_ours"] != r["trainable_params_official"]]
    if broken:
        sys.exit(f"[vs_official] parity broken for {', '.join(broken)}: nothing timed")
    if args.parity_only:
        write_outputs(parity, parity_table(parity), args.out, quick=True)
        return
    timing = []
    for run in range(args.runs):
        timing += [{**row, "run": run} for row in timing_rows(official, arch, args, device)]
    medians = median_rows(timing)
    write_outputs(parity + timing + medians, parity_table(parity) + "\n\n" + timing_table(medians), args.out,
                  args.quick)


if __name__ == "__main__":
    main()
