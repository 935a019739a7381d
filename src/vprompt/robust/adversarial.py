"""The adversarial-training step shared by the zoo build and adversarial prompt training.

Default: fast adversarial training (Wong et al. 2020, "Fast is better than free"): one FGSM step of
size α = 1.25·eps from a uniform random start in the eps-ball, clipped to [0, 1]. PGD-k training
(Madry et al. 2018) is the slower, stronger alternative. Both can ramp eps up linearly from 0 over
the first ``ramp_steps`` steps (or epochs: the caller chooses the unit of ``step``), which keeps
early training stable.

Mode choice: examples are generated in the model's *current* mode, i.e. in train mode during
training, as in the reference fast-AT code (Wong et al.; Rice et al. 2020) — the example then
attacks the very network (dropout, batch statistics) the loss is computed on. This function never
changes the mode, so there is nothing to restore; for eval-mode attacks use
[`pgd`][vprompt.robust.pgd].
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Annotated, Literal

import torch
from torch import nn

from vprompt.robust.attacks import ThreatModel, perturb
from vprompt.validation import Validated, above, at_least

Method = Literal["fgsm-rs", "pgd"]
FGSM_STEP = 1.25  # α / eps for FGSM-RS (Wong et al.)
PGD_STEP = 2.5  # α · k / eps for PGD-k (Madry et al.)


@dataclass(frozen=True)
class AdversarialConfig(Validated):
    """How training examples are attacked."""

    threat: ThreatModel = field(default_factory=ThreatModel)
    """The norm and the full eps of the training attack."""
    method: Method = "fgsm-rs"
    """One FGSM step from a random start (fast AT), or PGD-``pgd_steps`` (Madry et al.)."""
    step_size: Annotated[float, above(0)] | None = None
    """In pixel units at the full eps (e.g. 10/255 for eps 8/255); while eps ramps up it shrinks in
    proportion, so the step/eps ratio stays the one chosen. None: 1.25·eps for FGSM-RS,
    2.5·eps/pgd_steps for PGD."""
    pgd_steps: Annotated[int, at_least(1)] = 7
    """Steps of the PGD method."""
    ramp_steps: Annotated[int, at_least(0)] = 0
    """Steps (or epochs: the caller's unit) over which eps rises linearly from 0; 0: full eps at once."""

    def describe(self) -> str:
        """One line for logs and model cards, e.g. ``fgsm-rs linf eps 0.03137``."""
        steps = "" if self.method == "fgsm-rs" else f"-{self.pgd_steps}"
        return f"{self.method}{steps} {self.threat.norm} eps {self.threat.eps:.4g}"


def ramped_eps(config: AdversarialConfig, step: int) -> float:
    """eps at training ``step``: linear from 0 at step 0 to the full eps at ``ramp_steps``.

    Args:
        config: The attack, with its full eps and ``ramp_steps``.
        step: The training step (or epoch), counted from 0.

    Returns:
        The eps to attack with at ``step``.
    """
    eps = config.threat.eps
    if step >= config.ramp_steps:
        return eps
    return eps * max(step, 0) / config.ramp_steps


def adversarial_examples(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    config: AdversarialConfig,
    step: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Training examples for one batch, attacked in the model's current mode.

    Never writes ``.grad`` on model parameters (see ``vprompt.robust.attacks.perturb``), so it
    can sit between ``optimizer.zero_grad()`` and ``loss.backward()`` or anywhere else.

    Args:
        model: Images in [0, 1] in, logits out.
        images: The clean batch (B, 3, H, W) in [0, 1].
        labels: Their labels (B,).
        config: The training attack.
        step: The training step, for the eps ramp.
        generator: Draws the random start (the global generator when None).

    Returns:
        Detached images in the (ramped) eps-ball around ``images`` and in [0, 1].
    """
    eps = ramped_eps(config, step)
    if eps == 0:
        return images.detach().clone()
    threat = replace(config.threat, eps=eps)
    steps = 1 if config.method == "fgsm-rs" else config.pgd_steps
    if config.step_size is not None:
        step_size = config.step_size * eps / config.threat.eps
    else:
        step_size = eps * (FGSM_STEP if config.method == "fgsm-rs" else PGD_STEP / steps)
    return perturb(model, images, labels, threat, steps=steps, step_size=step_size, random_start=True,
                   generator=generator)
