"""VAPT: zero adaptive prompts at init, input dependence, gradients, and the parameter formula."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_vit_spec
from test_prompts_tokens import record_block_inputs
from vprompt.errors import ConfigError
from vprompt.model import create_model, parameter_report


def randomise_generators(model) -> None:
    """Leave the zero init behind, as training does."""
    with torch.no_grad():
        for generator in model.token_prompt.generators:
            generator.to_prompts.weight.normal_(0, 0.5)
            generator.to_prompts.bias.normal_(0, 0.5)


def vapt_formula(p: int, d: int, depth: int, grid: tuple[int, int], k: int = 2, r: int = 8) -> int:
    """The VAPT method page (docs/methods/vapt.md): p·d + (L−1)·(2d + K² + (Hp−K+1)(Wp−K+1)·p + p) + 2rd."""
    positions = (grid[0] - k + 1) * (grid[1] - k + 1)
    return p * d + (depth - 1) * (2 * d + k * k + positions * p + p) + 2 * r * d


def test_adaptive_prompts_are_exactly_zero_at_init(vit_spec, images):
    model = create_model(vit_spec, "vapt", 3, prompt_len=4).train()  # even with dropout active
    seen = record_block_inputs(model)
    model(images)
    assert torch.equal(seen[0][:, 1:5], model.token_prompt.static.expand(4, -1, -1))
    for block_input in seen[1:]:
        assert torch.count_nonzero(block_input[:, 1:5]) == 0


def test_prompts_follow_the_input(vit_spec, images):
    model = create_model(vit_spec, "vapt", 3, prompt_len=4).eval()
    randomise_generators(model)
    seen = record_block_inputs(model)
    model(images)
    model(images)
    model(images.flip(-1))
    depth = len(model.backbone.blocks)
    first, again, flipped = seen[:depth], seen[depth:2 * depth], seen[2 * depth:]
    for index in range(1, depth):
        assert torch.equal(first[index][:, 1:5], again[index][:, 1:5])  # deterministic in eval
        assert not torch.allclose(first[index][:, 1:5], flipped[index][:, 1:5])  # adaptive
        per_image = first[index][:, 1:5]
        assert not torch.allclose(per_image[0], per_image[1])  # one prompt set per image


def test_gradients_reach_the_generator_and_never_the_backbone(vit_spec, images):
    model = create_model(vit_spec, "vapt", 3, prompt_len=4)
    model(images).logsumexp(1).sum().backward()
    prompt = model.token_prompt
    assert prompt.static.grad.abs().sum() > 0
    assert all(g.to_prompts.weight.grad.abs().sum() > 0 for g in prompt.generators)  # even at zero init
    model.zero_grad()
    randomise_generators(model)
    model(images).logsumexp(1).sum().backward()
    for name, param in prompt.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in model.backbone.parameters())


@pytest.mark.parametrize("shape, grid", [
    (dict(), (4, 4)),
    (dict(img_size=(16, 24), embed_dim=48, depth=4, num_heads=3), (4, 6)),  # non-square grid
    (dict(img_size=32, patch_size=8, class_token=False, global_pool="avg", reg_tokens=2), (4, 4)),
])
@pytest.mark.parametrize("p", [1, 10])
def test_parameter_count_follows_the_formula(shape, grid, p):
    spec = tiny_vit_spec(**shape)
    model = create_model(spec, "vapt", 5, prompt_len=p)
    d, depth = model.backbone.embed_dim, len(model.backbone.blocks)
    assert tuple(model.backbone.patch_embed.grid_size) == grid
    assert parameter_report(model).prompt == vapt_formula(p, d, depth, grid)
    assert model(torch.rand(2, 3, *model.data_config.input_size)).shape == (2, 5)


def test_ablation_options_change_the_parameter_count_as_designed(vit_spec):
    p, d, depth, grid = 3, 32, 3, (4, 4)
    base = vapt_formula(p, d, depth, grid)

    def count(**options) -> int:
        return parameter_report(create_model(vit_spec, "vapt", 5, prompt_len=p, **options)).prompt

    assert count(kernel=3) == vapt_formula(p, d, depth, grid, k=3)
    assert count(conv=False) == base - (depth - 1) * (4 + (9 - 16) * p)
    assert count(projector="none") == base - 2 * 8 * d
    assert count(projector="per-layer") == base + (depth - 2) * 2 * 8 * d
    assert count(projector_width=4) == base - 2 * 4 * d
    assert count(residual=False) == base


def test_vapt_refuses_what_it_cannot_do(vit_spec):
    with pytest.raises(ConfigError, match="kernel 5 is larger than the 4×4 patch grid"):
        create_model(vit_spec, "vapt", 3, kernel=5)
    with pytest.raises(ConfigError, match="projector must be one of shared, per-layer, none, got 'both'"):
        create_model(vit_spec, "vapt", 3, projector="both")
    with pytest.raises(ConfigError, match="not a supported family"):
        from vprompt.backbones import BackboneSpec

        create_model(BackboneSpec("resnet18", init_seed=0), "vapt", 3)



def test_vapt_on_a_dynamic_size_vit_needs_images_at_its_grid(images):
    """DINOv3 and other dynamic-size ViTs build their grid from the image: VAPT runs at the model's
    input size (the PromptedModel's contract) and says so for any other size."""
    model = create_model(tiny_vit_spec(dynamic_img_size=True), "vapt", 3, prompt_len=2)
    assert model(images).shape == (4, 3)
    with pytest.raises(ConfigError, match="built for a 4×4 patch grid, and 36 patch tokens arrived"):
        model.backbone.forward_features(torch.rand(1, 3, 24, 24))


@pytest.mark.parametrize("conv", [True, False])
def test_fused_generator_equals_conv_on_every_channel_then_projector(conv):
    """The generator folds conv + token projector into one map; check it against the literal recipe."""
    from vprompt.prompts.adaptive import PromptGenerator, VAPTConfig

    generator = PromptGenerator(32, (4, 6), VAPTConfig(prompt_len=3, conv=conv, kernel=2)).eval()
    torch.nn.init.normal_(generator.to_prompts.weight)
    torch.nn.init.normal_(generator.to_prompts.bias)
    patches = torch.randn(5, 24, 32)
    grid = generator.norm(patches).transpose(1, 2).reshape(5, 32, 4, 6)
    if conv:  # the spec: one K×K kernel applied to each of the d channels
        grid = generator.conv(grid.reshape(5 * 32, 1, 4, 6))
    literal = generator.to_prompts(grid.reshape(5, 32, -1)).transpose(1, 2)
    torch.testing.assert_close(generator(patches), literal, rtol=1e-5, atol=1e-5)


def test_channel_dropout_drops_whole_channels_per_image_in_training_only():
    from vprompt.prompts.adaptive import PromptGenerator, VAPTConfig

    generator = PromptGenerator(64, (4, 4), VAPTConfig(prompt_len=3, conv_dropout=0.5))
    torch.nn.init.normal_(generator.to_prompts.weight)
    patches = torch.randn(8, 16, 64)
    dropped = generator(patches) == 0  # bias is zero, so a dropped channel is exactly 0
    per_channel = dropped.all(dim=1)  # (B, d): a channel is dropped for all p prompts at once
    assert torch.equal(dropped, per_channel.unsqueeze(1).expand_as(dropped))
    assert 0.3 < per_channel.float().mean() < 0.7
    assert not (generator.eval()(patches) == 0).any()
