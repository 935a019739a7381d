"""Many-to-one label mapping and Prompt Boundary Loosening (a reconstruction, docs/methods/pixel-vp.md)."""

from __future__ import annotations

import pytest
import torch

from conftest import tiny_vit_spec
from vprompt.errors import ConfigError
from vprompt.heads import frequency_mapping, update_label_mapping
from torch.utils.data import TensorDataset

from vprompt.backbones import fingerprint
from vprompt.model import create_model, load_prompt, parameter_report, save_prompt
from vprompt.robust import AdversarialConfig, ThreatModel
from vprompt.train import TrainConfig, train

CANVAS_SPEC = tiny_vit_spec(img_size=32, patch_size=8)  # a 32×32 canvas, 1000 source classes
BOUNDARIES = ("value", "spatial", "output")


def vp(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(CANVAS_SPEC, "vp", 3, image_size=16, **options).eval()


def test_many_to_one_frequency_mapping_gives_each_target_its_k_most_frequent_free_sources():
    labels = torch.tensor([0, 0, 0, 0, 0, 1, 1, 1, 1])
    predicted = torch.tensor([5, 5, 5, 2, 7, 5, 2, 2, 4])  # 0: 5 (3 votes) then 2 or 7; 1: 2 (2 votes) then 4
    mapping = frequency_mapping(predicted, labels, 2, 10, k=2)
    assert mapping.tolist() == [5, 7, 2, 4]  # 2 went to class 1 first (2 votes beat class 0's 1)


@pytest.mark.parametrize("reduce", ["mean", "max"])
def test_a_many_to_one_head_reduces_the_k_source_logits_of_each_class(reduce):
    model = vp(mapping_k=2, mapping_reduce=reduce)
    model.head.set_mapping(torch.tensor([7, 8, 2, 3, 500, 501]))
    images = torch.rand(2, 3, 16, 16)
    source = model.head.source_logits(model.features(images)).view(2, 1000)
    pairs = source[:, [7, 8, 2, 3, 500, 501]].view(2, 3, 2)
    expected = pairs.mean(2) if reduce == "mean" else pairs.amax(2)
    assert torch.equal(model(images), expected)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_pbl_at_strength_zero_is_plain_vp_bit_for_bit(boundary):
    plain, loosened = vp(), vp(pbl=boundary, pbl_strength=0.0)
    with torch.no_grad():
        for model in (plain, loosened):
            model.input_prompt.theta.copy_(torch.randn_like(model.input_prompt.theta, generator=torch.Generator().manual_seed(1)))
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(plain(images), loosened(images))
    assert [n for n, _ in plain.named_parameters()] == [n for n, _ in loosened.named_parameters()]
    assert torch.equal(plain.head.mapping, loosened.head.mapping)


def test_value_boundary_widens_the_prompt_range_without_new_parameters():
    model = vp(pbl="value", pbl_strength=0.5)
    with torch.no_grad():
        model.input_prompt.theta.copy_(torch.linspace(-30, 30, model.input_prompt.theta.numel()).view_as(model.input_prompt.theta))
    values = model.input_prompt.pattern().detach()[model.input_prompt.mask.expand(1, 3, -1, -1).bool()]
    assert values.min().item() == pytest.approx(-0.5, abs=1e-6) and values.max().item() == pytest.approx(1.5, abs=1e-6)
    assert parameter_report(model).prompt == parameter_report(vp()).prompt


def test_spatial_boundary_reaches_into_the_image_bounded_by_strength_and_trains_only_prompt_tensors():
    model = vp(pbl="spatial", pbl_strength=0.1)
    assert parameter_report(model).prompt == parameter_report(vp()).prompt + 3 * 16 * 16
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(model.input_prompt(images)[:, :, 8:24, 8:24], images)  # φ = 0: no change at init
    model(images).sum().backward()
    assert model.input_prompt.phi.grad.abs().sum() > 0
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["input_prompt.theta", "input_prompt.phi"]
    with torch.no_grad():
        model.input_prompt.phi.fill_(100.0)
    inside = model.input_prompt(images)[:, :, 8:24, 8:24] - images
    torch.testing.assert_close(inside, torch.full_like(inside, 0.1))


def test_output_boundary_spends_a_share_of_the_source_head_and_travels_in_the_checkpoint(tmp_path):
    model = vp(pbl="output", pbl_strength=0.5)
    assert model.head.scheme.k == 1 + round(0.5 * (1000 // 3 - 1)) == 167
    assert len(set(model.head.mapping.tolist())) == 3 * 167
    save_prompt(model, tmp_path)
    images = torch.rand(2, 3, 16, 16)
    assert torch.equal(load_prompt(tmp_path)(images), model(images))


def test_ilm_remaps_only_every_n_epochs():
    data = TensorDataset(torch.rand(12, 3, 16, 16), torch.arange(12) % 3)
    model = vp(mapping="ilm", remap_every=2)
    sentinel = torch.tensor([997, 998, 999])
    for epoch, kept in ((1, True), (3, True), (2, False)):
        model.head.set_mapping(sentinel)
        update_label_mapping(model, data, epoch, seed=0)
        assert torch.equal(model.head.mapping, sentinel) == kept, epoch


def test_bad_mapping_and_pbl_settings_are_clear_errors():
    with pytest.raises(ConfigError, match="sets mapping_k itself"):
        vp(pbl="output", pbl_strength=0.5, mapping_k=2)
    with pytest.raises(ConfigError, match="pbl_strength must be a number ≥ 0, got -1.0"):
        vp(pbl="value", pbl_strength=-1.0)
    with pytest.raises(ConfigError, match="mapping_reduce must be one of mean, max, got 'median'"):
        vp(mapping_k=2, mapping_reduce="median")
    with pytest.raises(ConfigError, match="3000 distinct source classes"):
        vp(mapping_k=1000)


@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_adversarial_prompt_training_never_reaches_the_backbone(tmp_path, boundary):
    model = vp(pbl=boundary, pbl_strength=0.3)
    before = fingerprint(model.backbone)
    prompt = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
    data = TensorDataset(torch.rand(16, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.arange(16) % 3)
    adversarial = AdversarialConfig(ThreatModel("linf", 8 / 255), "pgd", pgd_steps=2)
    train(model, data, tmp_path / "run", TrainConfig(epochs=1, batch_size=8, warmup_epochs=0, base_lr=1.0),
          progress=False, adversarial=adversarial)
    assert all(p.grad is None for p in model.backbone.parameters())
    assert fingerprint(model.backbone) == before
    assert all(not torch.equal(p, prompt[name]) for name, p in model.named_parameters() if name in prompt)
