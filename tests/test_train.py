"""The training loop: it learns, resumes exactly, stops on NaN, and never overwrites a run."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from vprompt.errors import ConfigError, NonFiniteLossError
from vprompt.model import create_model, load_prompt
from vprompt.checkpoint import latest_checkpoint
from vprompt.train import TrainConfig, lr_at, train


def separable_task(n: int = 96) -> TensorDataset:
    """Two classes told apart by image brightness: learnable in a few epochs from random features."""
    generator = torch.Generator().manual_seed(1)
    labels = torch.arange(n) % 2
    images = torch.rand(n, 3, 16, 16, generator=generator) * 0.5 + labels.view(-1, 1, 1, 1) * 0.5
    return TensorDataset(images, labels)


QUICK = TrainConfig(epochs=4, batch_size=16, warmup_epochs=1, base_lr=2.0, weight_decay=0.0)


class FaultAfter(Dataset):
    """Reads ``inner`` normally for ``clean_reads`` items, then lets ``fault`` spoil every item."""

    def __init__(self, inner: Dataset, clean_reads: int, fault) -> None:
        self.inner, self.clean_reads, self.fault, self.reads = inner, clean_reads, fault, 0

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index):
        self.reads += 1
        image, label = self.inner[index]
        return (image, label) if self.reads <= self.clean_reads else (self.fault(image), label)


def killed(image):
    """Like a run killed mid-epoch."""
    raise KeyboardInterrupt


def nan_image(image):
    return torch.full_like(image, float("nan"))


def trainable(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.trainable_state().items()}


def test_training_learns_a_separable_task(tmp_path, vit_spec):
    model = create_model(vit_spec, "vpt-deep", 2, prompt_len=2)
    result = train(model, separable_task(), tmp_path, QUICK, eval_set=separable_task(), progress=False)
    assert [row["epoch"] for row in result.metrics] == [1, 2, 3, 4]
    assert result.metrics[-1]["train_loss"] < result.metrics[0]["train_loss"]
    assert result.metrics[-1]["eval_acc"] > 0.8
    assert json.loads((tmp_path / "metrics.json").read_text()) == result.metrics
    assert (tmp_path / "metrics.csv").read_text().splitlines()[0].startswith("epoch,lr,train_loss")
    reloaded = load_prompt(result.final_dir).eval()
    images = separable_task().tensors[0][:8]
    assert torch.equal(reloaded(images), model.eval()(images))


@pytest.mark.parametrize("method, options, reads_per_epoch", [
    ("vpt-deep", {"prompt_len": 2, "prompt_dropout": 0.1}, 96),
    ("linear", {}, 96),
    ("vp", {"mapping": "ilm"}, 2 * 96),  # ILM reads the training set once more per epoch, to remap
])
def test_interrupted_then_resumed_run_matches_an_uninterrupted_one(tmp_path, vit_spec, method, options,
                                                                   reads_per_epoch):
    torch.manual_seed(0)
    reference = create_model(vit_spec, method, 2, **options)
    train(reference, separable_task(), tmp_path / "straight", QUICK, progress=False)

    torch.manual_seed(0)
    interrupted = create_model(vit_spec, method, 2, **options)
    with pytest.raises(KeyboardInterrupt):  # killed 40 images into epoch 3
        train(interrupted, FaultAfter(separable_task(), reads_per_epoch * 3 - 96 + 39, killed), tmp_path / "resumed", QUICK,
              progress=False)
    assert latest_checkpoint(tmp_path / "resumed").name == "epoch-0002"

    torch.manual_seed(99)  # a fresh process: the new model's own init must not leak into the result
    resumed = create_model(vit_spec, method, 2, **options)
    result = train(resumed, separable_task(), tmp_path / "resumed", QUICK, resume=True, progress=False)
    assert [row["epoch"] for row in result.metrics] == [1, 2, 3, 4]
    expected, got = trainable(reference), trainable(resumed)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, vit_spec):
    model = create_model(vit_spec, "linear", 2)
    config = TrainConfig(epochs=3, batch_size=16, warmup_epochs=0, base_lr=1.0)
    with pytest.raises(NonFiniteLossError, match="loss became nan at epoch 2, step 1; .*last good checkpoint is kept"):
        train(model, FaultAfter(separable_task(), 96, nan_image), tmp_path, config, progress=False)
    kept = latest_checkpoint(tmp_path)
    assert kept.name == "epoch-0001"
    kept_state = load_prompt(kept).trainable_state()
    for name, value in model.trainable_state().items():  # the failing step updated nothing
        assert torch.isfinite(kept_state[name]).all()
        assert torch.equal(kept_state[name], value)


def test_a_finished_run_is_never_overwritten_and_nothing_is_resumed_from_nothing(tmp_path, vit_spec):
    model = create_model(vit_spec, "linear", 2)
    with pytest.raises(ConfigError, match="nothing to resume"):
        train(model, separable_task(), tmp_path, QUICK, resume=True, progress=False)
    train(model, separable_task(), tmp_path, TrainConfig(epochs=1, batch_size=32, warmup_epochs=0), progress=False)
    with pytest.raises(ConfigError, match="already holds a run"):
        train(model, separable_task(), tmp_path, QUICK, progress=False)
    with pytest.raises(ConfigError, match="different settings: base_lr, batch_size, epochs, warmup_epochs, weight_decay changed"):
        train(model, separable_task(), tmp_path, QUICK, resume=True, progress=False)


def test_learning_rate_scales_with_batch_and_follows_warmup_then_cosine():
    assert TrainConfig(base_lr=0.1, batch_size=64).peak_lr() == pytest.approx(0.025)
    assert TrainConfig(base_lr=0.1, batch_size=64).peak_lr(processes=4) == pytest.approx(0.1)
    peak, total, warmup = 1.0, 100, 10
    assert lr_at(0, total, warmup, peak) == pytest.approx(0.1)
    assert lr_at(9, total, warmup, peak) == pytest.approx(1.0)
    assert lr_at(10, total, warmup, peak) == pytest.approx(1.0)
    assert lr_at(55, total, warmup, peak) == pytest.approx(0.5)
    assert lr_at(99, total, warmup, peak) == pytest.approx(0.5 * (1 + math.cos(math.pi * 89 / 90)))


def test_adversarial_training_feeds_in_ball_adversarial_examples_and_guards_resume(tmp_path, vit_spec):
    from vprompt.robust import AdversarialConfig, ThreatModel

    adversarial = AdversarialConfig(threat=ThreatModel("linf", 0.1))
    model = create_model(vit_spec, "vpt-deep", 2, prompt_len=2)
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()) if m.training else None)
    config = TrainConfig(epochs=1, batch_size=32, warmup_epochs=0)
    train(model, separable_task(), tmp_path, config, progress=False, adversarial=adversarial)
    clean = separable_task().tensors[0].flatten(1)
    trained_on = torch.cat(seen).flatten(1)  # the attack's own forward passes included: also in the ball
    distance = (trained_on[:, None] - clean[None]).abs().amax(-1).min(1).values  # to the nearest clean image
    assert len(trained_on) >= 96
    assert (distance > 0).all() and (distance <= 0.1 + 1e-6).all()
    with pytest.raises(ConfigError, match="different adversarial-training setting"):
        train(model, separable_task(), tmp_path, config, resume=True, progress=False)  # resumed without it
