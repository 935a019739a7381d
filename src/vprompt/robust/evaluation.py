"""Clean, PGD and AutoAttack accuracy of one model on the same images, reported side by side
with everything needed to read them: eps, norm, attack settings and image count (docs/robustness.md).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from typing import Annotated, Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from vprompt.errors import ConfigError, VpromptWarning
from vprompt.robust.attacks import Norm, ThreatModel, eval_mode, model_device, robust_accuracy
from vprompt.robust.autoattack import autoattack
from vprompt.validation import Validated, at_least

Attack = Literal["none", "pgd", "autoattack", "both"]


LARGE_EPS = {"linf": 16 / 255, "l2": 4.0}
"""Budgets above these are unusual in the robustness literature (8/255 and 0.5 are the usual ones)."""


def parse_eps(text: str | float) -> float:
    """Read eps as users write it, since ``8/255`` is clearer than ``0.0313725``.

    Args:
        text: A number, or a fraction such as ``8/255`` (pixel units in [0, 1]).

    Returns:
        The value as a float.
    """
    try:
        return float(Fraction(str(text).strip()))
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"eps must be a number or a fraction like 8/255, got {text!r}") from None


def attack_threat(norm: Norm, eps_text: str | float) -> ThreatModel:
    """The threat a user asked for: eps in (0, 1] pixel units for ℓ∞ (any ℓ2 radius above 0),
    with a warning when it is far beyond the usual budgets, which is mostly a unit mistake (8 for 8/255)."""
    eps = parse_eps(eps_text)
    if not eps > 0 or (norm == "linf" and eps > 1):
        limit = "(0, 1] pixel units" if norm == "linf" else "above 0"
        raise ConfigError(f"{norm} eps must lie in {limit}, got {eps_text!r}; images are in [0, 1], so write 8/255, not 8")
    if eps > LARGE_EPS.get(norm, math.inf):
        warn_large_eps(norm, str(eps_text))
    return ThreatModel(norm, eps)


@lru_cache(maxsize=None)
def warn_large_eps(norm: Norm, eps_text: str) -> None:
    """Once per setting: several configs check the same eps (the CLI's arguments, then the attack's
    own), and warnings' own once-per-place memory is reset whenever a library changes the filters."""
    warnings.warn(f"{norm} eps {eps_text} is unusually large (above {LARGE_EPS[norm]:.4g}); eps is in [0, 1] "
                  "pixel units", VpromptWarning, stacklevel=3)  # at the caller of attack_threat


@dataclass
class AttackConfig(Validated):
    """What the adversary may do and how hard it tries."""

    attack: Attack = "both"
    """pgd, autoattack (standard), both on the same images, or none (clean accuracy only)."""
    norm: Norm = "linf"
    """The norm of the eps-ball."""
    eps: str = "8/255"
    """Perturbation budget in (0, 1] pixel units: a number or a fraction such as 8/255."""
    steps: Annotated[int, at_least(1)] = 20
    """PGD steps."""
    restarts: Annotated[int, at_least(1)] = 1
    """PGD random restarts (the worst case per image is kept)."""
    images: Annotated[int, at_least(0)] = 500
    """Attack the first this many images of the split (0: all)."""
    seed: Annotated[int, at_least(0)] = 0
    """Seeds PGD's random starts and AutoAttack."""
    batch_size: Annotated[int, at_least(1)] = 128
    """Images per forward pass and attack batch."""

    def __post_init__(self) -> None:
        """Also check eps, so a unit mistake (8 for 8/255) stops when the config is built."""
        super().__post_init__()
        self.threat()  # checks eps

    def threat(self) -> ThreatModel:
        """The norm and the parsed eps; a large eps warns once."""
        return attack_threat(self.norm, self.eps)


def first_images(dataset: Dataset, count: int, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``count`` images and labels of ``dataset`` (all when ``count`` is 0), in memory."""
    subset = Subset(dataset, range(min(count, len(dataset)))) if count else dataset
    images, labels = zip(*DataLoader(subset, batch_size))
    return torch.cat(images), torch.cat(labels)


@torch.no_grad()
def predictions(model: nn.Module, images: torch.Tensor, batch_size: int) -> torch.Tensor:
    device = model_device(model)
    if len(images) == 0:
        return torch.zeros(0, dtype=torch.long)
    return torch.cat([model(images[i:i + batch_size].to(device)).argmax(1).cpu()
                      for i in range(0, len(images), batch_size)])


def attack_report(model: nn.Module, dataset: Dataset, num_classes: int, config: AttackConfig,
                  progress: bool = False) -> dict[str, Any]:
    """Clean accuracy and the robust accuracy of each chosen attack on the same images.

    An image counts as robust only if it is classified correctly clean and attacked; only
    clean-correct images are attacked.

    Args:
        model: Images in [0, 1] in, logits out; evaluated in eval mode, its modes restored after.
        dataset: ``(image, label)`` items; the first ``config.images`` are used (all if 0).
        num_classes: Classes of the task (AutoAttack's plan depends on them).
        config: The attacks and their settings.
        progress: Show PGD's progress bar.

    Returns:
        ``n``, ``norm``, ``eps`` and ``clean_acc``; with PGD, ``robust_acc_pgd`` and
        ``attack_pgd``; with AutoAttack, ``robust_acc_aa`` and ``attack_aa`` (the attacks run).
    """
    threat = config.threat()
    images, labels = first_images(dataset, config.images)
    report: dict[str, Any] = {"n": len(labels), "norm": threat.norm, "eps": threat.eps}
    with eval_mode(model):
        correct = predictions(model, images, config.batch_size) == labels
        report["clean_acc"] = correct.float().mean().item()
        if config.attack in ("pgd", "both"):
            batches = [(images[i:i + config.batch_size], labels[i:i + config.batch_size])
                       for i in range(0, len(labels), config.batch_size)]
            pgd_report = robust_accuracy(model, batches, threat, steps=config.steps, restarts=config.restarts,
                                         progress=progress, generator=torch.Generator().manual_seed(config.seed))
            report["robust_acc_pgd"] = pgd_report["robust_acc"]
            report["attack_pgd"] = f"pgd-{config.steps}, {config.restarts} restart(s)"
        if config.attack in ("autoattack", "both"):
            adversarial, plan = autoattack(model, images[correct], labels[correct], threat, num_classes,
                                           seed=config.seed, batch_size=config.batch_size)
            robust = (predictions(model, adversarial.cpu(), config.batch_size) == labels[correct]).sum().item()
            report["robust_acc_aa"] = robust / len(labels)
            report["attack_aa"] = plan.describe()
    return report

