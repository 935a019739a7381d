"""VFPT (`--method vfpt`): VPT-deep's parameters, a share of each block's prompts entering through
the Fourier transform (checked against numpy's FFT), and VPT-deep itself at a share of 0."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from conftest import tiny_vit_spec
from vprompt.model import count_parameters, create_model


def test_parameters_are_vpt_deeps():
    assert count_parameters(tiny_vit_spec(), "vfpt", 4, prompt_len=6).prompt == count_parameters(
        tiny_vit_spec(), "vpt-deep", 4, prompt_len=6).prompt == 3 * 6 * 32


def test_the_fourier_share_enters_as_the_real_part_of_its_2d_fft_and_the_rest_as_it_is():
    model = create_model(tiny_vit_spec(), "vfpt", 4, prompt_len=6, fourier_share=0.5).eval()
    prompt = model.token_prompt
    entering = prompt.block_prompts(1, torch.zeros(2, 16, 32))
    free = prompt.layer_prompt(1).detach().numpy()
    expected = np.fft.fft2(free[:3]).real  # over the 3 Fourier prompts and the hidden dimension
    np.testing.assert_allclose(entering[0, :3].detach().numpy(), expected, rtol=1e-4, atol=1e-5)
    assert torch.equal(entering[1, 3:], prompt.layer_prompt(1)[3:])
    assert prompt.fourier_rows == 3


def test_a_share_of_zero_is_vpt_deep_and_gradients_reach_every_prompt():
    images = torch.rand(3, 3, 16, 16)
    torch.manual_seed(0)
    vfpt = create_model(tiny_vit_spec(), "vfpt", 4, prompt_len=4, fourier_share=0.0).eval()
    torch.manual_seed(0)
    vpt = create_model(tiny_vit_spec(), "vpt-deep", 4, prompt_len=4).eval()
    assert torch.equal(vfpt(images), vpt(images))
    model = create_model(tiny_vit_spec(), "vfpt", 4, prompt_len=4, fourier_share=1.0).train()
    F.cross_entropy(model(images), torch.tensor([0, 1, 2])).backward()
    grad = model.token_prompt.prompts.grad
    assert grad is not None and bool((grad.abs().sum(dim=(1, 2)) > 0).all())
