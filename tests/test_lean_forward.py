"""The lean forward against the full computation: on tiny variants of every family with a lean
forward, for every method the family runs and every pooling, logits and gradients within 1e-5
relative in fp32, with and without gradient checkpointing; and the lean path is really taken
(each block that can skip rows runs the lean forward), so the comparison cannot pass by falling
back to the full path."""

from __future__ import annotations

import copy

import pytest
import torch

from vprompt.backbones import BackboneSpec
from vprompt.families import find_family
from vprompt.families.lean import Rows
from vprompt.families.matrix import CHECK_CLASSES, TINY_SEQUENCE
from vprompt.methods import registered_methods
from vprompt.model import create_model

TINY = dict(TINY_SEQUENCE, depth=3, num_classes=CHECK_CLASSES)
VARIANTS = {
    "vit-token": ("vit_tiny_patch16_224", {}),
    "vit-registers": ("vit_tiny_patch16_224", {"reg_tokens": 2}),
    "vit-avg": ("vit_tiny_patch16_224", {"global_pool": "avg", "class_token": False}),
    "vit-avg-cls": ("vit_tiny_patch16_224", {"global_pool": "avg"}),
    "vit-map": ("vit_tiny_patch16_224", {"global_pool": "map"}),
    "vit-layerscale-qknorm": ("vit_tiny_patch16_224", {"init_values": 0.5, "qk_norm": True}),
    "vit-scale-norm": ("vit_tiny_patch16_224", {"scale_attn_norm": True}),
    "deit-distilled": ("deit_tiny_distilled_patch16_224", {}),
    "eva02": ("eva02_tiny_patch14_224", {}),
    "eva02-avg": ("eva02_tiny_patch14_224", {"global_pool": "avg"}),
    "eva02-separate-projections": ("eva02_tiny_patch14_224", {"qkv_fused": False}),
    "pe-core-grouped-kv": ("vit_pe_core_tiny_patch16_384", {"qkv_fused": False, "num_kv_heads": 1}),
    "dinov3-registers": ("vit_small_patch16_dinov3", {}),
    "pe-core-map": ("vit_pe_core_tiny_patch16_384", {}),
    "rope-mixed": ("vit_small_patch16_rope_mixed_224", {}),
    "beit": ("beit_base_patch16_224", {}),
    "beit-token": ("beit_base_patch16_224", {"global_pool": "token"}),
}
SPECS = {key: BackboneSpec(name, kwargs={**TINY, **extra}, init_seed=0) for key, (name, extra) in VARIANTS.items()}


def runs_on(method, spec: BackboneSpec) -> bool:
    if not method.token_prompts:
        return True
    model = create_model(spec, "linear", 3)
    return method.refusal(find_family(model.backbone).layout(model.backbone)) is None


CASES = [pytest.param(key, method.name, marks=[pytest.mark.slow] if method.changes_backbone and key != "vit-token" else [])
         for key, spec in SPECS.items() for method in registered_methods() if runs_on(method, spec)]
"""Every family × method; a method that changes the backbone's own layers (BitFit, the peft tuners) on
the plain ViT in the fast tier and on the other families in the slow one."""
OPTIONS = {"vpt-shallow": {"prompt_len": 3}, "vpt-deep": {"prompt_len": 3}, "vapt": {"prompt_len": 3},
           "oft": {"block_size": 8}, "fourierft": {"n_frequency": 20}}
"""Each method's options (the tuners' sized for the tiny widths); a linear head without its batch
standardisation, whose gradient sums to zero over the batch and would leave the final norm's bias a
gradient of rounding noise only."""


def images() -> torch.Tensor:
    return torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


def logits_and_grads(model, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits and gradients at one seed: a prompt's own dropout draws the same numbers on both paths."""
    torch.manual_seed(7)
    model.zero_grad()
    logits = model(x)
    torch.nn.functional.cross_entropy(logits, torch.arange(len(logits)) % logits.shape[1]).backward()
    return logits.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def lean_blocks(model) -> list[int]:
    return [index for index, block in enumerate(model.backbone.blocks) if "forward" in vars(block)]


def expected_lean_blocks(model) -> list[int]:
    """Blocks whose outputs are partly unread: every block before one whose prompts are replaced,
    and the last block unless the pooling reads every row and there are no prompts."""
    depth, prompt = len(model.backbone.blocks), model.token_prompt
    replaced = [index for index in range(depth - 1) if prompt is not None and prompt.replaces(index + 1)]
    pooled = model.source_tokens or find_family(model.backbone).pooled_rows(model.backbone)
    return replaced + ([depth - 1] if prompt is not None or pooled else [])


@pytest.mark.parametrize("checkpointing", [False, pytest.param(True, marks=pytest.mark.slow)], ids=["plain", "checkpointed"])
@pytest.mark.parametrize("key, method", CASES)
def test_lean_forward_equals_the_full_computation(key, method, checkpointing):
    torch.manual_seed(0)
    head = {} if method == "vp" else {"head_norm": False}
    model = create_model(SPECS[key], method, 4, **OPTIONS.get(method, {}), **head)
    with torch.no_grad():  # trainable tensors off their init (zeros would hide a missing gradient path)
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    model.train()
    model.set_grad_checkpointing(checkpointing)
    full = copy.deepcopy(model)
    full.set_lean(False)
    if method != "kv-prompt":  # key-value prompts have vprompt compute every block, lean or not
        assert lean_blocks(model) == expected_lean_blocks(model) and model.lean
        assert lean_blocks(full) == []
    x = images()
    lean_logits, lean_grads = logits_and_grads(model, x)
    full_logits, full_grads = logits_and_grads(full, x)
    assert relative(lean_logits, full_logits) < 1e-5
    assert lean_grads.keys() == full_grads.keys() and lean_grads
    # Prompts and head: each tensor within 1e-5 of its own largest gradient. A backbone weight that the
    # full fine-tune trains may have a gradient that is zero in exact arithmetic (a key norm's bias:
    # softmax ignores a shift shared by all keys), rounding noise on both paths: it is measured against
    # at least 1 % of the largest gradient of the model.
    # FourierFT's coefficients gather the whole weight gradient through a 2-D FFT, so their rounding
    # noise is about ten times a plain tensor's: they get 1e-4.
    floor = 1e-2 * max(float(grad.abs().max()) for grad in full_grads.values())
    for name, grad in full_grads.items():
        error, scale = float((lean_grads[name] - grad).abs().max()), float(grad.abs().max())
        bound = 1e-4 if "fourierft_spectrum" in name else 1e-5
        assert error < bound * (max(scale, floor) if name.startswith("backbone.") else scale), name


class Adapter(torch.nn.Module):
    """A projection wrapped the way an adapter library wraps one (not an ``nn.Linear``)."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.delta = torch.nn.Linear(linear.in_features, linear.out_features, bias=False)
        torch.nn.init.normal_(self.delta.weight, std=0.02)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x) + self.delta(x)


@pytest.mark.parametrize("key", ["vit-token", "eva02", "beit-token"])
def test_attention_options_set_on_the_module_are_followed(key):
    """What a module may carry beyond its constructor's defaults: a gate, a separately added query/value
    bias, a wrapped projection (which runs whole, with its hooks), and timm's explicit softmax."""
    torch.manual_seed(0)
    model = create_model(SPECS[key], "vpt-deep", 4, prompt_len=3, head_norm=False)
    for block in model.backbone.blocks:
        attn = block.attn
        width = attn.proj.in_features
        if key != "beit-token":
            attn.gate = torch.nn.Linear(width, width)
        if getattr(attn, "q_bias", None) is not None:
            attn.qkv_bias_separate = True
        attn.qkv = Adapter(attn.qkv) if key == "vit-token" else attn.qkv
        attn.fused_attn = key != "eva02"
    calls = []
    model.backbone.blocks[0].attn.qkv.register_forward_hook(lambda module, args, out: calls.append(out.shape[1]))
    assert lean_blocks(model) == [0, 1, 2]
    full = copy.deepcopy(model)
    full.set_lean(False)
    x = images()
    lean_logits, lean_grads = logits_and_grads(model, x)
    full_logits, full_grads = logits_and_grads(full, x)
    assert relative(lean_logits, full_logits) < 1e-5
    for name, grad in full_grads.items():
        assert relative(lean_grads[name], grad) < 1e-5, name
    if key == "vit-token":
        assert calls == [1 + 3 + 16] * 2  # every row, once on each path (the copy kept the hook)


def test_lean_forward_skips_the_rows_it_says():
    """ViT-B/16 shapes, VPT-deep p = 10: each block but the last returns the class token and the 196
    patches (the prompts only served as keys and values), the last the class token alone."""
    spec = BackboneSpec("vit_base_patch16_224", kwargs={"depth": 3}, init_seed=0)
    model = create_model(spec, "vpt-deep", 4, prompt_len=10).eval()
    shapes = []
    for block in model.backbone.blocks:
        block.register_forward_hook(lambda module, args, out: shapes.append((args[0].shape[1], out.shape[1])))
    with torch.no_grad():
        model(torch.rand(1, 3, 224, 224))
    assert shapes == [(1 + 10 + 196, 1 + 196)] * 2 + [(1 + 10 + 196, 1)]


def test_rows_take_the_prefix_and_the_patches_or_the_leading_rows():
    x = torch.arange(10).view(1, 10)
    assert Rows(start=2, skip=3).take(x, 1).tolist() == [[0, 1, 5, 6, 7, 8, 9]]
    assert Rows(start=0, skip=3).take(x, 1).tolist() == [[3, 4, 5, 6, 7, 8, 9]]
    assert Rows(lead=2).take(x, 1).tolist() == [[0, 1]]


def test_a_training_block_with_dropout_runs_timms_forward_and_draws_the_same_numbers():
    """Dropout and stochastic depth draw one random number per element: a lean block would draw
    others, so a training block that has them computes timm's way and keeps the same rows."""
    spec = BackboneSpec("vit_tiny_patch16_224", kwargs={**TINY, "drop_path_rate": 0.3, "proj_drop_rate": 0.2},
                        init_seed=0)
    model = create_model(spec, "full", 4).train()
    full = copy.deepcopy(model)
    full.set_lean(False)
    x = images()
    torch.manual_seed(5)
    lean_logits = model(x)
    torch.manual_seed(5)
    assert relative(lean_logits, full(x)) < 1e-5  # other draws would move logits by ~1e-1
    model.eval()
    full.eval()
    assert relative(model(x), full(x)) < 1e-5


def test_a_hook_on_the_attention_still_sees_every_call():
    model = create_model(SPECS["vit-token"], "vpt-deep", 4, prompt_len=2).eval()
    seen = []
    model.backbone.blocks[-1].attn.register_forward_hook(lambda module, args, out: seen.append(out.shape))
    with torch.no_grad():
        model(images())
    assert seen == [(3, 1 + 2 + 16, 32)]  # timm's own attention over every row


def test_set_lean_off_restores_timms_forward_and_on_again_the_lean_one():
    model = create_model(SPECS["vit-token"], "vpt-deep", 4, prompt_len=2).eval()
    x = images()
    lean = model(x)
    model.set_lean(False)
    assert not model.lean and lean_blocks(model) == []
    model.token_prompt.detach()  # the bare backbone is timm's, bit for bit
    assert all("forward" not in vars(block) for block in model.backbone.blocks)
    model.token_prompt.attach(model.backbone)
    model.set_lean(True)
    assert torch.equal(model(x), lean)


def test_swin_and_the_transformers_families_keep_the_full_path():
    swin = create_model(BackboneSpec("swin_tiny_patch4_window7_224", init_seed=0, kwargs={
        "img_size": 32, "patch_size": 2, "window_size": 4, "embed_dim": 16, "depths": (2, 2), "num_heads": (1, 2)}),
        "vpt-deep", 3, prompt_len=2)
    assert not find_family(swin.backbone).lean_forward
    assert not any("forward" in vars(module) for module in swin.backbone.modules())
