"""What ``auto`` means on a machine: precision from the CPU's flags, workers from the CPU count,
and the precision a run used recorded in its metrics."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from vprompt import hardware
from vprompt.errors import ConfigError
from vprompt.model import create_model
from vprompt.train import TrainConfig, make_accelerator, train


@pytest.fixture(autouse=True)
def _detected_precision(monkeypatch) -> None:
    """These tests check what ``auto`` detects, so the suite's pinned precision is lifted."""
    monkeypatch.delenv(hardware.AUTO_PRECISION_ENV)


@pytest.mark.parametrize("amx, expected", [(True, "bf16"), (False, "no")])
def test_auto_precision_on_a_cpu_follows_its_amx_flag(monkeypatch, amx, expected):
    monkeypatch.setattr(hardware, "cpu_has_amx_bf16", lambda: amx)
    assert hardware.resolve_precision("auto", "cpu") == expected


@pytest.mark.parametrize("explicit", ["no", "bf16", "fp16"])
def test_an_explicit_precision_is_kept_whatever_the_cpu(monkeypatch, explicit):
    monkeypatch.setattr(hardware, "cpu_has_amx_bf16", lambda: True)
    assert hardware.resolve_precision(explicit, "cpu") == explicit


@pytest.mark.parametrize("pinned", ["no", "bf16"])
def test_the_environment_pins_what_auto_means_whatever_the_cpu(monkeypatch, pinned):
    monkeypatch.setattr(hardware, "cpu_has_amx_bf16", lambda: pinned == "no")
    monkeypatch.setenv(hardware.AUTO_PRECISION_ENV, pinned)
    assert hardware.resolve_precision("auto", "cpu") == pinned
    assert hardware.resolve_precision("fp16", "cpu") == "fp16"  # an explicit choice still wins


def test_a_wrong_pinned_precision_is_refused_by_name(monkeypatch):
    monkeypatch.setenv(hardware.AUTO_PRECISION_ENV, "fp8")
    with pytest.raises(ConfigError, match="VPROMPT_AUTO_PRECISION='fp8' is not one of no, bf16, fp16"):
        hardware.resolve_precision("auto", "cpu")


def test_cpu_flags_are_read_from_torch_and_agree_with_proc_cpuinfo():
    flags = open("/proc/cpuinfo").read().split() if hardware.os.path.exists("/proc/cpuinfo") else None
    if flags is None:
        pytest.skip("no /proc/cpuinfo")
    assert hardware.cpu_has_avx512_bf16() == ("avx512_bf16" in flags)
    assert torch.cpu._is_amx_tile_supported() == ("amx_tile" in flags)


def test_a_cpu_accelerator_autocasts_to_bf16_when_auto_resolves_to_it(monkeypatch):
    monkeypatch.setattr(hardware, "cpu_has_amx_bf16", lambda: True)
    assert make_accelerator("auto").mixed_precision == "bf16"
    monkeypatch.setattr(hardware, "cpu_has_amx_bf16", lambda: False)
    assert make_accelerator("auto").mixed_precision == "no"


@pytest.mark.parametrize("cpus, decodes, expected", [(2, True, 1), (1, True, 0), (32, True, 8), (16, False, 0)])
def test_auto_workers_follow_the_cpu_count_and_only_for_image_files(monkeypatch, cpus, decodes, expected):
    monkeypatch.setattr(hardware, "available_cpus", lambda: cpus)
    assert hardware.resolve_workers("auto", decodes) == expected
    assert hardware.resolve_workers(3, decodes) == 3


@pytest.mark.parametrize("amx, precision", [(False, "no"), (True, "bf16")])
def test_every_metrics_row_records_the_precision_the_run_used(tmp_path, vit_spec, monkeypatch, amx, precision):
    monkeypatch.setattr(hardware, "cpu_has_amx_bf16", lambda: amx)
    data = TensorDataset(torch.rand(8, 3, 16, 16), torch.arange(8) % 2)
    model = create_model(vit_spec, "vpt-deep", 2, prompt_len=2)
    result = train(model, data, tmp_path, TrainConfig(epochs=2, batch_size=4, warmup_epochs=0), progress=False)
    assert [row["precision"] for row in result.metrics] == [precision, precision]


@pytest.mark.parametrize("device, precision, fused", [("cpu", "bf16", False), ("cpu", "no", True),
                                                      ("cuda", "bf16", True), ("cuda", "no", True)])
def test_the_explicit_attention_path_is_taken_only_on_a_cpu_under_bf16(device, precision, fused):
    assert hardware.fused_attention_pays(device, precision) is fused


@pytest.mark.parametrize("key", ["vit", "dinov3", "beit", "swin"])
def test_both_attention_paths_compute_the_same_logits_and_each_module_gets_its_own_setting_back(key):
    from test_families import FAMILY_SPECS, images

    model = create_model(FAMILY_SPECS[key], "vpt-deep", 3, prompt_len=2).eval()
    switches = [m for m in model.modules() if isinstance(getattr(m, "fused_attn", None), bool)]
    assert switches
    switches[0].fused_attn = False  # one module set otherwise by its owner
    before = [m.fused_attn for m in switches]
    batch = images()
    fused = model(batch)
    with hardware.attention_path(model, fused=False):
        assert not any(m.fused_attn for m in switches)
        explicit = model(batch)
    assert [m.fused_attn for m in switches] == before
    assert torch.allclose(fused, explicit, atol=1e-5)


@pytest.mark.parametrize("precision, fused_in_training, checkpointing",
                         [("bf16", False, False), ("bf16", False, True), ("no", True, False)])
def test_training_on_a_cpu_takes_the_faster_attention_path_and_hands_the_model_back(
        tmp_path, vit_spec, precision, fused_in_training, checkpointing):
    """Checkpointed blocks are recomputed in the backward pass, on the same path as the forward."""
    model = create_model(vit_spec, "vpt-deep", 2, prompt_len=2)
    attention = model.backbone.blocks[0].attn
    seen = []
    attention.register_forward_pre_hook(lambda module, args: seen.append(module.fused_attn))
    data = TensorDataset(torch.rand(8, 3, 16, 16), torch.arange(8) % 2)
    config = TrainConfig(epochs=1, batch_size=4, warmup_epochs=0, mixed_precision=precision,
                         grad_checkpointing=checkpointing)
    train(model, data, tmp_path, config, progress=False)
    assert len(seen) == 2 * (2 if checkpointing else 1) and set(seen) == {fused_in_training}
    assert attention.fused_attn is True
