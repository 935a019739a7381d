"""HGPrompt's math, as pure functions of tensors (a **reconstruction**, docs/methods/transfer.md).

The paper's full text is not reachable here; what follows is the verified outline (ensemble
weights learned by maximising an information-theoretic transferability of prompt-induced features,
minus a gradient-alignment regulariser) filled in with the choices its method page spells out. Each
choice is a parameter, so a user with the paper can set it.

Shapes: ``K`` sources, each prompt of one common shape ``S`` (e.g. ``(layers, p, d)``); a batch
of ``B`` samples; features ``(N, D)``.
"""

from __future__ import annotations

import torch


def simplex_weights(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Ensemble weights on the probability simplex, so unconstrained logits can be optimised.

    Args:
        logits: α, shape (K,); α = 0 is the uniform average.
        temperature: T in softmax(α / T).

    Returns:
        Weights (K,) that are non-negative and sum to 1.
    """
    return torch.softmax(logits / temperature, dim=0)


def ensemble_prompt(weights: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """The ensemble prompt P(w) = Σ_k w_k P_k.

    Args:
        weights: w, shape (K,).
        prompts: The source prompts P_k, shape (K, *S).

    Returns:
        P(w), shape (*S), in the prompts' dtype.
    """
    return torch.tensordot(weights.to(prompts.dtype), prompts, dims=1)


def h_score(features: torch.Tensor, labels: torch.Tensor, ridge: float = 1e-3) -> torch.Tensor:
    """H(f) = tr((Cov(f) + εI)⁻¹ · Cov(E[f | y])) (Bao et al. 2019), differentiable in the features.

    High when class means are far apart relative to the total spread: how well a linear
    classifier can separate the classes, without training one. ε = ``ridge`` · tr(Cov)/D keeps the
    solve well-posed when D exceeds the batch and makes the score invariant to feature scale.

    Args:
        features: f, shape (N, D); bf16 features are scored in fp32.
        labels: Class labels (N,), from 0.
        ridge: ε relative to the mean feature variance.

    Returns:
        The score, a 0-dim tensor that gradients flow through.
    """
    f = features.to(torch.promote_types(features.dtype, torch.float32))  # bf16 features from AMP: solve in fp32
    f = f - f.mean(0)
    n, dim = f.shape
    covariance = f.T @ f / n
    one_hot = torch.nn.functional.one_hot(labels, int(labels.max()) + 1).to(f.dtype)
    counts = one_hot.sum(0).clamp_min(1)
    class_means = (one_hot.T @ f) / counts[:, None]
    conditional = class_means[labels]  # E[f | y_i] for every sample: centred, since f is
    between = conditional.T @ conditional / n
    eps = ridge * torch.trace(covariance) / dim
    regularised = covariance + eps * torch.eye(dim, dtype=f.dtype, device=f.device)
    return torch.trace(torch.linalg.solve(regularised, between))


def source_gradients(prompt_grads: torch.Tensor, prompts: torch.Tensor) -> torch.Tensor:
    """g_ik = ∂ℓ_i/∂w_k = ⟨∇_P ℓ_i, P_k⟩, for per-sample prompt gradients (B, *S) and prompts (K, *S).

    Because P(w) is linear in w, one backward pass to a per-sample copy of P(w) gives every
    sample's gradient with respect to every source weight: no backward pass per source.

    Args:
        prompt_grads: ∇_P ℓ_i of each sample, shape (B, *S).
        prompts: The source prompts P_k, shape (K, *S).

    Returns:
        g, shape (B, K), in fp32.
    """
    return prompt_grads.flatten(1).float() @ prompts.flatten(1).float().T


def gradient_alignment(weights: torch.Tensor, grads: torch.Tensor, conflict_weight: float = 0.0) -> torch.Tensor:
    """Gradient Alignment Regularisation of weights (K,) given per-source gradients g (B, K).

    The Fisher proxy F_k = mean_i g_ik² (held fixed: a diagonal Fisher / Gauss-Newton estimate of
    the curvature along source k) scales each source's contribution w_k²·F_k to the gradient
    variance of the ensemble; the penalty is their squared coefficient of variation, so no source
    dominates the update. With ``conflict_weight``, add the weighted mean of max(0, −cos) between
    the per-source gradient directions g_·k: sources whose gradients fight each other are
    penalised for being used together.

    Args:
        weights: w, shape (K,).
        grads: Per-sample, per-source gradients g, shape (B, K), e.g. from
            [`source_gradients`][vprompt.prompts.ensemble.source_gradients]; treated as constants.
        conflict_weight: Weight of the conflict term (0: off).

    Returns:
        The penalty, a 0-dim tensor differentiable in ``weights``.
    """
    fisher = grads.detach().pow(2).mean(0)
    contribution = weights.pow(2) * fisher
    penalty = contribution.var(unbiased=False) / contribution.mean().pow(2).clamp_min(1e-12)
    if conflict_weight and weights.numel() > 1:
        directions = torch.nn.functional.normalize(grads.detach().T, dim=1)
        conflict = (-(directions @ directions.T)).clamp_min(0)
        pair = torch.outer(weights, weights).triu(1)
        penalty = penalty + conflict_weight * (pair * conflict).sum() / pair.sum().clamp_min(1e-12)
    return penalty


def similarity_weights(target_prompt: torch.Tensor, prompts: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SPoT-style weights: softmax of the cosine similarity between the target's own briefly tuned
    prompt and each source prompt, a baseline that needs no search.

    Args:
        target_prompt: The target's prompt, shape (*S).
        prompts: The source prompts, shape (K, *S).
        temperature: Sharpens the softmax as it shrinks.

    Returns:
        Weights (K,) on the simplex.
    """
    cosine = torch.nn.functional.cosine_similarity(prompts.flatten(1).float(), target_prompt.flatten()[None].float())
    return torch.softmax(cosine / temperature, dim=0)
