"""Knowledge distillation for the training loop: the student matches a frozen teacher's predictions.

Why: the zoo's ViT learns far less from 30k labelled fractals than the zoo's ResNet does. The
ResNet's soft predictions on every augmented view carry more per image than one hard label
(Hinton et al. 2015), and distilling a CNN teacher into a ViT is DeiT's recipe for small data
(Touvron et al. 2021). The teacher sees exactly the student's (augmented) batch: consistent views
(Beyer et al. 2022, "a good teacher is patient and consistent").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from torch import nn

from vprompt.backbones import BackboneSpec, create_backbone, data_config
from vprompt.errors import ConfigError
from vprompt.validation import Validated, above, at_least, at_most


@dataclass(frozen=True)
class DistillationConfig(Validated):
    """Which teacher and how much of the loss its predictions make."""

    teacher: BackboneSpec
    """The teacher network (e.g. ``BackboneSpec("zoo:fractal-resnet")``); it keeps its own classifier."""
    weight: Annotated[float, at_least(0), at_most(1)] = 1.0
    """Share of the loss that is distillation; the rest is cross-entropy on the labels."""
    temperature: Annotated[float, above(0)] = 1.0
    """Softmax temperature of both sides (the loss is scaled by its square, as in Hinton et al.)."""

    def settings(self) -> dict[str, Any]:
        """Plain data for checkpoints and cards."""
        return {"teacher": self.teacher.to_dict(), "weight": self.weight, "temperature": self.temperature}


class Teacher(nn.Module):
    """A frozen classifier on images in [0, 1]: its own normalisation, then the network, in eval mode."""

    def __init__(self, spec: BackboneSpec) -> None:
        super().__init__()
        self.network = create_backbone(spec).eval().requires_grad_(False)
        config = data_config(self.network)
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # its batch statistics and dropout are never ours to change

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network((images - self.mean) / self.std)


class Distillation:
    """The loss of one training step under ``config``, with its teacher built once."""

    def __init__(self, config: DistillationConfig) -> None:
        self.config = config
        self.teacher = Teacher(config.teacher)

    def to(self, device: torch.device) -> Distillation:
        self.teacher.to(device)
        return self

    def loss(self, logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(1 − weight)·CE(labels) + weight·T²·KL(teacher ‖ student), both at temperature T."""
        if teacher_logits.shape != logits.shape:
            raise ConfigError(f"the teacher predicts {tuple(teacher_logits.shape)[1:]} classes and the student "
                             f"{tuple(logits.shape)[1:]}; distillation needs the same source classes")
        t = self.config.temperature
        kd = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits.float() / t, 1), log_target=True,
                      reduction="batchmean") * t**2
        if self.config.weight == 1:
            return kd
        return (1 - self.config.weight) * F.cross_entropy(logits, labels) + self.config.weight * kd
