"""A prompted model is an ordinary module: a deep copy (timm's ModelEmaV3, many training loops)
drives its own prompt, and ``torch.save`` of the whole model round-trips, on every family."""

from __future__ import annotations

import copy
import io

import pytest
import torch

from test_families import CASES, FAMILY_SPECS, images
from vprompt.model import create_model


def prompted(key: str, method: str):
    return create_model(FAMILY_SPECS[key], method, 3, prompt_len=2).eval()


@pytest.mark.parametrize("key, method", CASES)
def test_a_deep_copy_drives_its_own_prompt_and_leaves_the_original_alone(key, method):
    model = prompted(key, method)
    x = images()
    with torch.no_grad():
        before = model(x)
        twin = copy.deepcopy(model)
        assert torch.equal(twin(x), before)
        for param in twin.token_prompt.parameters():
            param.add_(5 * torch.randn_like(param))
        shifted = twin(x)
        assert not torch.equal(shifted, before)  # the copy reads its own, shifted prompt (layer scale keeps it small)
        assert torch.equal(model(x), before)  # ... and the original still reads its own
    twin(x).logsumexp(1).sum().backward()
    assert all(p.grad is not None for p in twin.token_prompt.parameters() if p.requires_grad)
    assert all(p.grad is None for p in model.token_prompt.parameters())  # no gradient reached the original
    with torch.no_grad():
        for param in twin.token_prompt.parameters():
            if param.grad is not None:
                param.sub_(10 * param.grad / param.grad.norm().clamp_min(1e-12))  # layer scale: a long step
        assert not torch.equal(twin(x), shifted)  # the step changed the copy's output
        assert torch.equal(model(x), before)


@pytest.mark.parametrize("key", sorted(FAMILY_SPECS))
def test_a_whole_prompted_model_survives_torch_save(key):
    model = prompted(key, "vpt-deep")
    with torch.no_grad():
        for param in model.token_prompt.parameters():
            param.add_(torch.randn_like(param))
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=False)
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
        for param in loaded.token_prompt.parameters():
            param.add_(torch.randn_like(param))
        assert not torch.equal(loaded(x), model(x))  # the loaded model drives its own prompt too


def test_detaching_a_copy_leaves_the_original_prompted():
    model = prompted("vit", "vpt-deep")
    x = images()
    with torch.no_grad():
        before = model(x)
        twin = copy.deepcopy(model)
        twin.token_prompt.detach()
        assert torch.equal(model(x), before)
        assert not torch.equal(twin(x), before)
