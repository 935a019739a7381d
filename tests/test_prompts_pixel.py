"""Input-space visual prompts and label mapping: canvas layout, gradients, mapping rules, round trip."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from conftest import tiny_vit_spec
from vprompt.errors import ConfigError
from vprompt.heads import frequency_mapping, source_predictions
from vprompt.model import create_model, load_prompt, parameter_report, save_prompt
from vprompt.train import TrainConfig, train

CANVAS_SPEC = tiny_vit_spec(img_size=32, patch_size=8)  # a 32×32 canvas, 1000 source classes


def test_expansive_prompt_places_the_image_in_the_centre_and_owns_only_the_border():
    model = create_model(CANVAS_SPEC, "vp", 3, template="expansive", image_size=16)
    assert model.image_size == (16, 16)
    images = torch.rand(2, 3, 16, 16)
    canvas = model.input_prompt(images)
    assert canvas.shape == (2, 3, 32, 32)
    assert torch.equal(canvas[:, :, 8:24, 8:24], images)
    border = canvas.clone()
    border[:, :, 8:24, 8:24] = 0.5
    assert torch.allclose(border, torch.full_like(border, 0.5))  # sigmoid(0) everywhere else
    assert model.input_prompt.num_prompt_pixels() == 32 * 32 - 16 * 16


def test_pad_prompt_keeps_the_full_size_image_inside_its_border():
    model = create_model(CANVAS_SPEC, "vp", 3, template="pad", pad_width=4)
    assert model.image_size == (32, 32)
    images = torch.rand(2, 3, 32, 32)
    canvas = model.input_prompt(images)
    assert torch.equal(canvas[:, :, 4:28, 4:28], images[:, :, 4:28, 4:28])
    assert torch.all(canvas[:, :, :4] == 0.5)
    assert model.input_prompt.num_prompt_pixels() == 32 * 32 - 24 * 24
    default = create_model(CANVAS_SPEC, "vp", 3, template="pad")
    assert default.input_prompt.num_prompt_pixels() == 32 * 32 - 24 * 24  # round(30 / 224 * 32) = 4


def test_only_the_prompt_border_receives_gradient_and_the_backbone_stays_frozen():
    model = create_model(CANVAS_SPEC, "vp", 3, image_size=16)
    model(torch.rand(2, 3, 16, 16)).sum().backward()
    assert model.input_prompt.theta.grad.abs().min() > 0  # every prompt pixel is used
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["input_prompt.theta"]
    report = parameter_report(model)
    assert (report.prompt, report.head) == (3 * (32 * 32 - 16 * 16), 0)


def test_pad_prompt_size_is_bahngs_formula_at_224():
    model = create_model("vit_tiny_patch16_224", "vp", 10, template="pad", pad_width=30)
    assert parameter_report(model).prompt == 2 * 3 * 30 * (224 + 224 - 2 * 30) == 69_840


def test_logits_are_the_source_logits_read_through_the_mapping():
    model = create_model(CANVAS_SPEC, "vp", 3, image_size=16).eval()
    model.head.set_mapping(torch.tensor([7, 2, 500]))
    images = torch.rand(2, 3, 16, 16)
    source = model.head.source_logits(model.features(images))
    assert source.shape == (2, 1000)
    assert torch.equal(model(images), source[:, [7, 2, 500]])


def test_frequency_mapping_is_one_to_one_and_greedy_by_count():
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    predicted = torch.tensor([5, 5, 5, 5, 5, 3, 3, 9])  # class 0 wins source 5 (3 votes); 1 falls to 3
    mapping = frequency_mapping(predicted, labels, 3, 10)
    assert mapping.tolist() == [5, 3, 9]
    assert len(set(mapping.tolist())) == 3


def test_flm_training_sets_the_mapping_from_the_initial_prompt(tmp_path):
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.rand(24, 3, 16, 16, generator=generator), torch.arange(24) % 3)
    model = create_model(CANVAS_SPEC, "vp", 3, image_size=16, mapping="flm")
    expected = frequency_mapping(*source_predictions(model, data), 3, 1000)
    theta = model.input_prompt.theta.detach().clone()
    train(model, data, tmp_path / "run", TrainConfig(epochs=1, batch_size=8, warmup_epochs=0, base_lr=1.0,
                                                     optimizer="adamw", weight_decay=0.0), progress=False)
    assert torch.equal(model.head.mapping, expected)
    assert not torch.equal(model.input_prompt.theta, theta)
    reloaded = load_prompt(tmp_path / "run" / "prompt").eval()
    images = data.tensors[0][:4]
    assert torch.equal(reloaded.head.mapping, expected)
    assert torch.equal(reloaded(images), model.eval()(images))


def test_mapping_and_prompt_travel_in_the_checkpoint(tmp_path):
    model = create_model(CANVAS_SPEC, "vp", 3, image_size=16, mapping="rlm")
    model.head.set_mapping(torch.tensor([4, 1, 8]))
    save_prompt(model, tmp_path)
    assert load_prompt(tmp_path).head.mapping.tolist() == [4, 1, 8]


def test_bad_vp_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="source classes"):
        create_model(tiny_vit_spec(num_classes=2), "vp", 3)
    with pytest.raises(ConfigError, match="no classifier"):
        create_model(tiny_vit_spec(num_classes=0), "vp", 3)
    with pytest.raises(ConfigError, match="leaves no prompt"):
        create_model(CANVAS_SPEC, "vp", 3, image_size=32)
    with pytest.raises(ConfigError, match="mapping must be one of flm, ilm, rlm, first-n, linear, got .nearest."):
        create_model(CANVAS_SPEC, "vp", 3, mapping="nearest")


def test_patch_prompt_replaces_only_its_corner_square():
    model = create_model(CANVAS_SPEC, "vp", 3, template="patch", patch_size=5)
    images = torch.rand(2, 3, 32, 32)
    canvas = model.input_prompt(images)
    assert torch.all(canvas[:, :, :5, :5] == 0.5)
    outside = torch.ones(32, 32, dtype=torch.bool)
    outside[:5, :5] = False
    assert torch.equal(canvas[:, :, outside], images[:, :, outside])
    assert parameter_report(model).prompt == 3 * 5 * 5
    assert create_model(CANVAS_SPEC, "vp", 3, template="patch").input_prompt.num_prompt_pixels() == 4 * 4


def test_full_prompt_is_additive_everywhere_and_the_identity_at_init():
    model = create_model(CANVAS_SPEC, "vp", 3, template="full")
    images = torch.rand(2, 3, 32, 32)
    assert torch.equal(model.input_prompt(images), images)
    with torch.no_grad():
        model.input_prompt.theta.fill_(50.0)  # sigmoid → 1: the prompt adds +1 to every pixel
    assert torch.allclose(model.input_prompt(images), images + 1)
    assert parameter_report(model).prompt == 3 * 32 * 32
    with pytest.raises(ConfigError, match="full template"):
        create_model(CANVAS_SPEC, "vp", 3, template="full", pbl="spatial", pbl_strength=0.1)


def test_linear_head_on_source_logits_trains_only_its_layer_and_travels_in_the_checkpoint(tmp_path):
    model = create_model(CANVAS_SPEC, "vp", 3, image_size=16, mapping="linear").eval()
    images = torch.rand(2, 3, 16, 16)
    source = model.head.source_logits(model.features(images))
    assert torch.allclose(model(images), model.head.fc(source))
    report = parameter_report(model)
    assert report.head == 1000 * 3 + 3  # S·N + N
    model(images).sum().backward()
    assert model.head.source.weight.grad is None and model.head.fc.weight.grad is not None
    with torch.no_grad():
        model.head.fc.weight.add_(0.1)
    save_prompt(model, tmp_path)
    assert torch.equal(load_prompt(tmp_path)(images), model(images))
    with pytest.raises(ConfigError, match="linear head"):
        create_model(CANVAS_SPEC, "vp", 3, mapping="linear", pbl="output", pbl_strength=0.5)
