"""HGPrompt's math: the H-score against its closed form, one-pass per-sample gradients against
per-sample autograd through a real prompted ViT, simplex weights, and ensembles of equal prompts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import tiny_vit_spec
from vprompt.model import create_model
from vprompt.prompts.ensemble import (ensemble_prompt, gradient_alignment, h_score, similarity_weights,
                                      simplex_weights, source_gradients)
from vprompt.transfer import per_sample_source_gradients, search_forward


def gaussian_classes(n_per_class: int, seed: int = 0):
    """Three Gaussian classes in 4-D with known means and a shared within-class covariance."""
    generator = torch.Generator().manual_seed(seed)
    means = torch.tensor([[2.0, 0, 0, 0], [0, 1.5, 0, 0], [-1.0, -1.0, 0.5, 0]], dtype=torch.float64)
    root = torch.tensor([[1.0, 0.3, 0, 0], [0, 0.8, 0.2, 0], [0, 0, 0.5, 0.1], [0, 0, 0, 0.7]], dtype=torch.float64)
    labels = torch.arange(3).repeat_interleave(n_per_class)
    noise = torch.randn(len(labels), 4, generator=generator, dtype=torch.float64)
    return means[labels] + noise @ root.T, labels, means, root @ root.T


def closed_form_h(means: torch.Tensor, within: torch.Tensor, ridge: float) -> float:
    """tr((Σ_w + Σ_b + εI)⁻¹ Σ_b) for equiprobable classes, ε = ridge · tr(Σ)/D."""
    centred = means - means.mean(0)
    between = centred.T @ centred / len(means)
    total = within + between
    eps = ridge * torch.trace(total) / len(total)
    return float(torch.trace(torch.linalg.solve(total + eps * torch.eye(len(total), dtype=total.dtype), between)))


@pytest.mark.parametrize("ridge", [1e-3, 0.5])
def test_h_score_matches_its_closed_form_on_gaussian_classes(ridge):
    features, labels, means, within = gaussian_classes(40_000)
    assert float(h_score(features, labels, ridge)) == pytest.approx(closed_form_h(means, within, ridge), rel=0.02)


def test_h_score_is_bounded_by_classes_minus_one_and_invariant_to_linear_maps():
    features, labels, _, _ = gaussian_classes(2_000)
    score = float(h_score(features, labels, ridge=1e-9))
    mixed = features @ torch.tensor([[3.0, 1, 0, 0], [0, 2, 0, 1], [1, 0, 5, 0], [0, 0, 1, 0.5]], dtype=torch.float64)
    assert 0 < score < 2
    assert float(h_score(mixed, labels, ridge=1e-9)) == pytest.approx(score, rel=1e-6)
    separable = torch.nn.functional.one_hot(labels).double() * 10  # no within-class spread: H → C − 1
    assert float(h_score(separable, labels, ridge=1e-9)) == pytest.approx(2.0, rel=1e-4)


def test_h_score_is_differentiable_and_rises_when_classes_move_apart():
    features, labels, _, _ = gaussian_classes(500)
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    shifted = features + scale * torch.nn.functional.one_hot(labels, 4).double()
    h_score(shifted, labels).backward()
    assert scale.grad > 0


def test_weights_stay_on_the_simplex():
    logits = torch.randn(6, generator=torch.Generator().manual_seed(1)) * 20
    for temperature in (0.1, 1.0, 10.0):
        weights = simplex_weights(logits, temperature)
        assert torch.all(weights >= 0) and float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    prompts, target = torch.randn(4, 2, 3, 8), torch.randn(2, 3, 8)
    weights = similarity_weights(target, prompts)
    assert torch.all(weights >= 0) and float(weights.sum()) == pytest.approx(1.0, abs=1e-6)
    assert int(similarity_weights(prompts[2] * 3, prompts).argmax()) == 2


def test_an_ensemble_of_identical_prompts_is_that_prompt(images):
    model = create_model(tiny_vit_spec(), "vpt-deep", 3, prompt_len=2).eval()
    prompt = model.token_prompt.prompts.detach().clone()
    weights = simplex_weights(torch.randn(5))
    ensemble = ensemble_prompt(weights, prompt.expand(5, *prompt.shape))
    torch.testing.assert_close(ensemble, prompt)
    with torch.no_grad():
        expected = model(images)
        with model.token_prompt.per_sample(ensemble.expand(len(images), *ensemble.shape)):
            torch.testing.assert_close(model(images), expected)


@pytest.mark.parametrize("method", ["vpt-shallow", "vpt-deep"])
def test_one_pass_per_sample_gradients_equal_per_sample_autograd(method, images):
    model = create_model(tiny_vit_spec(), method, 3, prompt_len=2).eval()
    sources = torch.randn(3, *model.token_prompt.prompts.shape) * 0.1
    head = nn.Linear(int(model.backbone.num_features), 3)
    labels = torch.tensor([0, 1, 2, 1])
    weights = simplex_weights(torch.tensor([0.3, -0.2, 0.5]))
    step = search_forward(model, head, weights, sources, images, labels)
    grads, _ = per_sample_source_gradients(step, sources)
    mean, std = step.features.detach().mean(0), step.features.detach().std(0) + 1e-6
    for i in range(len(images)):
        leaf = weights.detach().clone().requires_grad_(True)
        prompt = ensemble_prompt(leaf, sources)
        with model.token_prompt.per_sample(prompt[None]):
            features = model.features(images[i:i + 1])
        loss = nn.functional.cross_entropy(head((features - mean) / std), labels[i:i + 1])
        (expected,) = torch.autograd.grad(loss, leaf)
        torch.testing.assert_close(grads[i], expected, rtol=1e-4, atol=1e-6)


def test_source_gradients_are_directional_derivatives():
    grads, prompts = torch.randn(5, 2, 4), torch.randn(3, 2, 4)
    expected = torch.einsum("bij,kij->bk", grads, prompts)
    torch.testing.assert_close(source_gradients(grads, prompts), expected)


def test_gradient_alignment_is_zero_when_contributions_match_and_penalises_conflicts():
    grads = torch.tensor([[1.0, 2.0], [1.0, 2.0]])
    balanced = torch.tensor([2.0, 1.0]) / 3  # w_k² F_k equal: 4·1 = 1·4
    assert float(gradient_alignment(balanced, grads)) == pytest.approx(0.0, abs=1e-7)
    assert float(gradient_alignment(torch.tensor([0.5, 0.5]), grads)) > 0.1
    opposed = torch.tensor([[1.0, -1.0], [2.0, -2.0]])
    weights = torch.tensor([0.5, 0.5], requires_grad=True)
    penalty = gradient_alignment(weights, opposed, conflict_weight=1.0)
    assert float(penalty.detach()) == pytest.approx(1.0)
    aligned = gradient_alignment(weights, opposed.abs(), conflict_weight=1.0)
    assert float(aligned.detach()) == pytest.approx(0.0, abs=1e-7)
