"""Options that change how fast a run goes, never what it computes: gradient checkpointing on every
family that allows it, torch.compile, and resuming with other speed settings."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from vprompt.errors import ConfigError
from vprompt.model import create_model
from vprompt.hardware import resolve_precision
from vprompt.train import TrainConfig, train

from test_families import FAMILY_SPECS, images

CHECKPOINTED = [(key, method) for key in ("vit", "dinov3", "eva02", "beit") for method in ("vpt-deep", "vapt")]


def prompt_gradients(model, x: torch.Tensor) -> dict[str, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), torch.tensor([0, 1, 2])).backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("key, method", CHECKPOINTED)
def test_checkpointing_gives_the_same_prompt_gradients(key, method):
    model = create_model(FAMILY_SPECS[key], method, 3, prompt_len=2, prompt_dropout=0.2).train()
    x = images()
    torch.manual_seed(5)
    plain = prompt_gradients(model, x)
    model.set_grad_checkpointing(True)
    assert model.backbone.grad_checkpointing
    torch.manual_seed(5)  # the same dropout draw: checkpointing replays it on recompute
    checkpointed = prompt_gradients(model, x)
    assert plain.keys() == checkpointed.keys() and any(g.abs().sum() > 0 for g in plain.values())
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_prompts_on_swin_is_refused_with_the_reason():
    model = create_model(FAMILY_SPECS["swin"], "vpt-deep", 3, prompt_len=2)
    with pytest.raises(ConfigError, match="cannot run vpt-deep on SwinTransformer: the prompts travel beside"):
        model.set_grad_checkpointing(True)
    pixel = create_model(FAMILY_SPECS["swin"], "vp", 3)  # no token prompt: Swin's own checkpointing is fine
    pixel.set_grad_checkpointing(True)
    assert all(stage.grad_checkpointing for stage in pixel.backbone.layers)


def test_reentrant_checkpointing_is_refused(monkeypatch):
    monkeypatch.setattr("timm.layers.config._USE_REENTRANT_CKPT", True)
    model = create_model(FAMILY_SPECS["vit"], "vpt-deep", 3, prompt_len=2)
    with pytest.raises(ConfigError, match="non-reentrant"):
        model.set_grad_checkpointing(True)


def separable(n: int = 24) -> TensorDataset:
    labels = torch.arange(n) % 3
    x = torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(2)) * 0.5 + labels.view(-1, 1, 1, 1) / 4
    return TensorDataset(x, labels)


def trained(tmp_path, name: str, **speed) -> tuple[list[dict], dict[str, torch.Tensor], torch.nn.Module]:
    torch.manual_seed(0)
    model = create_model(FAMILY_SPECS["vit"], "vpt-deep", 3, prompt_len=2)
    config = TrainConfig(epochs=2, batch_size=8, warmup_epochs=0, base_lr=0.5, **speed)
    result = train(model, separable(), tmp_path / name, config, progress=False)
    rows = [{k: v for k, v in row.items() if k != "seconds"} for row in result.metrics]
    return rows, model.trainable_state(), model


def test_training_with_checkpointing_computes_what_training_without_does(tmp_path):
    rows, state, _ = trained(tmp_path, "plain")
    rows_ckpt, state_ckpt, model = trained(tmp_path, "ckpt", grad_checkpointing=True)
    assert not model.backbone.grad_checkpointing  # the model is handed back as it came
    assert [r["train_acc"] for r in rows] == [r["train_acc"] for r in rows_ckpt]
    for name in state:
        torch.testing.assert_close(state_ckpt[name], state[name], rtol=1e-5, atol=1e-6, msg=name)


def dynamo_counts() -> dict[str, int]:
    """What TorchDynamo has done since its counters were last cleared: frames it turned into graphs,
    the graphs, the ops captured in them, and the graphs handed on to AOTAutograd (forward + backward)."""
    from torch._dynamo.utils import counters

    return {"frames_ok": counters["frames"]["ok"], "graphs": counters["stats"]["unique_graphs"],
            "ops": counters["stats"]["calls_captured"], "aot_graphs": counters["aot_autograd"]["total"]}


@pytest.mark.slow  # end to end, seconds: the fast tier stays under its budget
def test_compiled_training_matches_eager_within_tolerance(tmp_path):
    import torch._dynamo
    from torch._dynamo.utils import counters

    torch._dynamo.reset()  # forget earlier tests' compiled code: this run compiles afresh
    counters.clear()
    rows, state, eager = trained(tmp_path, "eager")
    assert set(dynamo_counts().values()) == {0}, dynamo_counts()  # eager training compiles nothing
    rows_compiled, state_compiled, compiled = trained(tmp_path, "compiled", compile=True)
    ran = dynamo_counts()  # read before the eager calls below
    # --compile did compile: Dynamo captured the model's forward as graphs of many ops and handed them
    # to AOTAutograd, which compiles the backward too (both run in training)
    assert ran["frames_ok"] >= 1 and ran["graphs"] >= 1 and ran["aot_graphs"] >= 1, ran
    assert ran["ops"] >= 20, ran  # the tiny ViT's blocks, not a stray helper
    assert len(rows_compiled) == len(rows) == 2
    for row, other in zip(rows, rows_compiled):
        assert other["train_loss"] == pytest.approx(row["train_loss"], rel=1e-4)
    for name in state:
        torch.testing.assert_close(state_compiled[name], state[name], rtol=1e-4, atol=1e-5, msg=name)
    x = separable().tensors[0][:8]
    torch.testing.assert_close(compiled.eval()(x), eager.eval()(x), rtol=1e-4, atol=1e-4)


def test_a_resume_may_change_speed_settings_but_not_what_is_computed(tmp_path):
    model = create_model(FAMILY_SPECS["vit"], "linear", 3)
    config = TrainConfig(epochs=1, batch_size=8, warmup_epochs=0, workers=0)
    train(model, separable(), tmp_path, config, progress=False)
    faster = TrainConfig(epochs=1, batch_size=8, warmup_epochs=0, workers=2, cache_mb=0, grad_checkpointing=True)
    assert train(model, separable(), tmp_path, faster, resume=True, progress=False).metrics[0]["epoch"] == 1
    other = "no" if resolve_precision("auto") == "bf16" else "bf16"  # a precision auto does not resolve to here
    with pytest.raises(ConfigError, match="mixed_precision changed"):
        train(model, separable(), tmp_path, TrainConfig(epochs=1, batch_size=8, warmup_epochs=0, mixed_precision=other),
              resume=True, progress=False)
    same = TrainConfig(epochs=1, batch_size=8, warmup_epochs=0, mixed_precision=resolve_precision("auto"))
    assert train(model, separable(), tmp_path, same, resume=True, progress=False).metrics[0]["epoch"] == 1
