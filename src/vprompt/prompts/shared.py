"""What multi-source transfer and the prompt bank ask of a prompt, as a small typed protocol.

Transfer mixes the trained prompts of several source tasks into one target prompt, and searches
the mixing weights with every sample of a batch prompted by its own copy. It needs three things
of a prompt, and nothing else: the one tensor every sample shares, a way to prompt each sample
with its own copy of that tensor, and the tensor's name in the prompt's state dict (where the
bank finds it in a saved checkpoint). A prompt class opts in by providing them.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import ClassVar, Protocol, runtime_checkable

import torch


@runtime_checkable
class SharedPrompt(Protocol):
    """A prompt whose trainable state is one tensor shared by every sample."""

    shared_tensor_name: ClassVar[str]
    """The attribute holding the shared tensor: its key in the prompt module's state dict."""

    def shared_prompts(self) -> torch.Tensor | None:
        """The shared tensor (*S), or None when this build has none (e.g. widths that change by stage)."""

    def per_sample(self, prompts: torch.Tensor) -> AbstractContextManager[None]:
        """Inside the block, sample i is prompted with ``prompts[i]`` (B, *S) instead of the shared tensor."""
