"""VAPT's ablation options (docs/results/vapt_differences.md): each one changes what it should, and
the defaults stay what they were."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_vit_spec
from test_prompts_adaptive import randomise_generators, vapt_formula
from test_prompts_tokens import record_block_inputs

from vprompt.errors import ConfigError
from vprompt.model import create_model, parameter_report
from vprompt.prompts.adaptive import FeatureProjector, PromptGenerator, VAPTConfig


def prompt_count(spec, **options) -> int:
    return parameter_report(create_model(spec, "vapt", 5, prompt_len=3, **options)).prompt


# --- the convolution: init, per-channel kernels, padding ---------------------------------------


def test_normal_kernel_init_has_unit_std_and_the_default_stays_uniform():
    d, kernel = 256, 4
    normal = PromptGenerator(d, (8, 8), VAPTConfig(kernel=kernel, channelwise=False, conv_init="normal"))
    uniform = PromptGenerator(d, (8, 8), VAPTConfig(kernel=kernel, channelwise=False))
    assert normal.conv.weight.numel() == uniform.conv.weight.numel() == d * kernel**2
    assert 0.95 < normal.conv.weight.std() < 1.05
    assert abs(normal.conv.weight.mean()) < 0.05
    assert normal.conv.weight.abs().max() > 1 / kernel  # outside the uniform bound: not U(±1/K)
    assert uniform.conv.weight.abs().max() <= 1 / kernel  # nn.Conv2d's default, U(±1/K)
    assert uniform.conv.weight.std().item() == pytest.approx(1 / (kernel * math.sqrt(3)), rel=0.05)
    shared = PromptGenerator(32, (4, 4), VAPTConfig(conv_init="normal"))
    assert shared.conv.weight.shape == (1, 1, 2, 2)  # still one shared kernel


@pytest.mark.parametrize("kernel, padding", [(2, 0), (3, 1), (2, 2)])
def test_per_channel_kernels_cost_d_k2_per_layer(kernel, padding):
    p, d, grid = 3, 32, (4, 6)
    generator = PromptGenerator(d, grid, VAPTConfig(prompt_len=p, kernel=kernel, padding=padding, channelwise=False))
    positions = (grid[0] + 2 * padding - kernel + 1) * (grid[1] + 2 * padding - kernel + 1)
    layer_norm = 2 * d
    assert sum(t.numel() for t in generator.parameters()) == layer_norm + d * kernel**2 + p * (positions + 1)
    shared = PromptGenerator(d, grid, VAPTConfig(prompt_len=p, kernel=kernel, padding=padding))
    assert sum(t.numel() for t in shared.parameters()) == layer_norm + kernel**2 + p * (positions + 1)


def test_per_channel_kernels_in_the_model_parameter_count(vit_spec):
    d, depth, k = 32, 3, 2
    base = vapt_formula(3, d, depth, (4, 4))
    assert prompt_count(vit_spec) == base
    assert prompt_count(vit_spec, channelwise=False) == base + (depth - 1) * (d - 1) * k * k
    assert prompt_count(vit_spec, channelwise=False, kernel=3) == vapt_formula(3, d, depth, (4, 4), k=3) + (
        depth - 1) * (d - 1) * 9


@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("kernel", [2, 3])
def test_padding_sets_the_conv_grid_and_the_parameter_count(vit_spec, kernel, padding):
    generator = PromptGenerator(32, (4, 6), VAPTConfig(prompt_len=3, kernel=kernel, padding=padding))
    assert generator.conv_grid == (4 + 2 * padding - kernel + 1, 6 + 2 * padding - kernel + 1)
    assert generator.to_prompts.in_features == generator.conv_grid[0] * generator.conv_grid[1]
    assert generator.conv.padding == (padding, padding)
    p, d, depth, side = 3, 32, 3, 4 + 2 * padding  # the formula on the padded 4×4 grid
    assert prompt_count(vit_spec, kernel=kernel, padding=padding) == vapt_formula(p, d, depth, (side, side), k=kernel)


def test_padding_lets_a_kernel_larger_than_the_grid_fit(vit_spec):
    with pytest.raises(ConfigError, match="kernel 6 is larger than the 4×4 patch grid$"):
        create_model(vit_spec, "vapt", 3, kernel=6)
    with pytest.raises(ConfigError, match="kernel 7 is larger than the 4×4 patch grid padded by 1"):
        create_model(vit_spec, "vapt", 3, kernel=7, padding=1)
    model = create_model(vit_spec, "vapt", 3, prompt_len=2, kernel=6, padding=1)
    assert model.token_prompt.generators[0].conv_grid == (1, 1)
    assert model(torch.rand(2, 3, 16, 16)).shape == (2, 3)


def literal_recipe(generator: PromptGenerator, patches: torch.Tensor) -> torch.Tensor:
    """The spec spelt out: conv on each of the B·d channel images (each with its channel's kernel when
    there is one per channel), then the linear token projector over the conv's grid positions."""
    batch, _, d = patches.shape
    height, width = generator.grid
    grid = generator.norm(patches).transpose(1, 2).reshape(batch, d, height, width)
    weight, padding = generator.conv.weight, generator.padding
    if weight.shape[0] == 1:  # one kernel for all B·d images
        convolved = F.conv2d(grid.reshape(batch * d, 1, height, width), weight, padding=padding)
    else:  # channel c of every image with kernel c
        convolved = torch.cat([F.conv2d(grid[:, c:c + 1], weight[c:c + 1], padding=padding) for c in range(d)], 1)
    return generator.to_prompts(convolved.reshape(batch, d, -1)).transpose(1, 2)


@pytest.mark.parametrize("padding", [0, 1, 2])
@pytest.mark.parametrize("channelwise", [True, False])
@pytest.mark.parametrize("kernel", [2, 3])
def test_folded_map_equals_the_explicit_conv_then_projector(channelwise, padding, kernel):
    config = VAPTConfig(prompt_len=3, kernel=kernel, padding=padding, channelwise=channelwise, conv_init="normal")
    generator = PromptGenerator(32, (4, 6), config).eval()
    torch.nn.init.normal_(generator.to_prompts.weight)
    torch.nn.init.normal_(generator.to_prompts.bias)
    torch.nn.init.normal_(generator.norm.weight)  # an affine LayerNorm that is not the identity
    patches = torch.randn(5, 24, 32)
    expected = (32, 3, 24) if not channelwise else (3, 24)
    assert generator.grid_map().shape == expected
    torch.testing.assert_close(generator(patches), literal_recipe(generator, patches), rtol=1e-4, atol=1e-4)


def test_per_channel_kernels_really_differ_per_channel():
    """A per-channel generator whose kernels are all equal gives the shared one's prompts; unequal do not."""
    config = VAPTConfig(prompt_len=3, channelwise=False)
    per_channel = PromptGenerator(32, (4, 4), config).eval()
    shared = PromptGenerator(32, (4, 4), VAPTConfig(prompt_len=3)).eval()
    torch.nn.init.normal_(per_channel.to_prompts.weight)
    shared.load_state_dict({**per_channel.state_dict(), "conv.weight": per_channel.conv.weight[:1]})
    patches = torch.randn(2, 16, 32)
    assert not torch.allclose(per_channel(patches), shared(patches))
    with torch.no_grad():
        per_channel.conv.weight.copy_(shared.conv.weight.expand_as(per_channel.conv.weight))
    torch.testing.assert_close(per_channel(patches), shared(patches), rtol=1e-5, atol=1e-5)


# --- channel dropout belongs to the convolution --------------------------------------------------


def test_channel_dropout_only_applies_with_the_conv():
    patches = torch.randn(8, 16, 64)
    off = PromptGenerator(64, (4, 4), VAPTConfig(prompt_len=3, conv=False, conv_dropout=0.5)).train()
    torch.nn.init.normal_(off.to_prompts.weight)
    first = off(patches)
    assert torch.equal(first, off(patches))  # deterministic in training mode: no Dropout2d
    assert torch.equal(first, off.eval()(patches))
    assert not (first == 0).any()
    on = PromptGenerator(64, (4, 4), VAPTConfig(prompt_len=3, conv_dropout=0.5)).train()
    torch.nn.init.normal_(on.to_prompts.weight)
    assert not torch.equal(on(patches), on(patches))  # the check above can fail: with the conv it drops


def test_conv_off_model_trains_deterministically(vit_spec, images):
    model = create_model(vit_spec, "vapt", 3, prompt_len=4, conv=False, projector_dropout=0.0).train()
    randomise_generators(model)
    assert torch.equal(model(images), model(images))


# --- static prompts at the first blocks -----------------------------------------------------------


def test_static_layers_give_free_prompts_before_the_generated_ones(images):
    spec = tiny_vit_spec(depth=4)
    model = create_model(spec, "vapt", 3, prompt_len=4, static_layers=3).eval()
    prompt = model.token_prompt
    assert prompt.static.shape == (4, 32)  # block 0 keeps its (p, d) tensor
    assert prompt.static_deep.shape == (2, 4, 32)
    assert len(prompt.generators) == 1
    randomise_generators(model)
    seen = record_block_inputs(model)
    model(images)
    model(images.flip(-1))
    first, flipped = seen[:4], seen[4:]
    assert torch.equal(first[0][:, 1:5], prompt.static.expand(4, -1, -1))
    for block in (1, 2):
        assert torch.equal(first[block][:, 1:5], prompt.static_deep[block - 1].expand(4, -1, -1))
        assert torch.equal(first[block][:, 1:5], flipped[block][:, 1:5])  # not input-dependent
    assert not torch.allclose(first[3][:, 1:5], flipped[3][:, 1:5])  # generated from block 3 on
    assert not torch.allclose(first[3][0, 1:5], first[3][1, 1:5])
    model.train()
    model(images).logsumexp(1).sum().backward()
    assert prompt.static_deep.grad is not None
    assert (prompt.static_deep.grad.flatten(1).abs().sum(1) > 0).all()  # both static blocks learn
    assert prompt.generators[0].to_prompts.weight.grad.abs().sum() > 0


def test_static_layers_at_zero_init_generate_zeros_after_them(images):
    model = create_model(tiny_vit_spec(depth=4), "vapt", 3, prompt_len=4, static_layers=2).eval()
    seen = record_block_inputs(model)
    model(images)
    assert torch.count_nonzero(seen[1][:, 1:5]) == 4 * 4 * 32
    assert torch.count_nonzero(seen[2][:, 1:5]) == torch.count_nonzero(seen[3][:, 1:5]) == 0


def test_static_layers_share_the_vpt_bound_and_the_prompt_dropout(images):
    model = create_model(tiny_vit_spec(depth=4), "vapt", 3, prompt_len=4, static_layers=3, prompt_dropout=0.5)
    prompt = model.token_prompt
    bound = math.sqrt(6 / (3 * 4 * 4 + 32))
    assert prompt.static_deep.abs().max() <= bound
    assert prompt.static_deep.abs().max() > 0.9 * bound
    seen = record_block_inputs(model.train())
    model(images)
    dropped = seen[1][:, 1:5] == 0
    assert 0.3 < dropped.float().mean() < 0.7
    kept = ~dropped
    torch.testing.assert_close(seen[1][:, 1:5][kept], (2 * prompt.static_deep[0].expand(4, -1, -1))[kept])


def test_static_layers_parameter_count_and_default_layout(vit_spec):
    p, d, r, grid = 3, 32, 8, (4, 4)
    positions = 9
    per_generated = 2 * d + 4 + positions * p + p
    spec = tiny_vit_spec(depth=5)
    for static in (1, 2, 4):
        count = p * d * static + (5 - static) * per_generated + 2 * r * d
        assert prompt_count(spec, static_layers=static) == count
    assert prompt_count(spec, static_layers=3, projector="per-layer") == p * d * 3 + 2 * (per_generated + 2 * r * d)
    default = create_model(vit_spec, "vapt", 3).token_prompt
    assert default.static_deep is None and "static_deep" not in dict(default.named_parameters())
    assert vapt_formula(p, d, 3, grid) == prompt_count(vit_spec)


def test_static_layers_must_leave_generated_blocks(vit_spec):
    with pytest.raises(ConfigError, match="static_layers must be below the backbone's depth \\(3 blocks\\)"):
        create_model(vit_spec, "vapt", 3, static_layers=3)
    with pytest.raises(ConfigError, match="static_layers"):
        VAPTConfig(static_layers=0)


# --- the feature projector: activation and learnable scale ----------------------------------------


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "sigmoid": torch.sigmoid, "softmax": lambda h: h.softmax(-1),
               "none": lambda h: h}


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_projector_activation_is_the_one_asked_for(activation):
    torch.manual_seed(1)
    projector = FeatureProjector(32, 8, 0.0, activation).eval()
    tokens = torch.randn(2, 5, 32)
    hidden = projector.down(tokens)
    torch.testing.assert_close(projector(tokens), projector.up(ACTIVATIONS[activation](hidden)))
    torch.manual_seed(1)
    relu = FeatureProjector(32, 8, 0.0).eval()
    assert torch.equal(relu.down.weight, projector.down.weight)  # same weights, so only the activation differs
    if activation != "relu":
        assert not torch.allclose(projector(tokens), relu(tokens))


def test_softmax_runs_over_the_width():
    projector = FeatureProjector(32, 8, 0.0, "softmax").eval()
    seen = []
    projector.up.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    projector(torch.randn(2, 5, 32))
    torch.testing.assert_close(seen[0].sum(-1), torch.ones(2, 5))


@pytest.mark.parametrize("activation", ["gelu", "sigmoid", "softmax", "none"])
def test_activation_option_reaches_the_model(vit_spec, images, activation):
    relu = create_model(vit_spec, "vapt", 3, prompt_len=4).eval()
    other = create_model(vit_spec, "vapt", 3, prompt_len=4, activation=activation).eval()
    randomise_generators(relu)
    other.token_prompt.load_state_dict(relu.token_prompt.state_dict())
    other.head.load_state_dict(relu.head.state_dict())
    assert parameter_report(other).prompt == parameter_report(relu).prompt
    assert not torch.allclose(other(images), relu(images))
    with pytest.raises(ConfigError, match="activation must be one of"):
        create_model(vit_spec, "vapt", 3, activation="tanh")


def test_learnable_scale_is_a_trainable_scalar_on_the_projector_output(vit_spec, images):
    assert prompt_count(vit_spec, learnable_scale=True) == prompt_count(vit_spec) + 1
    assert prompt_count(vit_spec, learnable_scale=True, projector="per-layer") == prompt_count(
        vit_spec, projector="per-layer") + 2
    assert prompt_count(vit_spec, learnable_scale=True, projector="none") == prompt_count(vit_spec, projector="none")
    assert create_model(vit_spec, "vapt", 3).token_prompt.projectors[0].scale is None  # off by default

    model = create_model(vit_spec, "vapt", 3, prompt_len=4, learnable_scale=True, projector_dropout=0.0).eval()
    prompt = model.token_prompt
    scale = prompt.projectors[0].scale
    assert scale.shape == () and scale.item() == 1.0 and scale.requires_grad
    assert "projectors.0.scale" in dict(prompt.named_parameters())
    randomise_generators(model)
    patches = torch.randn(2, 16, 32)
    generated = prompt.generators[0](patches)
    unscaled = prompt.projectors[0](generated)
    with torch.no_grad():
        scale.fill_(2.5)
    torch.testing.assert_close(prompt.projectors[0](generated), 2.5 * unscaled)
    torch.testing.assert_close(prompt.block_prompts(1, patches), generated + 2.5 * unscaled)
    with torch.no_grad():
        scale.zero_()
    torch.testing.assert_close(prompt.block_prompts(1, patches), generated)  # residual only
    with torch.no_grad():
        scale.fill_(1.0)
    model.train()(images).logsumexp(1).sum().backward()
    assert scale.grad is not None and scale.grad.abs() > 0


def test_learnable_scale_scales_before_the_residual(vit_spec):
    model = create_model(vit_spec, "vapt", 3, prompt_len=4, learnable_scale=True, residual=False).eval()
    prompt = model.token_prompt
    randomise_generators(model)
    patches = torch.randn(2, 16, 32)
    before = prompt.block_prompts(1, patches)
    with torch.no_grad():
        prompt.projectors[0].scale.fill_(-3.0)
    torch.testing.assert_close(prompt.block_prompts(1, patches), -3.0 * before)


# --- defaults --------------------------------------------------------------------------------------


def test_defaults_are_todays():
    config = VAPTConfig()
    assert (config.conv_init, config.channelwise, config.padding, config.static_layers, config.activation,
            config.learnable_scale) == ("uniform", True, 0, 1, "relu", False)
    generator = PromptGenerator(32, (4, 4), config)
    assert generator.conv.weight.shape == (1, 1, 2, 2) and generator.conv_grid == (3, 3)
    assert generator.channel_dropout == 0.1
