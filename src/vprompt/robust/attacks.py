"""Projected gradient descent (PGD) under an ℓ∞ or ℓ2 threat model, and robust accuracy.

The contract is the project's one picture: ``model`` takes images in [0, 1] of shape (B, 3, H, W)
and returns logits; normalisation lives inside the model, so the eps-ball is in pixel units.
An attack is three small pieces per norm — a random start, a steepest-ascent step and a projection
back into the eps-ball ∩ [0, 1] — composed by ``perturb`` (one run, in the model's current
mode, shared with adversarial training) and [`pgd`][vprompt.robust.pgd] (eval mode, restarts, worst
case kept).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from vprompt.errors import ConfigError

Norm = Literal["linf", "l2"]
NORMS: tuple[Norm, ...] = ("linf", "l2")


@dataclass(frozen=True)
class ThreatModel:
    """Who may change what: perturbations with ``‖δ‖ ≤ eps`` in [0, 1] pixel units."""

    norm: Norm = "linf"
    """The norm of the eps-ball."""
    eps: float = 8 / 255
    """The radius of the ball, in [0, 1] pixel units."""

    def __post_init__(self) -> None:
        """Refuse an unknown norm, and an eps that is negative or not finite."""
        if self.norm not in NORMS:
            raise ConfigError(f"unknown threat norm {self.norm!r}; choose one of {', '.join(NORMS)}")
        if not (math.isfinite(self.eps) and self.eps >= 0):
            raise ConfigError(f"threat eps must be a finite number >= 0 (pixel units in [0, 1]), got {self.eps}")


def _sample_norms(x: torch.Tensor) -> torch.Tensor:
    """Per-sample ℓ2 norms, shaped to broadcast against ``x``."""
    return x.flatten(1).norm(dim=1).view(-1, *[1] * (x.dim() - 1))


def random_perturbation(
    images: torch.Tensor, threat: ThreatModel, generator: torch.Generator | None = None
) -> torch.Tensor:
    """A perturbation drawn uniformly from the eps-ball (not yet clipped to [0, 1]).

    Draws on the generator's device and moves the result, so one CPU generator makes CPU and GPU
    runs draw the same numbers.
    """
    device = generator.device if generator is not None else images.device
    shape, eps = images.shape, threat.eps
    if threat.norm == "linf":
        delta = (2 * torch.rand(shape, generator=generator, device=device) - 1) * eps
    else:  # uniform in the ℓ2 ball: a uniform direction, radius eps·u^(1/d)
        direction = torch.randn(shape, generator=generator, device=device)
        direction = direction / _sample_norms(direction).clamp_min(1e-12)
        u = torch.rand((shape[0],) + (1,) * (len(shape) - 1), generator=generator, device=device)
        delta = direction * eps * u ** (1 / images[0].numel())
    return delta.to(images.device, images.dtype)


def ascent_step(delta: torch.Tensor, grad: torch.Tensor, norm: Norm, step_size: float) -> torch.Tensor:
    """Move ``delta`` by ``step_size`` along the steepest-ascent direction of the norm."""
    if norm == "linf":
        return delta + step_size * grad.sign()
    return delta + step_size * grad / _sample_norms(grad).clamp_min(1e-12)


def project(delta: torch.Tensor, images: torch.Tensor, threat: ThreatModel) -> torch.Tensor:
    """Project ``delta`` onto the eps-ball, then clip ``images + delta`` to [0, 1].

    The clip only shrinks each coordinate of ``delta`` towards 0 (``images`` is in [0, 1]), so the
    result is in both sets without alternating projections.
    """
    if threat.norm == "linf":
        delta = delta.clamp(-threat.eps, threat.eps)
    else:
        delta = delta * (threat.eps / _sample_norms(delta).clamp_min(1e-12)).clamp(max=1.0)
    return (images + delta).clamp(0, 1) - images


def _attack_loss(logits: torch.Tensor, labels: torch.Tensor, targeted: bool) -> torch.Tensor:
    """Per-sample loss the attacker maximises: cross-entropy, or its negative towards a target."""
    loss = F.cross_entropy(logits, labels, reduction="none")
    return -loss if targeted else loss


def check_images(images: torch.Tensor) -> None:
    if images.numel() and (images.min() < 0 or images.max() > 1):
        raise ConfigError(
            "attack images must be in [0, 1] (normalisation belongs inside the model), "
            f"got values in [{images.min().item():.3g}, {images.max().item():.3g}]"
        )


def perturb(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int,
    step_size: float,
    random_start: bool = True,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One PGD run in the model's *current* train/eval mode; returns detached adversarial images.

    Gradients are taken with ``torch.autograd.grad`` w.r.t. the perturbation only, so ``.grad`` of
    model parameters is never touched, whether they are frozen or trainable. Grad mode is forced
    on, so this also works when called under ``torch.no_grad()``.
    """
    images = images.detach()
    delta = random_perturbation(images, threat, generator) if random_start else torch.zeros_like(images)
    delta = project(delta, images, threat)
    with torch.enable_grad():
        for _ in range(steps):
            delta.requires_grad_(True)
            loss = _attack_loss(model(images + delta), labels, targeted).sum()
            (grad,) = torch.autograd.grad(loss, delta)
            delta = project(ascent_step(delta.detach(), grad, threat.norm, step_size), images, threat)
    return (images + delta).detach()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Run ``model`` in eval mode, then restore every submodule's own train/eval flag exactly."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def pgd(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    *,
    steps: int = 10,
    step_size: float | None = None,
    restarts: int = 1,
    random_start: bool = True,
    targeted: bool = False,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """PGD-``steps`` adversarial images inside the eps-ball around ``images`` and inside [0, 1].

    The model runs in eval mode (deterministic, as robustness evaluation requires) and gets its
    modes back afterwards. Per sample, the worst restart is kept: a successful one (misclassified,
    or hitting the target when ``targeted``) beats an unsuccessful one, then the higher attack loss
    wins; ties keep the earlier restart, so adding restarts never weakens the attack.

    Args:
        model: Images in [0, 1] in, logits out.
        images: The images to attack (B, 3, H, W), in [0, 1].
        labels: Their true labels, or the targets when ``targeted``.
        threat: The norm and eps.
        steps: Gradient steps per restart.
        step_size: Pixel units per step; None: 2.5·eps/steps (Madry et al.), enough to cross the
            ball from any start.
        restarts: Runs per image, the worst case kept.
        random_start: Start each run at a uniform point of the ball instead of the image.
        targeted: Move towards ``labels`` instead of away from them.
        generator: Draws the random starts (the global generator when None).

    Returns:
        Detached adversarial images, shaped like ``images``.
    """
    if steps < 0 or restarts < 1:
        raise ConfigError(f"PGD needs steps >= 0 and restarts >= 1, got steps={steps}, restarts={restarts}")
    if step_size is not None and step_size <= 0:
        raise ConfigError(f"PGD step size must be > 0, got {step_size}")
    check_images(images)
    if threat.eps == 0 or len(images) == 0:
        return images.detach().clone()
    size = step_size if step_size is not None else 2.5 * threat.eps / max(steps, 1)
    with eval_mode(model):
        best = images.detach().clone()
        best_success = torch.zeros(len(images), dtype=torch.bool, device=images.device)
        best_loss = torch.full((len(images),), -math.inf, device=images.device)
        for _ in range(restarts):
            adv = perturb(model, images, labels, threat, steps=steps, step_size=size,
                          random_start=random_start, targeted=targeted, generator=generator)
            with torch.no_grad():
                logits = model(adv)
                loss = _attack_loss(logits, labels, targeted).float()
                success = (logits.argmax(1) == labels) if targeted else (logits.argmax(1) != labels)
                better = (success & ~best_success) | ((success == best_success) & (loss > best_loss))
                best[better], best_loss[better], best_success[better] = adv[better], loss[better], success[better]
    return best


def model_device(model: nn.Module) -> torch.device:
    tensor = next(iter(model.parameters()), None)
    if tensor is None:
        tensor = next(iter(model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def robust_accuracy(
    model: nn.Module,
    loader_or_batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    threat: ThreatModel,
    *,
    steps: int = 20,
    restarts: int = 1,
    progress: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, float | int | str]:
    """Clean and PGD robust accuracy side by side, with the threat and attack that produced them.

    As in AutoAttack, only clean-correct images are attacked, and an image counts as robust only
    if it is classified correctly both clean and attacked.

    Args:
        model: Images in [0, 1] in, logits out.
        loader_or_batches: ``(images, labels)`` batches, e.g. a DataLoader.
        threat: The norm and eps.
        steps: PGD steps.
        restarts: PGD restarts per image.
        progress: Show a progress bar.
        generator: Draws PGD's random starts.

    Returns:
        ``clean_acc``, ``robust_acc`` and the image count ``n``, with ``eps``, ``norm``,
        ``attack`` and ``restarts``, so a number is never read without its threat model.
    """
    device = model_device(model)
    clean, robust, count = 0, 0, 0
    with eval_mode(model):
        for images, labels in tqdm(loader_or_batches, desc=f"pgd-{steps}", leave=False, disable=not progress):
            images, labels = images.to(device), labels.to(device)
            with torch.no_grad():
                correct = model(images).argmax(1) == labels
            adv = pgd(model, images[correct], labels[correct], threat, steps=steps, restarts=restarts,
                      generator=generator)
            with torch.no_grad():
                robust += (model(adv).argmax(1) == labels[correct]).sum().item()
            clean += correct.sum().item()
            count += len(labels)
    if count == 0:
        raise ConfigError("robust accuracy needs at least one image; the loader was empty")
    return {"clean_acc": clean / count, "robust_acc": robust / count, "n": count, "eps": threat.eps,
            "norm": threat.norm, "attack": f"pgd-{steps}", "restarts": restarts}
