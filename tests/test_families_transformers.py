"""Hugging Face transformers vision backbones as a family, on tiny random configs built offline:
removing the prompts restores the bare model bit for bit, gradients reach only prompts and head,
counts follow p·d and L·p·d, DINOv2 registers equal shallow prompts, save → load is exact, export
and the attacks run, a checkpoint folder loads offline, and the CLI trains on one end to end."""

from __future__ import annotations

import json

import pytest
import torch
import transformers

import vprompt
from vprompt.backbones import BackboneSpec, create_backbone
from vprompt.errors import ConfigError
from vprompt.families.hf_transformers import OPENAI_CLIP, TransformersBackbone
from vprompt.model import parameter_report
from vprompt.robust.evaluation import AttackConfig, attack_report

LAYERS, WIDTH, P = 2, 32, 2
VIT = dict(hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=2, intermediate_size=64, image_size=16,
           patch_size=4)
DINO = dict(hidden_size=WIDTH, num_hidden_layers=LAYERS, num_attention_heads=2, mlp_ratio=2, image_size=16,
            patch_size=4)
CONFIGS = {"ViTModel": VIT, "ViTForImageClassification": dict(VIT, num_labels=5), "Dinov2Model": DINO,
           "Dinov2WithRegistersModel": dict(DINO, num_register_tokens=3), "CLIPVisionModel": VIT,
           "SiglipVisionModel": VIT}
TOKEN_METHODS = ("vpt-shallow", "vpt-deep", "vapt")
CASES = [(cls, method) for cls in CONFIGS for method in TOKEN_METHODS]


def spec(cls: str, **extra) -> BackboneSpec:
    return BackboneSpec(f"hf-transformers:{cls}", kwargs={**CONFIGS[cls], **extra}, init_seed=0)


def images(n: int = 3) -> torch.Tensor:
    return torch.rand(n, 3, 16, 16, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("cls, method", CASES)
def test_removing_the_prompts_restores_the_bare_model_bit_for_bit(cls, method):
    model = vprompt.create_model(spec(cls), method, 3, prompt_len=P)
    x = (images() - model.mean) / model.std
    prompted = model.backbone.forward_features(x)
    model.token_prompt.detach()
    restored = model.backbone.forward_features(x)
    assert not torch.equal(prompted, restored)
    assert torch.equal(restored, create_backbone(spec(cls)).forward_features(x))


@pytest.mark.parametrize("cls, method", CASES)
def test_gradients_reach_only_prompts_and_head(cls, method):
    model = vprompt.create_model(spec(cls), method, 3, prompt_len=P).train()
    model(images()).logsumexp(1).sum().backward()
    assert all(param.grad is None for param in model.backbone.parameters())
    grads = [param.grad for param in model.token_prompt.parameters()]
    assert grads and all(grad is not None for grad in grads)
    assert model.head.fc.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", CONFIGS)
def test_prompt_counts_are_p_d_and_l_p_d(cls):
    assert parameter_report(vprompt.create_model(spec(cls), "vpt-shallow", 3, prompt_len=P)).prompt == P * WIDTH
    assert parameter_report(vprompt.create_model(spec(cls), "vpt-deep", 3, prompt_len=P)).prompt == LAYERS * P * WIDTH
    assert vprompt.count_parameters(spec(cls), "vpt-deep", 3, prompt_len=P) == \
        parameter_report(vprompt.create_model(spec(cls), "vpt-deep", 3, prompt_len=P))


def test_dinov2_shallow_prompts_equal_register_tokens_set_to_them():
    """Prompts enter right after CLS and the registers, so R registers + VPT-shallow P is the model
    with R + p registers whose last p are P (the architecture adds no position embedding to either)."""
    registers = CONFIGS["Dinov2WithRegistersModel"]["num_register_tokens"]
    prompted = vprompt.create_model(spec("Dinov2WithRegistersModel"), "vpt-shallow", 3, prompt_len=P).eval()
    torch.nn.init.normal_(prompted.token_prompt.prompts)  # not the init's small values
    oracle = create_backbone(spec("Dinov2WithRegistersModel", num_register_tokens=registers + P))
    weights = dict(prompted.backbone.state_dict())
    key = "body.embeddings.register_tokens"
    weights[key] = torch.cat([weights[key], prompted.token_prompt.prompts.detach().reshape(1, P, WIDTH)], dim=1)
    oracle.load_state_dict(weights)
    x = (images() - prompted.mean) / prompted.std
    expected = oracle.forward_features(x)
    expected = torch.cat([expected[:, :1 + registers], expected[:, 1 + registers + P:]], dim=1)
    assert torch.allclose(prompted.backbone.forward_features(x), expected, atol=1e-5)


@pytest.mark.slow  # TorchScript export and PGD on three families
@pytest.mark.parametrize("cls", ["ViTForImageClassification", "Dinov2Model", "SiglipVisionModel"])
def test_save_then_load_gives_identical_logits_and_export_and_attacks_run(tmp_path, cls):
    model = vprompt.create_model(spec(cls), "vpt-deep", 3, prompt_len=P).train()
    optimizer = torch.optim.SGD([q for q in model.parameters() if q.requires_grad], lr=1.0)
    model(images()).logsumexp(1).sum().backward()
    optimizer.step()
    model.eval()
    vprompt.save_prompt(model, tmp_path / "prompt")
    loaded = vprompt.load_prompt(tmp_path / "prompt")
    assert torch.equal(model(images()), loaded(images()))
    from vprompt.export import export_model

    export_model(loaded, tmp_path / "model.pt", "torchscript", tmp_path / "prompt")  # checked against the model
    data = [(image, 0) for image in images(4)]
    report = attack_report(loaded, data, 3, AttackConfig(attack="pgd", steps=2, images=4), progress=False)
    assert 0 <= report["robust_acc_pgd"] <= report["clean_acc"] <= 1


def test_a_checkpoint_folder_loads_offline_with_its_image_processors_settings(tmp_path):
    torch.manual_seed(0)
    model = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(**VIT))
    model.save_pretrained(tmp_path / "clip")
    transformers.CLIPImageProcessor(size={"shortest_edge": 16}, crop_size={"height": 16, "width": 16}).save_pretrained(
        tmp_path / "clip")
    prompted = vprompt.create_model(f"hf-transformers:{tmp_path / 'clip'}", "vpt-deep", 3, prompt_len=P)
    assert prompted.data_config.mean == pytest.approx(OPENAI_CLIP[0]) and prompted.image_size == (16, 16)
    assert prompted.backbone_fingerprint == vprompt.backbones.fingerprint(TransformersBackbone(model, *OPENAI_CLIP,
                                                                                              (16, 16)))
    with pytest.raises(ConfigError, match="not in the local Hugging Face cache"):
        vprompt.create_model("hf-transformers:nobody/no-such-model", "vpt-deep", 3)


def test_a_transformers_module_you_built_is_prompted_and_another_model_type_is_refused():
    torch.manual_seed(0)
    module = transformers.Dinov2Model(transformers.Dinov2Config(**DINO))
    model = vprompt.create_model(module, "vapt", 3, prompt_len=P)
    assert model(images()).shape == (3, 3) and model.backbone_spec.name.endswith("Dinov2Model")
    with pytest.raises(ConfigError, match="already serves a PromptedModel"):
        vprompt.create_model(module, "vpt-deep", 3)
    bert = transformers.BertModel(transformers.BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                          intermediate_size=32))
    with pytest.raises(ConfigError, match="a BertModel cannot be a backbone"):
        vprompt.create_model(bert, "vpt-deep", 3)


@pytest.mark.slow  # end to end through the CLI
@pytest.mark.parametrize("cls", ["Dinov2Model", "ViTModel"])
@pytest.mark.parametrize("method", ["vpt-deep", "vapt"])
def test_a_saved_checkpoint_trains_and_evaluates_from_the_cli(capsys, tmp_path, cls, method):
    from vprompt.cli import main
    from vprompt.data import write_synthetic_suite

    torch.manual_seed(0)
    getattr(transformers, cls)(getattr(transformers, cls.replace("Model", "Config"))(**CONFIGS[cls])).save_pretrained(
        tmp_path / "backbone")
    task = write_synthetic_suite(tmp_path / "suite", tasks=["digits"], image_size=16, test_size=20, progress=False)[0]
    run, name = tmp_path / "run", f"hf-transformers:{tmp_path / 'backbone'}"
    main(["train", "--data", str(task), "--out", str(run), "--model", name, "--method", method, "--prompt-len", "2",
          "--epochs", "1", "--warmup-epochs", "0", "--no-progress"])
    trained = json.loads(capsys.readouterr().out)
    with pytest.raises(SystemExit):  # the prompt file names a local folder: the user gives it (a trust boundary)
        main(["eval", "--prompt", str(run), "--data", str(task), "--json"])
    assert "give the folder yourself: --weights FOLDER" in capsys.readouterr().err
    main(["eval", "--prompt", str(run), "--data", str(task), "--json", "--weights", str(tmp_path / "backbone")])
    scored = json.loads(capsys.readouterr().out)
    assert scored["n"] == 20 and scored["acc"] == pytest.approx(trained["eval_acc"])
    assert json.loads((run / "prompt" / "prompt.json").read_text())["backbone"]["name"] == name


@pytest.mark.slow  # four trainings
@pytest.mark.parametrize("cls", ["Dinov2Model", "ViTModel"])
@pytest.mark.parametrize("method", ["vpt-deep", "vapt"])
def test_a_module_built_in_python_trains_with_the_library_loop(tmp_path, cls, method):
    from vprompt.data import FileListDataset, write_synthetic_suite

    task = write_synthetic_suite(tmp_path / "suite", tasks=["digits"], image_size=16, test_size=20, progress=False)[0]
    torch.manual_seed(0)
    module = getattr(transformers, cls)(getattr(transformers, cls.replace("Model", "Config"))(**CONFIGS[cls]))
    model = vprompt.create_model(module, method, 10, prompt_len=P)
    before = {k: v.clone() for k, v in model.trainable_state().items()}
    result = vprompt.train(model, FileListDataset(task, "train800val200", model.image_size), tmp_path / "run",
                           vprompt.TrainConfig(epochs=1, warmup_epochs=0, batch_size=100, optimizer="adamw", base_lr=0.1),
                           eval_set=FileListDataset(task, "test", model.image_size), progress=False)
    assert len(result.metrics) == 1 and 0 <= result.metrics[0]["eval_acc"] <= 1
    assert any(not torch.equal(before[k], v) for k, v in model.trainable_state().items())


def test_a_checkpoint_name_is_not_random_weights_however_it_is_spelled():
    for name in ("hf-transformers:dinov2-tiny", "hf-transformers:facebook/dinov2-small"):  # a folder, a hub name
        assert not BackboneSpec(name).random_init and BackboneSpec(name).weights_source() == "a transformers checkpoint"
    assert BackboneSpec("hf-transformers:Dinov2Model").random_init
    assert BackboneSpec("hf-transformers:Dinov2Model").weights_source() == "random init, seed 0"
    assert BackboneSpec("robustbench:Salman2020Do_R18").weights_source() == "RobustBench weights"
