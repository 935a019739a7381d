"""Prompt families; importing this package registers every method they define.

Each prompt module pairs with a method config: [`VPTConfig`][vprompt.prompts.VPTConfig] builds a
[`VPTPrompt`][vprompt.prompts.VPTPrompt] (``vpt-shallow``, ``vpt-deep``),
[`VAPTConfig`][vprompt.prompts.VAPTConfig] a [`VAPTPrompt`][vprompt.prompts.VAPTPrompt] (``vapt``),
[`VFPTConfig`][vprompt.prompts.VFPTConfig] a [`VFPTPrompt`][vprompt.prompts.VFPTPrompt] (``vfpt``)
[`KeyValueConfig`][vprompt.prompts.KeyValueConfig] a [`KeyValuePrompt`][vprompt.prompts.KeyValuePrompt]
(``kv-prompt``) and [`VPConfig`][vprompt.prompts.VPConfig] a [`PixelPrompt`][vprompt.prompts.PixelPrompt] (``vp``).
[`SharedPrompt`][vprompt.prompts.SharedPrompt] is what multi-source transfer asks of a prompt.
"""

from vprompt.prompts.adaptive import VAPTConfig, VAPTPrompt
from vprompt.prompts.fourier import VFPTConfig, VFPTPrompt
from vprompt.prompts.key_value import KeyValueConfig, KeyValuePrompt
from vprompt.prompts.pixel import PixelPrompt, VPConfig
from vprompt.prompts.shared import SharedPrompt
from vprompt.prompts.tokens import TokenPrompt, VPTConfig, VPTPrompt

__all__ = ["KeyValueConfig", "KeyValuePrompt", "PixelPrompt", "SharedPrompt", "TokenPrompt", "VAPTConfig", "VAPTPrompt", "VFPTConfig", "VFPTPrompt", "VPConfig",
           "VPTConfig", "VPTPrompt"]
