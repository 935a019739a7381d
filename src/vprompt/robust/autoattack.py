"""AutoAttack "standard" (Croce & Hein 2020) through the `pyautoattack` package, on any model with
the project's contract: images in [0, 1] in, logits out, normalisation inside, eval mode.

The standard ensemble is APGD-CE, APGD-T, FAB-T and Square; its targeted attacks try the 9
highest non-true classes, which needs 10 classes. Tasks with fewer classes get ``C − 1`` targets,
and below 4 classes APGD-T is left out (its targeted DLR loss reads the 4th-largest logit); the
attacks actually run are part of every result.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from vprompt.errors import ConfigError
from vprompt.robust.attacks import ThreatModel, check_images, eval_mode, model_device

STANDARD_ATTACKS = ("apgd-ce", "apgd-t", "fab-t", "square")
STANDARD_TARGETS = 9
APGD_T_MIN_CLASSES = 4
AA_NORMS = {"linf": "Linf", "l2": "L2"}


@dataclass(frozen=True)
class AutoAttackPlan:
    """Which standard attacks run and with how many target classes, since a task with fewer than
    10 classes cannot run the standard ensemble as it is."""

    attacks: tuple[str, ...]
    """The standard attacks that run, in order; ``apgd-t`` is left out below 4 classes."""
    target_classes: int
    """Target classes of the targeted attacks: 9, or ``C − 1`` below 10 classes."""

    @classmethod
    def for_classes(cls, num_classes: int) -> AutoAttackPlan:
        """The plan for a task of ``num_classes`` (at least 2)."""
        if num_classes < 2:
            raise ConfigError(f"AutoAttack needs at least 2 classes, got {num_classes}")
        attacks = tuple(a for a in STANDARD_ATTACKS if a != "apgd-t" or num_classes >= APGD_T_MIN_CLASSES)
        return cls(attacks, min(STANDARD_TARGETS, num_classes - 1))

    def describe(self) -> str:
        """The attacks that ran, as reports print them, with any change to the target classes."""
        adapted = "" if self.target_classes == STANDARD_TARGETS else \
            f" ({self.target_classes} target class{'es' if self.target_classes > 1 else ''})"
        return "autoattack-standard: " + "+".join(self.attacks) + adapted


def autoattack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    threat: ThreatModel,
    num_classes: int,
    *,
    seed: int = 0,
    batch_size: int = 250,
) -> tuple[torch.Tensor, AutoAttackPlan]:
    """AutoAttack "standard" on a batch of images, adapted to the task's number of classes.

    Args:
        model: Images in [0, 1] in, logits out; attacked in eval mode, its modes restored after.
        images: The images to attack (B, 3, H, W), in [0, 1].
        labels: Their true labels.
        threat: The norm and eps.
        num_classes: Classes of the task, which decide the plan.
        seed: AutoAttack's seed.
        batch_size: Images per AutoAttack batch.

    Returns:
        The adversarial images (misclassified clean images are returned unchanged), and the plan
        that ran.
    """
    try:
        from pyautoattack import AutoAttack
    except ImportError as exc:  # a declared dependency; only a broken install lacks it
        raise ConfigError("AutoAttack needs the 'pyautoattack' package: pip install pyautoattack") from exc
    check_images(images)
    plan = AutoAttackPlan.for_classes(num_classes)
    if threat.eps == 0 or len(images) == 0:
        return images.detach().clone(), plan
    device = model_device(model)
    with eval_mode(model):
        adversary = AutoAttack(model, norm=AA_NORMS[threat.norm], eps=threat.eps, version="standard",
                               seed=seed, device=device)
        adversary.attacks_to_run = list(plan.attacks)
        adversary.apgd_targeted.n_target_classes = plan.target_classes
        adversary.fab.n_target_classes = plan.target_classes
        quiet = logging.getLogger("auto-attack")
        level = quiet.level
        quiet.setLevel(logging.WARNING)  # its checks log at INFO on every call
        try:
            adversarial, _ = adversary.run_standard_evaluation(images.to(device), labels.to(device),
                                                               batch_size=batch_size)
        finally:
            quiet.setLevel(level)
    return adversarial.detach(), plan
