"""Token prompts on every supported timm family: oracles outside our code, nothing else changed,
gradients, parameter formulas, checkpoints, and the compatibility matrix."""

from __future__ import annotations

import json

import pytest
import torch
from timm.models.swin_transformer import window_partition

from vprompt.backbones import BackboneSpec, create_backbone
from vprompt.errors import ConfigError
from vprompt.families import find_family
from vprompt.families.matrix import ROWS, TINY_SEQUENCE, TINY_SWIN, check, matrix, tiny_spec
from vprompt.methods import registered_methods
from vprompt.model import create_model, load_prompt, parameter_report, save_prompt

SEQUENCE_FAMILIES = {
    "vit": "vit_tiny_patch16_224",
    "deit-distilled": "deit_tiny_distilled_patch16_224",
    "dinov3": "vit_small_patch16_dinov3",
    "eva02": "eva02_tiny_patch14_224",
    "pe-core": "vit_pe_core_tiny_patch16_384",
    "rope-mixed": "vit_small_patch16_rope_mixed_224",
    "beit": "beit_base_patch16_224",
}
FAMILY_SPECS = {key: BackboneSpec(name, kwargs=dict(TINY_SEQUENCE), init_seed=0) for key, name in SEQUENCE_FAMILIES.items()}
FAMILY_SPECS["swin"] = BackboneSpec("swin_tiny_patch4_window7_224", kwargs=dict(TINY_SWIN), init_seed=0)


def token_methods(spec: BackboneSpec) -> tuple[str, ...]:
    """Every registered token method that the family of ``spec`` runs, as the registry declares it."""
    backbone = create_backbone(spec)
    layout = find_family(backbone).layout(backbone)
    return tuple(m.name for m in registered_methods() if m.token_prompts and m.refusal(layout) is None)


TOKEN_METHODS = {key: token_methods(spec) for key, spec in FAMILY_SPECS.items()}
CASES = [(key, method) for key, methods in TOKEN_METHODS.items() for method in methods]


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def bare_features(spec: BackboneSpec, x: torch.Tensor) -> torch.Tensor:
    """What the unprompted backbone computes, from a build of its own."""
    backbone = create_backbone(spec)
    model = create_model(spec, "linear", 3)  # the same normalisation as every PromptedModel
    return backbone.forward_features((x - model.mean) / model.std)


# --- an oracle outside our code: register tokens ------------------------------------------------

@pytest.mark.parametrize("name, reg_arg, registers", [
    ("vit_tiny_patch16_224", "reg_tokens", 0),
    ("vit_tiny_patch16_224", "reg_tokens", 2),
    ("vit_small_patch16_dinov3", "num_reg_tokens", 4),   # DINOv3 as timm builds it: CLS + 4 registers, RoPE
    ("eva02_tiny_patch14_224", "num_reg_tokens", 0),
    ("vit_small_patch16_rope_mixed_224", "num_reg_tokens", 0),  # per-block rotary embedding
])
@pytest.mark.parametrize("pool", ["token", "avg"])
def test_shallow_prompts_equal_register_tokens_set_to_them(name, reg_arg, registers, pool):
    """timm's own register tokens carry no position embedding (no_embed_class) and no rotary
    embedding and sit right after CLS: VPT-shallow with prompts P must be exactly that model with
    P as its extra registers."""
    p = 3
    base = dict(TINY_SEQUENCE, no_embed_class=True, global_pool=pool)
    prompted = create_model(BackboneSpec(name, kwargs={**base, reg_arg: registers}, init_seed=0), "vpt-shallow", 4, prompt_len=p)
    prompted.eval()
    oracle = create_backbone(BackboneSpec(name, kwargs={**base, reg_arg: registers + p, "num_classes": 0}, init_seed=0))
    assert isinstance(oracle.norm_pre, torch.nn.Identity)
    weights = {k: v for k, v in prompted.backbone.state_dict().items() if k != "reg_token"}
    missing, unexpected = oracle.load_state_dict(weights, strict=False)
    assert missing == ["reg_token"] and not unexpected
    with torch.no_grad():
        existing = [prompted.backbone.reg_token[0]] if registers else []
        oracle.reg_token.copy_(torch.cat([*existing, prompted.token_prompt.prompts[0]]).unsqueeze(0))
    x = images()
    with torch.no_grad():
        expected_features = oracle.forward_head(oracle.forward_features((x - prompted.mean) / prompted.std), pre_logits=True)
        torch.testing.assert_close(prompted.head(expected_features), prompted(x), atol=1e-5, rtol=0)


# --- prompts change nothing else ------------------------------------------------------------------

def capture_block_kwargs(blocks) -> list[dict]:
    seen: list[dict] = []
    for block in blocks:
        block.register_forward_pre_hook(lambda m, args, kwargs: seen.append(dict(kwargs)), with_kwargs=True)
    return seen


@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", "eva02_tiny_patch14_224", "vit_small_patch16_rope_mixed_224"])
def test_patch_tokens_keep_their_rotary_embedding_and_prompts_get_none(name):
    spec = BackboneSpec(name, kwargs=dict(TINY_SEQUENCE), init_seed=0)
    p, x = 4, images()
    bare = create_backbone(spec)
    bare_ropes = capture_block_kwargs(bare.blocks)
    model = create_model(spec, "vpt-deep", 3, prompt_len=p)
    ropes = capture_block_kwargs(model.backbone.blocks)  # registered after the prompt's hooks: sees their result
    bare.forward_features(x)
    model(x)
    assert len(ropes) == len(bare_ropes) == 2
    for seen, reference in zip(ropes, bare_ropes):
        rope, bare_rope = seen["rope"], reference["rope"]
        assert torch.equal(rope[..., p:, :], bare_rope)
        sin, cos = rope[..., :p, :].chunk(2, dim=-1)
        assert torch.equal(sin, torch.zeros_like(sin)) and torch.equal(cos, torch.ones_like(cos))


def test_beit_bias_is_extended_with_zero_rows_and_columns():
    spec = BackboneSpec("beit_base_patch16_224", kwargs=dict(TINY_SEQUENCE), init_seed=0)
    p = 3
    model = create_model(spec, "vpt-deep", 3, prompt_len=p)
    attn = model.backbone.blocks[0].attn
    with torch.no_grad():  # timm initialises the table to zeros; a trained BEiT's is not
        attn.relative_position_bias_table.normal_()
    bias = attn._get_rel_pos_bias()
    original = type(attn)._get_rel_pos_bias(attn)
    n = original.shape[-1]
    assert bias.shape[-2:] == (n + p, n + p)
    assert torch.equal(bias[..., 1:1 + p, :], torch.zeros_like(bias[..., 1:1 + p, :]))
    assert torch.equal(bias[..., :, 1:1 + p], torch.zeros_like(bias[..., :, 1:1 + p]))
    keep = [0, *range(1 + p, n + p)]
    assert torch.equal(bias[..., keep, :][..., keep], original)


def test_beit_shared_bias_is_padded_too():
    spec = BackboneSpec("beit_base_patch16_224",
                        kwargs=dict(TINY_SEQUENCE, use_rel_pos_bias=False, use_shared_rel_pos_bias=True), init_seed=0)
    p = 2
    model = create_model(spec, "vpt-shallow", 3, prompt_len=p)
    shared = model.backbone.rel_pos_bias
    with torch.no_grad():  # timm initialises the table to zeros; a trained BEiT's is not
        shared.relative_position_bias_table.normal_()
    seen = capture_block_kwargs(model.backbone.blocks)
    model(images())
    assert seen[0]["shared_rel_pos_bias"].shape[-1] == 1 + 2 + 16
    # the bias computed here, as BEiT defines it: the table looked up by each (query, key) pair's
    # relative-position index, over CLS + the 16 patches; then zero rows and columns for the prompts
    # right after CLS, the rest as it was
    table, index = shared.relative_position_bias_table.detach(), shared.relative_position_index
    n = index.shape[0]
    assert n == 1 + 16
    original = table[index.reshape(-1)].reshape(n, n, -1).permute(2, 0, 1)
    keep = torch.tensor([0, *range(1 + p, n + p)])  # CLS, then the patches after the prompts
    expected = torch.zeros(table.shape[1], n + p, n + p)
    expected[:, keep[:, None], keep[None, :]] = original
    assert len(seen) == len(model.backbone.blocks) == 2
    for kwargs in seen:  # every block gets the one padded bias
        bias = kwargs["shared_rel_pos_bias"].detach()
        assert bias.shape == (2, n + p, n + p)
        assert torch.equal(bias[:, 1:1 + p, :], torch.zeros_like(bias[:, 1:1 + p, :]))
        assert torch.equal(bias[:, :, 1:1 + p], torch.zeros_like(bias[:, :, 1:1 + p]))
        assert torch.equal(bias[:, keep][:, :, keep], original)
        assert torch.equal(bias, expected)
    assert original.abs().sum() > 0  # so the comparisons above could tell a kept bias from a zeroed one


def test_swin_windows_are_partitioned_as_without_prompts_and_share_their_image_prompts():
    spec, p, x = FAMILY_SPECS["swin"], 3, images()
    model = create_model(spec, "vpt-shallow", 3, prompt_len=p)
    blocks = [block for stage in model.backbone.layers for block in stage.blocks]
    grids, windows, masks = [], [], []

    def record_windows(module, args, kwargs) -> None:
        windows.append(args[0])
        masks.append(kwargs.get("mask"))

    for block in blocks:  # hooks registered after the prompt's: they see the prompted inputs
        block.register_forward_pre_hook(lambda m, args: grids.append(args[0]))
        block.attn.register_forward_pre_hook(record_windows, with_kwargs=True)
    model(x)
    shifted_blocks = 0
    for block, grid, window, mask in zip(blocks, grids, windows, masks):
        shifted = torch.roll(block.norm1(grid), shifts=tuple(-s for s in block.shift_size), dims=(1, 2))
        expected = window_partition(shifted, block.window_size).flatten(1, 2)
        assert torch.equal(window[:, p:], expected)
        per_image = window[:, :p].view(len(x), -1, p, window.shape[-1])
        assert torch.equal(per_image, per_image[:, :1].expand_as(per_image))  # one image's prompts in all its windows
        assert not torch.equal(per_image[0, 0], per_image[1, 0]) or block is blocks[0]
        if block.attn_mask is not None:
            shifted_blocks += 1
            assert torch.equal(mask[:, p:, p:], block.attn_mask)
            assert not mask[:, :p].any() and not mask[:, :, :p].any()
    assert shifted_blocks == 2  # the tiny Swin has a shifted block per stage
    bare_block0 = create_backbone(spec)
    first: list[torch.Tensor] = []
    bare_block0.layers[0].blocks[0].attn.register_forward_pre_hook(lambda m, args: first.append(args[0]))
    bare_block0.forward_features((x - model.mean) / model.std)
    assert torch.equal(windows[0][:, p:], first[0])


@pytest.mark.parametrize("key, method", CASES)
def test_removing_the_prompts_restores_the_bare_backbone_bit_for_bit(key, method):
    spec, x = FAMILY_SPECS[key], images()
    model = create_model(spec, method, 3, prompt_len=2)
    prompted = model.backbone.forward_features((x - model.mean) / model.std)
    model.token_prompt.detach()
    restored = model.backbone.forward_features((x - model.mean) / model.std)
    assert not torch.equal(prompted, restored)
    assert torch.equal(restored, bare_features(spec, x))
    assert not any("_get_rel_pos_bias" in vars(m) for m in model.backbone.modules())


# --- training touches only the prompts and the head ----------------------------------------------

@pytest.mark.parametrize("key, method", CASES)
def test_gradients_reach_only_prompts_and_head(key, method):
    model = create_model(FAMILY_SPECS[key], method, 3, prompt_len=2).train()
    model(images()).logsumexp(1).sum().backward()
    assert all(param.grad is None for param in model.backbone.parameters())
    prompt_grads = [param.grad for param in model.token_prompt.parameters()]
    assert prompt_grads and all(grad is not None for grad in prompt_grads)
    assert model.head.fc.weight.grad.abs().sum() > 0
    if method == "vpt-deep":  # every block's prompts are used
        assert all((grad.abs().sum(dim=(1, 2)) > 0).all() for grad in prompt_grads)


# --- parameter formulas ---------------------------------------------------------------------------

@pytest.mark.parametrize("p", [1, 5])
def test_swin_prompt_counts_follow_the_per_stage_formula(p):
    spec = BackboneSpec("swin_tiny_patch4_window7_224", kwargs=dict(TINY_SWIN, embed_dim=8, depths=(2, 3)), init_seed=0)
    dims = {0: 8, 1: 16}
    shallow = parameter_report(create_model(spec, "vpt-shallow", 3, prompt_len=p))
    deep = parameter_report(create_model(spec, "vpt-deep", 3, prompt_len=p))
    assert shallow.prompt == p * dims[0]
    assert deep.prompt == p * (2 * dims[0] + 3 * dims[1])


@pytest.mark.parametrize("name, expected", [("vit_base_patch16_dinov3", 92_160),   # 12 · 10 · 768
                                            ("swin_base_patch4_window7_224", 120_320)])  # 10 · Σ depth_s · d_s
def test_params_command_reports_the_issue_figures(capsys, name, expected):
    from vprompt.cli import main

    main(["params", "--model", name, "--method", "vpt-deep", "--prompt-len", "10", "--json"])
    assert json.loads(capsys.readouterr().out)["prompt"] == expected


# --- checkpoints ----------------------------------------------------------------------------------

@pytest.mark.parametrize("key, method", CASES)
def test_save_and_load_give_identical_logits(tmp_path, key, method):
    model = create_model(FAMILY_SPECS[key], method, 3, prompt_len=2).train()
    optimizer = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1.0)
    model(images()).logsumexp(1).sum().backward()
    optimizer.step()  # trained prompts, not their init
    model.eval()
    save_prompt(model, tmp_path / "prompt")
    loaded = load_prompt(tmp_path / "prompt")
    assert torch.equal(model(images()), loaded(images()))


def test_per_sample_prompts_are_refused_when_stage_widths_differ():
    model = create_model(FAMILY_SPECS["swin"], "vpt-deep", 3, prompt_len=2)
    with pytest.raises(ConfigError, match="one token width"):
        with model.token_prompt.per_sample(torch.zeros(1, 4, 2, 16)):
            pass


@pytest.mark.parametrize("key", ["dinov3", "beit"])
def test_per_sample_prompts_give_each_image_its_own_prompt(key):
    model = create_model(FAMILY_SPECS[key], "vpt-deep", 3, prompt_len=2).eval()
    x = images(2)
    own = torch.randn(2, *model.token_prompt.prompts.shape)
    with torch.no_grad(), model.token_prompt.per_sample(own):
        both = model(x)
        model.token_prompt.prompts.copy_(own[1])
    assert torch.allclose(both[1], model(x[1:])[0], atol=1e-5)


# --- pixel VP on every classifier -----------------------------------------------------------------

def test_vp_reads_distilled_deit_as_timm_does_at_eval():
    spec = BackboneSpec("deit_tiny_distilled_patch16_224", kwargs=dict(TINY_SEQUENCE, num_classes=10), init_seed=0)
    model = create_model(spec, "vp", 3, mapping="first-n").train()
    x = images()
    model(x).sum().backward()  # trains in train mode, where timm's model would return two logit sets
    model.eval()
    timm_model = create_backbone(spec).eval()
    with torch.no_grad():
        expected = timm_model((model.input_prompt(x) - model.mean) / model.std)
        torch.testing.assert_close(model.head.source_logits(model.features(x)), expected)


# --- the compatibility matrix ---------------------------------------------------------------------

@pytest.mark.slow  # every family × method, trained
def test_matrix_covers_the_families_and_every_listed_method_runs():
    rows = matrix()
    assert len(rows) >= 15
    by_family = {row["family"]: row for row in rows}
    for family in ("DINOv3", "EVA-02", "Perception Encoder (PE-Core)", "RoPE ViT", "BEiT"):
        assert {"vpt-shallow", "vpt-deep", "vapt"} <= set(by_family[family]["methods"])
    assert {"vpt-shallow", "vpt-deep"} <= set(by_family["Swin"]["methods"])
    assert "vapt" not in by_family["Swin"]["methods"]
    for spec, row in zip(ROWS, rows):
        outcome = check(spec, row["methods"])
        assert not [m for m, result in outcome.items() if result.startswith("MISMATCH")], (row["family"], outcome)


def test_unsupported_family_gets_one_line_naming_the_supported_ones():
    with pytest.raises(ConfigError) as caught:
        create_model(tiny_spec(next(r for r in ROWS if r.family == "Swin V2")), "vpt-deep", 3, prompt_len=2)
    message = str(caught.value)
    assert "\n" not in message and "SwinTransformerV2" in message
    assert all(name in message for name in ("VisionTransformer", "Eva", "Beit", "SwinTransformer"))


# --- end to end from the command line -------------------------------------------------------------

@pytest.mark.slow  # end to end through the CLI
@pytest.mark.parametrize("name", ["vit_small_patch16_dinov3", "eva02_tiny_patch14_224"])
@pytest.mark.parametrize("method", ["vpt-deep", "vapt"])
def test_dinov3_and_eva02_train_and_evaluate_from_the_cli(capsys, tmp_path, name, method):
    from vprompt.cli import main
    from vprompt.data import write_synthetic_suite

    task = write_synthetic_suite(tmp_path / "suite", tasks=["digits"], image_size=32, test_size=20, progress=False)[0]
    model = ["--model", name, "--model-arg", *(f"{k}={v}" for k, v in TINY_SEQUENCE.items())]
    run = tmp_path / "run"
    main(["train", "--data", str(task), "--out", str(run), *model, "--method", method, "--prompt-len", "2",
          "--epochs", "1", "--batch-size", "50", "--warmup-epochs", "0", "--no-progress"])
    trained = json.loads(capsys.readouterr().out)
    main(["eval", "--prompt", str(run), "--data", str(task), "--json"])
    scored = json.loads(capsys.readouterr().out)
    assert scored["n"] == 20 and scored["acc"] == pytest.approx(trained["eval_acc"])
    meta = json.loads((run / "prompt" / "prompt.json").read_text())
    assert meta["backbone"]["name"] == name and meta["method"] == method


@pytest.mark.parametrize("spec, method", [(FAMILY_SPECS["vit"], "vapt"), (FAMILY_SPECS["swin"], "vpt-deep"),
                                          (FAMILY_SPECS["beit"], "full"),
                                          (BackboneSpec("vit_tiny_patch16_224", kwargs=dict(TINY_SEQUENCE, num_classes=9), init_seed=0), "vp"),
                                          (BackboneSpec("zoo:fractal-vit"), "vpt-shallow")])
def test_counting_on_the_meta_device_gives_the_built_models_counts(spec, method):
    from vprompt.model import count_parameters

    options = {"prompt_len": 3} if method.startswith("vpt") else {}
    assert count_parameters(spec, method, 4, **options) == parameter_report(create_model(spec, method, 4, **options))
