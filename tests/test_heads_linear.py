"""The linear head: standardised features by default, a plain linear classifier on request."""

import pytest
import torch

from vprompt.errors import ConfigError
from vprompt.heads import LinearHead
from vprompt.methods import make_config
from vprompt.model import create_model, parameter_report


def test_standardised_head_ignores_feature_offsets_and_scales_while_training():
    torch.manual_seed(0)
    features = torch.randn(16, 8)
    shifted = 0.1 * features + 5.0  # the zoo ViT's case: small spread around a large shared offset
    standardised, plain = LinearHead(8, 3).train(), LinearHead(8, 3, standardize=False).train()
    torch.testing.assert_close(standardised(shifted), standardised(features), rtol=0, atol=2e-3)  # up to BN eps
    assert not torch.allclose(plain(shifted), plain(features), atol=1e-2)


def test_batches_of_one_and_non_finite_batches_leave_the_running_statistics_alone():
    head = LinearHead(4, 2).train()
    head(torch.randn(8, 4) + 3.0)
    before = head.norm.running_mean.clone(), head.norm.running_var.clone()
    single = head(torch.randn(1, 4))
    poisoned = head(torch.tensor([[float("nan"), 0.0, 0.0, 0.0], [1.0, 2.0, 3.0, 4.0]]))
    assert single.shape == (1, 2) and torch.isfinite(single).all()
    assert torch.isnan(poisoned[0]).all() and torch.isfinite(poisoned[1]).all()
    assert torch.equal(head.norm.running_mean, before[0]) and torch.equal(head.norm.running_var, before[1])


def test_standardising_adds_no_parameters(vit_spec):
    counts = [parameter_report(create_model(vit_spec, "vpt-deep", 5, prompt_len=2, head_norm=norm)).head
              for norm in (True, False)]
    assert counts[0] == counts[1] == (32 + 1) * 5  # the tiny ViT is 32 wide


def test_a_plain_head_has_no_statistics_and_a_label_mapped_method_refuses_the_option(vit_spec):
    model = create_model(vit_spec, "linear", 3, head_norm=False)
    assert not any(name.startswith("head.") for name, _ in model.named_buffers())
    with pytest.raises(ConfigError, match="does not take head_norm"):
        make_config("vp", head_norm=False)
