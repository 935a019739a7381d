"""Prompts saved by an earlier vprompt load and give the same logits: the checkpoint format is a
promise to users. The folders under tests/data/saved_prompts were written by vprompt 0.1.0 at
commit 375551d (a tiny random-init ViT, trainable tensors shifted off their init), with the
logits that version computed on fixed images. That version ran every row through every block: the
full path gives its logits bit for bit, the lean forward within float rounding."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vprompt.model import load_prompt

SAVED = Path(__file__).parent / "data" / "saved_prompts"


@pytest.mark.parametrize("method", ["vpt-deep", "vapt", "vp", "linear"])
def test_a_prompt_saved_by_an_earlier_version_gives_the_same_logits(method):
    recorded = load_file(str(SAVED / "logits.safetensors"))
    model = load_prompt(SAVED / method)
    assert model.method.name == method and model.class_names == ["a", "b", "c"]
    lean = model(recorded["images"]).detach()  # as recorded: autograd on
    model.set_lean(False)
    assert torch.equal(model(recorded["images"]).detach(), recorded[method])
    torch.testing.assert_close(lean, recorded[method], rtol=1e-5, atol=1e-6)
