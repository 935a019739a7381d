"""Visual Fourier prompts (VFPT; Zeng et al., NeurIPS 2024): VPT-deep whose prompts partly live in
the frequency domain.

Each block's p prompts are VPT-deep's free parameters; a share of them enters the block through a
Fourier transform over the hidden dimension and then over those prompts' sequence, real part kept
(the paper's FNet-style transform), the rest as they are. The transform is fixed, so the count of
trainable parameters is VPT-deep's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import torch

from vprompt.families import TokenLayout
from vprompt.methods import Method, register_method
from vprompt.prompts.tokens import VPTConfig, VPTPrompt
from vprompt.validation import at_least, at_most


@dataclass
class VFPTConfig(VPTConfig):
    """Options of ``vfpt``: VPT-deep's, and the share of Fourier prompts."""

    fourier_share: Annotated[float, at_least(0), at_most(1)] = 0.5
    """Share of each block's prompts passed through the Fourier transform (the paper's α); they come
    first, the spatial prompts after them (which come first is vprompt's choice)."""


class VFPTPrompt(VPTPrompt):
    """VPT-deep prompts, the first ``fourier_rows`` of each block's through Re(FFT_seq(FFT_hidden(·))).

    Args:
        layout: The backbone's token geometry.
        config: Prompt length, dropout and the Fourier share.
    """

    def __init__(self, layout: TokenLayout, config: VFPTConfig) -> None:
        super().__init__(layout, config, deep=True)
        self.fourier_rows = round(config.fourier_share * self.num_tokens)
        """Prompts per block that enter through the Fourier transform."""

    def _layer(self, index: int, batch_size: int) -> torch.Tensor:
        prompts = super()._layer(index, batch_size)  # after dropout, as in the paper
        if self.fourier_rows == 0:
            return prompts
        head = prompts[:, :self.fourier_rows].float()  # the FFT has no bf16 kernel on every device
        fourier = torch.fft.fft(torch.fft.fft(head, dim=-1), dim=-2).real.to(prompts.dtype)
        return torch.cat([fourier, prompts[:, self.fourier_rows:]], dim=1)


register_method(Method("vfpt", VFPTConfig, lambda config, layout: VFPTPrompt(layout, config),
                       summary="VFPT: VPT-deep with a share of Fourier prompts (Zeng et al., 2024)"))
