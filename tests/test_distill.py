"""Distillation in the training loop: the loss is the teacher-matching term, the student moves towards
the teacher's predictions, the teacher never changes, and a resume refuses another teacher setting."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.utils.data import TensorDataset

from conftest import tiny_vit_spec
from vprompt.backbones import BackboneSpec, create_backbone
from vprompt.distill import Distillation, DistillationConfig, Teacher
from vprompt.errors import ConfigError
from vprompt.model import create_model
from vprompt.train import TrainConfig, train

TEACHER = tiny_vit_spec(num_classes=3)
TEACHER.init_seed = 7


def images(n: int = 64) -> TensorDataset:
    generator = torch.Generator().manual_seed(0)
    return TensorDataset(torch.rand(n, 3, 16, 16, generator=generator), torch.randint(0, 3, (n,), generator=generator))


def test_the_loss_is_zero_on_the_teacher_itself_and_mixes_in_cross_entropy():
    logits, labels = torch.randn(8, 3), torch.randint(0, 3, (8,))
    pure = Distillation(DistillationConfig(TEACHER))
    assert pure.loss(logits, logits, labels).item() == pytest.approx(0.0, abs=1e-6)
    half = Distillation(DistillationConfig(TEACHER, weight=0.5, temperature=2.0))
    other = torch.randn(8, 3)
    kd = F.kl_div(F.log_softmax(logits / 2, 1), F.log_softmax(other / 2, 1), log_target=True, reduction="batchmean")
    assert half.loss(logits, other, labels).item() == pytest.approx(
        0.5 * F.cross_entropy(logits, labels).item() + 0.5 * 4 * kd.item(), rel=1e-5)
    with pytest.raises(ConfigError, match="same source classes"):
        pure.loss(torch.randn(8, 5), logits, labels)


def test_the_teacher_normalises_like_its_backbone_and_stays_frozen_in_eval_mode():
    teacher = Teacher(TEACHER).train()
    assert not teacher.network.training and not any(p.requires_grad for p in teacher.parameters())
    batch = torch.rand(2, 3, 16, 16)
    network = create_backbone(TEACHER).eval()
    with torch.no_grad():
        expected = network((batch - 0.5) / 0.5)  # timm's ViT statistics
    assert torch.allclose(teacher(batch), expected, atol=1e-6)


def confident_teacher(folder) -> BackboneSpec:
    """TEACHER with its classifier scaled up: a random ViT's predictions are near uniform, too close
    to any student's for a test to see the gap close."""
    network = create_backbone(TEACHER)
    with torch.no_grad():
        network.head.weight.mul_(30)
    path = folder / "teacher.safetensors"
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    return replace(TEACHER, checkpoint=str(path))


def test_training_moves_the_student_towards_the_teacher_and_guards_resume(tmp_path):
    spec = confident_teacher(tmp_path)
    student, on_labels = (create_model(tiny_vit_spec(num_classes=3), "linear", 3) for _ in range(2))
    teacher = Teacher(spec)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    data = images()
    batch = data.tensors[0]

    def gap(student=student) -> float:
        student.eval()
        with torch.no_grad():
            return F.kl_div(F.log_softmax(student(batch), 1), F.log_softmax(teacher(batch), 1), log_target=True,
                            reduction="batchmean").item()

    start = gap()
    config = TrainConfig(epochs=8, batch_size=16, base_lr=2.0, warmup_epochs=0, weight_decay=0.0)
    train(student, data, tmp_path / "run", config, progress=False, distillation=DistillationConfig(spec))
    train(on_labels, data, tmp_path / "labels", config, progress=False)
    assert gap() < 0.7 * start and gap() < gap(on_labels)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    with pytest.raises(ConfigError, match="different distillation setting"):
        train(student, data, tmp_path / "run", config, resume=True, progress=False,
              distillation=DistillationConfig(spec, weight=0.5))
