"""VPT token prompts: placement, deep replacement, pooling, gradients and parameter counts."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_vit_spec
from vprompt.backbones import BackboneSpec
from vprompt.errors import ConfigError
from vprompt.model import create_model, parameter_report
from vprompt.prompts.tokens import vpt_init_bound


def record_block_inputs(model) -> list[torch.Tensor]:
    """Capture what each block receives, after the prompt hooks have run."""
    seen: list[torch.Tensor] = []
    for block in model.backbone.blocks:
        block.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    return seen


def record_norm_output(model) -> list[torch.Tensor]:
    """The final norm's output: the tokens that timm's pooling receives."""
    seen: list[torch.Tensor] = []
    model.backbone.norm.register_forward_hook(lambda m, args, out: seen.append(out.detach().clone()))
    return seen


def test_shallow_prompts_sit_after_cls_and_pass_through_blocks(vit_spec, images):
    model = create_model(vit_spec, "vpt-shallow", 3, prompt_len=5)
    seen = record_block_inputs(model)
    model(images)
    grid = 4 * 4
    assert seen[0].shape == (4, 1 + 5 + grid, 32)
    prompts = model.token_prompt.prompts[0]
    assert torch.equal(seen[0][:, 1:6], prompts.expand(4, -1, -1))
    # Shallow: later blocks receive the previous block's prompt outputs, not the parameters.
    assert not torch.allclose(seen[1][:, 1:6], prompts.expand(4, -1, -1))


@pytest.mark.parametrize("lean", [True, False])
def test_deep_prompts_replace_prompt_outputs_in_every_block(vit_spec, images, lean):
    model = create_model(vit_spec, "vpt-deep", 3, prompt_len=2)
    model.set_lean(lean)
    block_inputs = record_block_inputs(model)
    block_outputs: list[torch.Tensor] = []
    for block in model.backbone.blocks:
        block.register_forward_hook(lambda m, a, out: block_outputs.append(out.detach().clone()))
    model(images)
    for index in range(1, 3):
        expected_prompt = model.token_prompt.prompts[index].expand(4, -1, -1)
        assert torch.equal(block_inputs[index][:, 1:3], expected_prompt)
        # Everything but the prompt slice is the previous block's output, untouched; the lean
        # forward never computed the prompt outputs that the next block's prompts replace.
        previous = block_outputs[index - 1]
        assert previous.shape[1] == (1 + 16 if lean else 1 + 2 + 16)
        assert torch.equal(block_inputs[index][:, :1], previous[:, :1])
        assert torch.equal(block_inputs[index][:, 3:], previous[:, -16:])
    assert block_outputs[-1].shape[1] == (1 if lean else 1 + 2 + 16)  # lean: the class token, all token pooling reads


def test_prompts_follow_register_tokens(images):
    model = create_model(tiny_vit_spec(reg_tokens=2), "vpt-shallow", 3, prompt_len=4)
    seen = record_block_inputs(model)
    model(images)
    assert model.backbone.num_prefix_tokens == 3
    assert torch.equal(seen[0][:, 3:7], model.token_prompt.prompts[0].expand(4, -1, -1))


@pytest.mark.parametrize("method", ["vpt-shallow", "vpt-deep"])
@pytest.mark.parametrize("pool", [{"global_pool": "token"}, {"global_pool": "avg", "class_token": False}])
@pytest.mark.parametrize("lean", [True, False])
def test_pooling_never_sees_prompt_tokens(method, pool, images, lean):
    model = create_model(tiny_vit_spec(**pool), method, 3, prompt_len=6)
    model.set_lean(lean)
    pooled_tokens = record_norm_output(model)
    features = model.features(images)
    prefix = model.backbone.num_prefix_tokens
    tokens = pooled_tokens[0]
    assert tokens.shape[1] == (1 if lean and pool["global_pool"] == "token" else prefix + 16)
    if pool["global_pool"] == "avg":
        expected = model.backbone.fc_norm(tokens[:, prefix:].mean(1))
    else:
        expected = tokens[:, 0]
    torch.testing.assert_close(features, expected)


@pytest.mark.parametrize("method", ["vpt-shallow", "vpt-deep", "linear"])
def test_gradients_reach_only_prompts_and_head(vit_spec, images, method):
    model = create_model(vit_spec, method, 3, **({} if method == "linear" else {"prompt_len": 3}))
    model(images).logsumexp(1).sum().backward()
    for name, param in model.backbone.named_parameters():
        assert param.grad is None, name
    assert model.head.fc.weight.grad is not None and model.head.fc.weight.grad.abs().sum() > 0
    if model.token_prompt is not None:
        grad = model.token_prompt.prompts.grad
        assert grad is not None and (grad.abs().sum(dim=(1, 2)) > 0).all()


def test_full_finetune_trains_the_backbone(vit_spec, images):
    model = create_model(vit_spec, "full", 3)
    model(images).sum().backward()
    assert all(p.grad is not None for p in model.backbone.parameters() if p.requires_grad)
    assert parameter_report(model).backbone == parameter_report(model).backbone_total


@pytest.mark.parametrize("shape", [dict(embed_dim=32, depth=3), dict(embed_dim=48, depth=5, num_heads=3)])
@pytest.mark.parametrize("p", [1, 7])
def test_parameter_counts_follow_vpt_formulas(shape, p):
    spec = tiny_vit_spec(**shape)
    d, depth, classes = shape["embed_dim"], shape["depth"], 5
    shallow = parameter_report(create_model(spec, "vpt-shallow", classes, prompt_len=p))
    deep = parameter_report(create_model(spec, "vpt-deep", classes, prompt_len=p))
    linear = parameter_report(create_model(spec, "linear", classes))
    assert shallow.prompt == p * d
    assert deep.prompt == depth * p * d
    assert linear.prompt == 0
    for report in (shallow, deep, linear):
        assert report.head == d * classes + classes
        assert report.total_trainable == report.prompt + report.head
        assert report.backbone == 0


def test_vpt_init_uses_the_papers_uniform_bound(vit_spec):
    model = create_model(vit_spec, "vpt-deep", 3, prompt_len=50)
    bound = vpt_init_bound((4, 4), 32)
    assert bound == pytest.approx((6 / (3 * 16 + 32)) ** 0.5)
    prompts = model.token_prompt.prompts
    assert prompts.abs().max() <= bound
    assert prompts.abs().max() > 0.9 * bound  # really uniform over the range, not a tiny init


def test_prompt_dropout_is_active_only_in_training(vit_spec, images):
    model = create_model(vit_spec, "vpt-shallow", 3, prompt_len=4, prompt_dropout=0.5)
    model.eval()
    assert torch.equal(model(images), model(images))
    model.train()
    assert not torch.equal(model(images), model(images))


def test_token_prompts_refuse_a_cnn():
    with pytest.raises(ConfigError, match="not a supported family"):
        create_model(BackboneSpec("resnet18", init_seed=0), "vpt-deep", 3, prompt_len=2)


def test_linear_probe_works_on_a_cnn():
    model = create_model(BackboneSpec("resnet18", init_seed=0), "linear", 3)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 3)
    assert parameter_report(model).head == 512 * 3 + 3


def test_unknown_method_and_option_are_clear_errors(vit_spec):
    with pytest.raises(ConfigError, match="unknown method 'vtp'"):
        create_model(vit_spec, "vtp", 3)
    with pytest.raises(ConfigError, match="does not take prompt_len"):
        create_model(vit_spec, "linear", 3, prompt_len=3)
