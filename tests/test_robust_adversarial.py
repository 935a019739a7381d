"""The adversarial-training step: eps ramp, constraints, no side effects, and it buys robustness."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from test_robust_attacks import linear_model, toy_task, train
from vprompt.errors import ConfigError
from vprompt.robust import AdversarialConfig, ThreatModel, adversarial_examples, ramped_eps, robust_accuracy

THREAT = ThreatModel("linf", 0.08)


def test_ramped_eps_is_linear_then_flat():
    config = AdversarialConfig(THREAT, ramp_steps=4)
    assert [ramped_eps(config, s) for s in (0, 2, 4, 100)] == pytest.approx([0.0, 0.04, 0.08, 0.08])
    assert ramped_eps(AdversarialConfig(THREAT), 0) == 0.08


@pytest.mark.parametrize("method", ["fgsm-rs", "pgd"])
def test_examples_follow_the_ramp_and_constraints(method):
    images, labels = toy_task(32, 0)
    model = linear_model()
    config = AdversarialConfig(THREAT, method=method, ramp_steps=10)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(adversarial_examples(model, images, labels, config, step=0, generator=g), images)
    half = adversarial_examples(model, images, labels, config, step=5, generator=g) - images
    assert half.abs().max() <= 0.04 + 1e-6
    full = adversarial_examples(model, images, labels, config, step=10, generator=g)
    assert 0.9 * 0.08 <= (full - images).abs().max() <= 0.08 + 1e-6
    assert full.min() >= 0 and full.max() <= 1 and not full.requires_grad


def test_l2_examples_stay_in_ball():
    images = torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(0)).round()  # box edges
    config = AdversarialConfig(ThreatModel("l2", 0.5), step_size=0.6)
    adv = adversarial_examples(linear_model(), images, torch.arange(8) % 2, config)
    assert (adv - images).flatten(1).norm(dim=1).max() <= 0.5 + 1e-5
    assert adv.min() >= 0 and adv.max() <= 1


@pytest.mark.parametrize("training", [True, False])
def test_no_parameter_gradients_and_mode_untouched(training):
    model = nn.Sequential(nn.Flatten(), nn.Linear(192, 8), nn.Dropout(0.5), nn.Linear(8, 2)).train(training)
    images, labels = toy_task(8, 0)
    for method in ("fgsm-rs", "pgd"):
        adversarial_examples(model, images, labels, AdversarialConfig(THREAT, method=method, pgd_steps=2))
    assert all(p.grad is None for p in model.parameters())
    assert all(m.training == training for m in model.modules())


def test_fast_adversarial_training_buys_robustness():
    """Same seed, data and steps; only the training inputs differ. The standard twin leans on the
    non-robust pattern (robust accuracy ≈ 0), the FGSM-RS twin on the robust corner (≈ 1)."""
    images, labels = toy_task(256, 0)
    config = AdversarialConfig(THREAT, ramp_steps=20)

    def attack(model, x, y, step, generator):
        return adversarial_examples(model, x, y, config, step, generator)

    standard = train(linear_model(), images, labels)
    robust = train(linear_model(), images, labels, attack=attack)
    held_out = [toy_task(256, 1)]
    gen = torch.Generator
    before = robust_accuracy(standard, held_out, THREAT, steps=10, generator=gen().manual_seed(0))
    after = robust_accuracy(robust, held_out, THREAT, steps=10, generator=gen().manual_seed(0))
    assert before["clean_acc"] > 0.95 and after["clean_acc"] > 0.95
    assert after["robust_acc"] > before["robust_acc"] + 0.5


def test_bad_config_is_a_config_error():
    with pytest.raises(ConfigError, match="method"):
        AdversarialConfig(THREAT, method="trades")
    with pytest.raises(ConfigError, match="step_size must be a number > 0, got 0.0"):
        AdversarialConfig(THREAT, step_size=0.0)
    with pytest.raises(ConfigError, match="ramp_steps"):
        AdversarialConfig(THREAT, ramp_steps=-1)
