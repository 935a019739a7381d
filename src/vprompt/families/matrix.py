"""The compatibility matrix: which model families (timm, transformers) each method runs on, as data.

`vprompt models` prints it and the README's table is generated from it (a test keeps the two
equal; ``vprompt.report`` formats it). Supported methods are not typed by hand: they come from the
method registry and the family adapters, read off a tiny random-init build of each row's first
example, and ``check`` runs every listed method on that build (what the tests do).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch

from vprompt.errors import ConfigError

TINY_SEQUENCE = dict(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2)
CHECK_CLASSES = 10
"""Source classes of every tiny build (a label mapping needs a classifier where the family has one)."""
TINY_TRANSFORMERS = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64)
TINY_DINOV2 = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2)
TINY_SWIN = dict(img_size=32, patch_size=2, window_size=4, embed_dim=16, depths=(2, 2), num_heads=(1, 2))


@dataclass(frozen=True)
class FamilyRow:
    """One row: a model family as users know it, the timm names that build it, and our notes."""

    family: str
    examples: tuple[str, ...]
    notes: str = ""
    tiny: dict[str, Any] = field(default_factory=lambda: dict(TINY_SEQUENCE))
    """Constructor arguments that shrink the first example to a test-sized random-init network."""
    build: str | None = None
    """The name the tiny network is built from, when not the first example (a transformers class)."""


ROWS: tuple[FamilyRow, ...] = (
    FamilyRow("ViT (AugReg, original)", ("vit_base_patch16_224", "vit_small_patch16_384", "vit_large_patch16_224")),
    FamilyRow("DeiT", ("deit_small_patch16_224", "deit_base_patch16_224")),
    FamilyRow("DeiT distilled", ("deit_small_distilled_patch16_224", "deit_base_distilled_patch16_224"),
              "2 prefix tokens (class, distillation); vp reads both heads and averages them, as timm does at eval"),
    FamilyRow("DeiT-3", ("deit3_small_patch16_224", "deit3_base_patch16_224"), "layer scale"),
    FamilyRow("CLIP ViT", ("vit_base_patch16_clip_224", "vit_large_patch14_clip_224"),
              "pre-norm before block 0: prompts enter after it"),
    FamilyRow("SigLIP / SigLIP 2", ("vit_base_patch16_siglip_224", "vit_base_patch16_siglip_256"),
              "no class token; attention-pool head; timm weights have no classifier (vp needs one)"),
    FamilyRow("DINOv2", ("vit_small_patch14_dinov2", "vit_small_patch14_reg4_dinov2"),
              "with or without 4 register tokens; prompts follow the registers; no classifier (vp needs one)"),
    FamilyRow("FlexiViT", ("flexivit_small", "flexivit_base")),
    FamilyRow("EVA-02", ("eva02_tiny_patch14_224", "eva02_base_patch14_448"),
              "rotary embedding: prompts get none, patch tokens keep theirs; no classifier (vp needs one)"),
    FamilyRow("DINOv3", ("vit_small_patch16_dinov3", "vit_base_patch16_dinov3"),
              "timm's Eva with 1 CLS + 4 register tokens and rotary embedding; prompts get none; no classifier (vp needs one)"),
    FamilyRow("Perception Encoder (PE-Core)", ("vit_pe_core_tiny_patch16_384", "vit_pe_core_base_patch16_224"),
              "rotary embedding and attention pool; prompting PE is vprompt's choice (no paper prompts it)"),
    FamilyRow("RoPE ViT", ("vit_small_patch16_rope_224", "vit_base_patch16_rope_mixed_224"),
              "axial or mixed (per-block) rotary embedding; prompts get none"),
    FamilyRow("BEiT", ("beit_base_patch16_224", "beit_large_patch16_224"),
              "relative position bias padded with zero bias for the prompts (vprompt's choice, no paper)"),
    FamilyRow("BEiT v2", ("beitv2_base_patch16_224",), "as BEiT"),
    FamilyRow("Swin", ("swin_tiny_patch4_window7_224", "swin_base_patch4_window7_224"),
              "VPT's Swin variant: per-stage prompts in every window, zero bias and padded shift mask, "
              "merged with the patches; no VAPT", dict(TINY_SWIN)),
    FamilyRow("Swin V2", ("swinv2_tiny_window8_256",), "token prompts not supported yet", dict(TINY_SWIN)),
    FamilyRow("transformers ViT", ("hf-transformers:google/vit-base-patch16-224",
                                   "hf-transformers:google/vit-base-patch16-224-in21k"),
              "ViTModel / ViTForImageClassification from the local Hugging Face cache; hooks on the encoder layers",
              dict(TINY_TRANSFORMERS), "hf-transformers:ViTForImageClassification"),
    FamilyRow("transformers DINOv2", ("hf-transformers:facebook/dinov2-small", "hf-transformers:facebook/dinov2-base"),
              "Dinov2Model; no classifier (vp needs one)", dict(TINY_DINOV2), "hf-transformers:Dinov2Model"),
    FamilyRow("transformers DINOv2 with registers", ("hf-transformers:facebook/dinov2-with-registers-small",),
              "Dinov2WithRegistersModel: prompts follow the registers; no classifier (vp needs one)",
              dict(TINY_DINOV2, num_register_tokens=2), "hf-transformers:Dinov2WithRegistersModel"),
    FamilyRow("transformers CLIP vision", ("hf-transformers:openai/clip-vit-base-patch16",),
              "CLIPVisionModel: prompts enter after the pre-norm; no classifier (vp needs one)",
              dict(TINY_TRANSFORMERS), "hf-transformers:CLIPVisionModel"),
    FamilyRow("transformers SigLIP vision", ("hf-transformers:google/siglip-base-patch16-224",),
              "SiglipVisionModel: no class token, attention-pool head; no classifier (vp needs one)",
              dict(TINY_TRANSFORMERS), "hf-transformers:SiglipVisionModel"),
    FamilyRow("ResNet", ("resnet18", "resnet50"), "a CNN: no tokens to prompt", {}),
    FamilyRow("ConvNeXt", ("convnext_atto", "convnext_tiny"), "a CNN: no tokens to prompt", {}),
)


def tiny_spec(row: FamilyRow, num_classes: int | None = None):
    """The row's first example shrunk to a tiny random-init network (32×32 pixels)."""
    from vprompt.backbones import BackboneSpec

    kwargs = dict(row.tiny) | ({"num_classes": num_classes} if num_classes is not None else {})
    return BackboneSpec(row.build or row.examples[0], kwargs=kwargs, input_size=None if row.tiny else [32, 32],
                        init_seed=0)


def describe(row: FamilyRow) -> dict[str, Any]:
    """The row with its timm class and the methods that run on it, read off a tiny build."""
    from vprompt.backbones import create_backbone
    from vprompt.families import find_family
    from vprompt.methods import registered_methods

    backbone = create_backbone(tiny_spec(row, num_classes=CHECK_CLASSES))
    family = find_family(backbone)
    layout = family.layout(backbone) if family is not None else None
    classified = int(getattr(backbone, "num_classes", 0)) > 0  # a label mapping reads the source classifier
    methods = [method.name for method in registered_methods()
               if method.refusal(layout) is None and (classified or method.head != "label-map")]
    if layout is not None and layout.uniform_width:
        methods.append("transfer")
    return {"family": row.family, "timm_class": getattr(backbone, "kind", None) or type(backbone).__name__,
            "adapter": family.name if family else None, "examples": list(row.examples),
            "methods": methods, "notes": row.notes}


def matrix() -> list[dict[str, Any]]:
    return [describe(row) for row in ROWS]


def check(row: FamilyRow, methods: list[str]) -> dict[str, str]:
    """Run each method (train mode, forward and backward) on the row's tiny build: 'ok', or the
    error. Methods the row does not list must be refused with a ConfigError ('refused: ...')."""
    from vprompt.methods import registered_methods
    from vprompt.model import create_model

    outcome = {}
    for registered in registered_methods():
        method = registered.name
        options = ({"prompt_len": 2} if registered.takes_prompt_len else {}) | registered.config_cls.small_build
        try:
            model = create_model(tiny_spec(row, num_classes=CHECK_CLASSES), method, 3, **options).train()
            model(torch.rand(2, 3, *model.image_size)).logsumexp(1).sum().backward()
            outcome[method] = "ok"
        except ConfigError as exc:
            outcome[method] = f"refused: {exc}"
        if (method in methods) != (outcome[method] == "ok"):
            outcome[method] = f"MISMATCH ({'listed' if method in methods else 'not listed'}): {outcome[method]}"
    return outcome


def checked(rows: list[dict[str, Any]], progress: bool = True) -> list[dict[str, Any]]:
    """``rows`` (from [`matrix`][vprompt.families.matrix.matrix]) each with its ``check`` outcome."""
    from tqdm import tqdm

    bar = tqdm(rows, desc="checking families", file=sys.stderr, disable=not progress)
    return [row | {"check": check(spec, row["methods"])} for spec, row in zip(ROWS, bar)]


def mismatches(rows: list[dict[str, Any]]) -> list[str]:
    """Every checked method that behaves unlike its row says, as ``family: method outcome``."""
    return [f"{row['family']}: {method} {result}" for row in rows
            for method, result in row.get("check", {}).items() if result.startswith("MISMATCH")]
