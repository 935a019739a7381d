"""peft's tuners as methods (`vprompt.tuners`): the counts follow each tuner's formula, only the
tuner's parameters and the head train, switching the tuner off gives the bare backbone back bit
for bit, a checkpoint loads to the same logits, and every family's default targets are found."""

from __future__ import annotations

import json
import sys

import pytest
import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer

from conftest import tiny_vit_spec
from test_families import FAMILY_SPECS
from test_families_transformers import spec as transformers_spec
from vprompt.backbones import BackboneSpec
from vprompt.errors import ConfigError
from vprompt.export import export_model
from vprompt.model import count_parameters, create_model, load_prompt, save_prompt
from vprompt.tuners import merged_copy

TUNERS = ("lora", "dora", "ia3", "oft", "fourierft", "vera")
EACH_TUNER = [pytest.param(m, marks=[] if m == "lora" else [pytest.mark.slow]) for m in TUNERS]
"""LoRA in the fast tier, every tuner in the slow one (their counts are checked fast, all of them)."""
TINY_OPTIONS = {"oft": {"block_size": 8}, "fourierft": {"n_frequency": 20}}
"""Options that fit the tiny ViT (width 32, MLP 128)."""


def tuned(method: str, **options) -> torch.nn.Module:
    """A tiny ViT with ``method`` (eval mode), every trainable tensor moved off its init as if
    trained: at init a tuner may change nothing (LoRA's B is zero), which would hide a lost tensor."""
    torch.manual_seed(0)
    model = create_model(tiny_vit_spec(), method, 4, **options).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.requires_grad:
                param.add_(torch.randn_like(param) * 0.1)
    return model


def tuner_count(method: str, width: int, depth: int, mlp: int, options: dict) -> int:
    """Each tuner's trainable count on a ViT's qkv, proj, fc1 and fc2, from its paper's formula."""
    layers = [(width, 3 * width), (width, width), (width, mlp), (mlp, width)]  # (in, out)
    if method == "lora":
        return depth * sum(8 * (i + o) for i, o in layers)  # r = 8: A (r × in) and B (out × r)
    if method == "dora":
        return tuner_count("lora", width, depth, mlp, options) + depth * sum(o for _, o in layers)  # + magnitudes
    if method == "ia3":  # outputs of qkv and proj, inputs of fc1 and fc2
        return depth * (3 * width + width + width + mlp)
    if method == "oft":  # per layer, in / b blocks of b(b − 1)/2 free entries (a skew-symmetric matrix)
        b = options.get("block_size", 32)
        return depth * sum(i // b * b * (b - 1) // 2 for i, _ in layers)
    if method == "vera":  # per layer, a scaling vector per rank and one per output (the projections are frozen)
        return depth * sum(options.get("r", 256) + o for _, o in layers)
    return depth * 4 * options.get("n_frequency", 1000)  # fourierft: n coefficients per layer


@pytest.mark.parametrize("method", TUNERS)
def test_trainable_count_is_the_formula_on_the_tiny_vit(method):
    options = TINY_OPTIONS.get(method, {})
    report = count_parameters(tiny_vit_spec(), method, 4, **options)
    assert report.backbone == tuner_count(method, 32, 3, 128, options)
    assert report.head == 32 * 4 + 4 and report.prompt == 0


@pytest.mark.slow  # six ViT-B/16 builds
@pytest.mark.parametrize("method, figure", [("lora", 1_179_648), ("dora", 1_262_592), ("ia3", 82_944),
                                            ("oft", 999_936), ("fourierft", 48_000), ("vera", 95_232)])
def test_trainable_count_at_vit_b16_is_the_formula(method, figure):
    assert count_parameters("vit_base_patch16_224", method, 100).backbone == tuner_count(
        method, 768, 12, 3072, {}) == figure


@pytest.mark.parametrize("method", EACH_TUNER)
def test_only_the_tuner_and_the_head_get_gradients_and_switching_it_off_gives_the_bare_backbone(method):
    torch.manual_seed(0)
    model = create_model(tiny_vit_spec(), method, 4, **TINY_OPTIONS.get(method, {})).train()
    images = torch.rand(3, 3, 16, 16)
    F.cross_entropy(model(images), torch.tensor([0, 1, 2])).backward()
    added = {name for name, param in model.backbone.named_parameters() if param.requires_grad}
    assert added and all(param.grad is not None for name, param in model.backbone.named_parameters() if name in added)
    assert all(param.grad is None for name, param in model.backbone.named_parameters() if name not in added)
    assert all(p.grad is not None for p in model.head.parameters())
    with torch.no_grad():
        for name, param in model.backbone.named_parameters():
            if name in added:
                param.add_(torch.randn_like(param) * 0.1)  # as if trained: the tuner now changes the output
    model.eval().set_lean(False)  # the same computation on both sides (lean slices a plain qkv, runs a wrapped one whole)
    bare = create_model(tiny_vit_spec(), "linear", 4).eval()
    bare.set_lean(False)
    bare.head.load_state_dict(model.head.state_dict())
    assert not torch.equal(model(images), bare(images))
    layers = [m for m in model.backbone.modules() if isinstance(m, BaseTunerLayer)]
    for layer in layers:
        layer.enable_adapters(False)
    assert layers and torch.equal(model(images), bare(images))


@pytest.mark.parametrize("method", EACH_TUNER)
def test_save_load_gives_identical_logits_on_the_lean_and_the_full_path(method, tmp_path):
    model = tuned(method, **TINY_OPTIONS.get(method, {}))
    save_prompt(model, tmp_path / "ckpt")
    loaded = load_prompt(tmp_path / "ckpt").eval()
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(loaded(images), model(images))
    lean = model(images)
    model.set_lean(False)
    torch.testing.assert_close(model(images), lean, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # a build of every family
@pytest.mark.parametrize("family", [*FAMILY_SPECS, "transformers"])
def test_every_family_names_its_attention_and_mlp_layers_as_default_targets(family):
    spec = transformers_spec("ViTModel") if family == "transformers" else FAMILY_SPECS[family]
    model = create_model(spec, "lora", 3)
    adapted = [name for name, module in model.backbone.named_modules() if isinstance(module, BaseTunerLayer)]
    blocks = {name.rsplit(".", 2)[0] for name in adapted}
    per_block = len(adapted) / len(blocks)
    assert per_block in (4, 6), adapted  # qkv, proj, fc1, fc2 (timm); q, k, v, o, fc1, fc2 (transformers)
    assert not any("head" in name or "attn_pool" in name or "downsample" in name for name in adapted)


def test_a_backbone_of_no_family_needs_target_modules(tmp_path):
    resnet = BackboneSpec("resnet18", kwargs={"num_classes": 10}, init_seed=0)
    with pytest.raises(ConfigError, match="no family with default target modules: pass --method-arg target_modules"):
        create_model(resnet, "lora", 3)
    model = create_model(resnet, "lora", 3, target_modules=r"layer4\.1\.conv2")
    assert count_parameters(resnet, "lora", 3, target_modules=r"layer4\.1\.conv2").backbone == sum(
        p.numel() for p in model.backbone.parameters() if p.requires_grad) > 0


def test_without_peft_the_line_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "peft", None)  # what an environment without peft raises on import
    with pytest.raises(ConfigError, match=r"the peft tuners need peft: pip install 'vprompt\[peft\]'"):
        create_model(tiny_vit_spec(), "lora", 3)


@pytest.mark.slow  # the merge of every tuner (the export test merges LoRA)
@pytest.mark.parametrize("method", TUNERS)
def test_a_merged_copy_holds_plain_layers_and_equals_the_tuned_model(method):
    model = tuned(method, **TINY_OPTIONS.get(method, {}))
    merged = merged_copy(model).eval()
    assert not any(isinstance(m, BaseTunerLayer) for m in merged.modules())
    assert any(isinstance(m, BaseTunerLayer) for m in model.modules())  # the model itself is left as it was
    images = torch.rand(3, 3, 16, 16)
    torch.testing.assert_close(merged(images), model(images), rtol=1e-5, atol=1e-5)


@pytest.mark.slow  # a TorchScript export
def test_export_writes_the_merged_model(tmp_path):
    model = create_model(tiny_vit_spec(), "lora", 4).eval()
    export_model(model, tmp_path / "lora.pt", "torchscript")
    exported = torch.jit.load(str(tmp_path / "lora.pt"))
    assert not any("lora" in name for name, _ in exported.named_parameters())
    images = torch.rand(2, 3, 16, 16)
    torch.testing.assert_close(exported(images), model(images), rtol=1e-5, atol=1e-5)


def test_any_peft_tuner_by_name_takes_its_options_and_loads_back(tmp_path):
    # LoHa: two rank-r Hadamard factors, each r·(in + out) per layer: at r = 2 the count of LoRA at r = 4
    report = count_parameters(tiny_vit_spec(), "peft:loha", 4, r=2)
    assert report.backbone == tuner_count("lora", 32, 3, 128, {}) // 2
    model = tuned("peft:loha", r=2)
    save_prompt(model, tmp_path / "loha")
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(load_prompt(tmp_path / "loha").eval()(images), model(images))
    with pytest.raises(ConfigError, match="no tuner 'nosuch' that adapts a model's layers \\(peft's: .*peft:loha"):
        create_model(tiny_vit_spec(), "peft:nosuch", 4)
    with pytest.raises(ConfigError, match="peft has no tuner 'prompt_tuning' that adapts"):  # it wraps a model
        create_model(tiny_vit_spec(), "peft:prompt_tuning", 4)
    with pytest.raises(ConfigError, match="peft could not adapt VisionTransformer: .*total_step"):  # an option it needs
        create_model(tiny_vit_spec(), "peft:adalora", 4)
    with pytest.raises(ConfigError, match="method 'peft:loha' does not take rank"):
        create_model(tiny_vit_spec(), "peft:loha", 4, rank=2)


@pytest.mark.slow  # train, predict, attack, count and sweep through the command line
def test_a_tuner_runs_through_train_predict_eval_attack_params_and_sweep(tmp_path, capsys):
    from vprompt.cli import main
    from vprompt.data import write_synthetic_suite

    task = write_synthetic_suite(tmp_path / "suite", tasks=["digits"], image_size=16, test_size=20, progress=False)[0]
    tiny = ["--model", "vit_tiny_patch16_224", "--init-seed", "0", "--model-arg", "img_size=16", "patch_size=4",
            "embed_dim=32", "depth=3", "num_heads=2"]
    main(["train", "--data", str(task), "--out", str(tmp_path / "lora"), *tiny, "--method", "lora",
          "--method-arg", "r=2", "--epochs", "1", "--no-progress"])
    prompt = tmp_path / "lora" / "prompt"
    main(["predict", "--prompt", str(prompt), "--data", str(task), "--out", str(tmp_path / "predicted.csv"),
          "--no-progress"])
    assert len((tmp_path / "predicted.csv").read_text().splitlines()) == 21  # a header and every test image
    capsys.readouterr()
    main(["eval", "--prompt", str(prompt), "--data", str(task), "--attack", "pgd", "--images", "6", "--steps", "2",
          "--eps", "1/255", "--json"])
    robust = json.loads(capsys.readouterr().out)["robust"]
    assert robust["n"] == 6 and 0 <= robust["robust_acc_pgd"] <= robust["clean_acc"] <= 1
    main(["params", *tiny, "--method", "lora", "--method-arg", "r=2", "--num-classes", "10", "--json"])
    assert json.loads(capsys.readouterr().out)["backbone"] == tuner_count("lora", 32, 3, 128, {}) // 4  # r = 2
    main(["sweep", "--data", str(task), "--out", str(tmp_path / "sweep"), *tiny, "--methods", "lora",
          "--method-arg", "r=2", "--ray", "none", "--seeds", "0", "--base-lrs", "0.02", "--weight-decays", "0",
          "--epochs", "1"])
    rows = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert [row["method"] for row in rows] == ["lora"]
