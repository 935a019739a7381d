"""The contract between token prompts and one timm model family.

Token prompts (VPT, VAPT, the per-sample prompts of multi-source transfer) are written once,
against [`PromptSource`][vprompt.families.PromptSource]: a prompt says what enters block 0 and
what replaces the prompt tokens entering a later block. A [`TokenFamily`][vprompt.families.TokenFamily]
adapter knows everything that depends on the family: the width, prefix tokens and patch grid
([`TokenLayout`][vprompt.families.TokenLayout]), where the tokens
enter and leave, and what each block's attention needs so that the extra tokens are handled
correctly (no rotary embedding, zero relative-position bias, a padded shift mask). Adapters work
on unmodified timm models through hooks on their public modules; where an attention adds a bias
of fixed size, the adapter shadows that one method on the instance, and removing the handles
restores timm's own behaviour bit for bit.

Hooks hold no closures: each is a ``functools.partial`` of a module-level function or a bound
method whose arguments include the prompt. ``copy.deepcopy`` of a prompted model copies those
arguments with the model, so a copy drives its own prompt, and ``torch.save`` can pickle it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, ClassVar, Protocol

import torch
from torch import nn

from vprompt.errors import ConfigError
from vprompt.families.lean import Lean, Rows, block_kind, block_output, lean_block, stochastic


class PromptSource(Protocol):
    """What a family adapter asks of a token prompt, so that one prompt runs on every family."""

    num_tokens: int
    """Prompt tokens per layer (``p``)."""

    def initial_prompts(self, batch_size: int) -> torch.Tensor:
        """The (B, p, d_0) prompt tokens that enter block 0."""

    def block_prompts(self, index: int, patches: torch.Tensor) -> torch.Tensor | None:
        """The (B, p, d_index) prompts that replace those entering block ``index`` >= 1, or None to
        keep the previous block's prompt outputs. ``patches`` are the (B, N, d) patch tokens that
        enter the block (prefix and prompt tokens left out)."""

    def replaces(self, index: int) -> bool:
        """Whether the prompts entering block ``index`` >= 1 are always replaced (``block_prompts``
        returns a tensor), so block ``index - 1``'s prompt outputs are never read."""


class KeyValueSource(Protocol):
    """What a family adapter asks of key-value prompts: keys and values that join a block's
    attention, queried by every token and querying nothing."""

    def key_values(self, index: int, batch_size: int, num_heads: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Block ``index``'s keys and values, each (B, heads, p, head_dim)."""


@dataclass(frozen=True)
class TokenLayout:
    """The token geometry of a backbone, as token prompts need it."""

    block_dims: tuple[int, ...]
    """The width of the tokens entering each block (Swin's widen stage by stage)."""
    num_prefix_tokens: int
    """CLS, register and distillation tokens before the prompts (0 for Swin)."""
    patch_grid: tuple[int, int]
    """The patch grid entering block 0."""
    patch_size: tuple[int, int]
    """Pixels per patch (VPT's init bound reads it)."""
    fixed_grid: bool = True
    """Every block sees the same patch grid (False when stages merge patches)."""
    open_attention: bool = False
    """vprompt computes every block's attention from the block's own modules (timm's ViT, Eva and
    BEiT blocks, [`LEAN_BLOCKS`][vprompt.families.lean.LEAN_BLOCKS]) over keys of the token
    width, so keys and values can join it (key-value prompts)."""

    @property
    def depth(self) -> int:
        """Blocks of the backbone."""
        return len(self.block_dims)

    @property
    def uniform_width(self) -> bool:
        """Whether every block has the same token width (not Swin)."""
        return len(set(self.block_dims)) == 1


class Handle(Protocol):
    def remove(self) -> None: ...


class MethodOverride:
    """Shadows one method of one module instance (its class is untouched); ``remove`` restores
    the class's own method. Used where timm adds a bias of fixed size inside an attention."""

    def __init__(self, module: nn.Module, name: str, function: Callable[..., Any]) -> None:
        if name in module.__dict__:
            raise RuntimeError(f"{type(module).__name__}.{name} is already overridden (prompt attached twice?)")
        self.module, self.name = module, name
        object.__setattr__(module, name, function)

    def remove(self) -> None:
        self.module.__dict__.pop(self.name, None)


def pad_bias(bias: torch.Tensor, start: int, count: int) -> torch.Tensor:
    """An attention bias over N tokens (last two dims) extended to N + ``count`` tokens inserted at
    position ``start``, with zero bias in their rows and columns."""
    *lead, rows, cols = bias.shape
    bias = torch.cat([bias[..., :start, :], bias.new_zeros(*lead, count, cols), bias[..., start:, :]], dim=-2)
    return torch.cat([bias[..., :start], bias.new_zeros(*lead, rows + count, count), bias[..., start:]], dim=-1)


class TokenFamily(ABC):
    """One timm model family's adapter for token prompts."""

    name: ClassVar[str]
    """The timm class the adapter serves (subclasses of it are served too)."""
    module_path: ClassVar[str]
    """Where timm defines that class."""
    lean_forward: ClassVar[bool] = False
    """Whether the family's blocks can compute only the rows whose output is used
    ([`vprompt.families.lean`][vprompt.families.lean])."""
    checkpointing: ClassVar[str | None] = None
    """Why activation checkpointing cannot run with prompts on this family, or None when it can
    (the prompts' hooks run again when a block is recomputed, so they must keep no state)."""
    tuner_targets: ClassVar[str]
    """The linear layers a peft tuner adapts by default, as a pattern every full module name is
    matched against: each block's attention projections and MLP layers (never the head)."""
    tuner_feedforward: ClassVar[str]
    """The MLP layers among them (IA³ scales their input instead of their output)."""

    def matches(self, model: nn.Module) -> bool:
        """Whether ``model`` is an instance of the timm class this adapter serves."""
        import importlib

        cls = getattr(importlib.import_module(self.module_path), self.name)
        return isinstance(model, cls)

    @abstractmethod
    def layout(self, model: nn.Module) -> TokenLayout:
        """The model's token geometry."""

    @abstractmethod
    def attach(self, model: nn.Module, source: PromptSource | None, lean: Lean | None = None) -> list[Handle]:
        """Make every forward of ``model`` carry ``source``'s prompts (if any) and, where the
        family has one and ``lean`` asks for it, the lean forward; the handles undo it."""

    def attach_key_values(self, model: nn.Module, source: KeyValueSource, lean: Lean | None = None) -> list[Handle]:
        """Make every block's attention of ``model`` take ``source``'s keys and values (with the
        lean forward's last block where ``lean`` asks for it); the handles undo it."""
        raise ConfigError(f"{self.name} blocks take no key-value prompts (their attention is timm's own)")


class SequenceFamily(TokenFamily):
    """Families whose blocks pass one token sequence ``[prefix, patches]`` (ViT, EVA, BEiT).

    Prompts are inserted after the prefix tokens at the input of block 0 (after every embedding,
    so they carry no position embedding), their slice is replaced at later blocks when the prompt
    says so, and they are removed before the final norm, so the family's own pooling never sees
    them. Subclasses add what their attention needs.

    With the lean forward, a block whose prompt outputs are replaced next returns no prompt rows
    (the next block's prompts are inserted instead of replacing), and the last block returns only
    the rows the pooling reads.
    """

    tuner_targets = r"blocks\.\d+\.(attn\.(qkv|q_proj|k_proj|v_proj|proj)|mlp\.(fc1|fc1_g|fc1_x|fc2))"
    tuner_feedforward = r"blocks\.\d+\.mlp\.(fc1|fc1_g|fc1_x|fc2)"

    lean_forward = True

    def layout(self, model: nn.Module) -> TokenLayout:
        width = int(model.embed_dim)
        return TokenLayout(
            block_dims=(width,) * len(model.blocks),
            num_prefix_tokens=int(model.num_prefix_tokens),
            patch_grid=tuple(model.patch_embed.grid_size),
            patch_size=tuple(model.patch_embed.patch_size),
            open_attention=all(block_kind(block) is not None and block.attn.proj.in_features == width
                               for block in model.blocks),
        )

    def block_kwargs(self, kwargs: dict[str, Any], num_tokens: int) -> dict[str, Any]:
        """A block's keyword arguments adapted to the prompt tokens in its sequence."""
        return kwargs

    def attention_handles(self, model: nn.Module, num_tokens: int) -> list[Handle]:
        """Changes to the attention that the extra tokens need, beyond a block's arguments."""
        return []

    def pooled_rows(self, model: nn.Module) -> int | None:
        """How many leading rows of the last block the model's own pooling reads, or None when it
        reads more (average or attention pooling)."""
        return None

    def attach(self, model: nn.Module, source: PromptSource | None, lean: Lean | None = None) -> list[Handle]:
        prefix, count = self.layout(model).num_prefix_tokens, source.num_tokens if source is not None else 0
        rows = self.lean_rows(model, source, lean, prefix, count)
        handles: list[Handle] = []
        if source is not None:
            handles += [block.register_forward_pre_hook(
                partial(self.enter_block, source, index, prefix, index == 0 or rows[index - 1] is not None),
                with_kwargs=True) for index, block in enumerate(model.blocks)]
            if rows[-1] is None:
                handles.append(model.norm.register_forward_pre_hook(partial(drop_prompts, prefix, count)))
            handles += self.attention_handles(model, count)
        for block, block_rows in zip(model.blocks, rows):
            if block_rows is not None:
                lean_forward = partial(lean_block, block_rows, block, block_kind(block), stochastic(block))
                handles.append(MethodOverride(block, "forward", lean_forward))
        return handles

    def attach_key_values(self, model: nn.Module, source: KeyValueSource, lean: Lean | None = None) -> list[Handle]:
        layout = self.layout(model)
        if not layout.open_attention:
            return super().attach_key_values(model, source, lean)
        rows = self.lean_rows(model, None, lean, layout.num_prefix_tokens, 0)
        return [MethodOverride(block, "forward", partial(key_value_block, block_rows or Rows(), block, source, index))
                for index, (block, block_rows) in enumerate(zip(model.blocks, rows))]

    def lean_rows(self, model: nn.Module, source: PromptSource | None, lean: Lean | None, prefix: int,
                  count: int) -> list[Rows | None]:
        """The rows each block computes under ``lean`` (None: all of them, timm's own forward; so
        also for a block without a lean forward). With ``count`` prompt tokens after ``prefix``,
        every ``Rows`` leaves the prompt rows out, so the block after it inserts its prompts."""
        blocks = list(model.blocks)
        if lean is None:
            return [None] * len(blocks)
        without_prompts = Rows(start=prefix, skip=count) if count else None
        rows = [without_prompts if count and source.replaces(index + 1) else None for index in range(len(blocks) - 1)]
        pooled = lean.pooled_rows
        rows.append(Rows(lead=pooled) if pooled and pooled <= prefix else without_prompts)
        return [block_rows if block_kind(block) is not None else None for block_rows, block in zip(rows, blocks)]

    def enter_block(self, source: PromptSource, index: int, prefix: int, inserts: bool, module: nn.Module,
                    args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        """Block ``index``'s input with the prompts inserted (block 0, or after a lean block that
        left them out) or replaced (later blocks)."""
        hidden, count = args[0], source.num_tokens
        if inserts:
            prompts = (source.initial_prompts(hidden.shape[0]) if index == 0
                       else source.block_prompts(index, hidden[:, prefix:])).to(hidden.dtype)
            hidden = torch.cat([hidden[:, :prefix], prompts, hidden[:, prefix:]], dim=1)
        else:
            prompts = source.block_prompts(index, hidden[:, prefix + count:])
            if prompts is not None:
                hidden = torch.cat([hidden[:, :prefix], prompts.to(hidden.dtype), hidden[:, prefix + count:]], 1)
        return (hidden, *args[1:]), self.block_kwargs(kwargs, count)


def drop_prompts(prefix: int, count: int, module: nn.Module, args: tuple) -> tuple:
    """The final norm's input without the prompt tokens, so the family's pooling never sees them."""
    hidden = args[0]
    return (torch.cat([hidden[:, :prefix], hidden[:, prefix + count:]], dim=1), *args[1:])


def key_value_block(rows: Rows, block: nn.Module, source: KeyValueSource, index: int, x: torch.Tensor, *args: Any,
                    **kwargs: Any) -> torch.Tensor:
    """Block ``index``'s output at ``rows`` with ``source``'s keys and values in its attention
    (it replaces the block's ``forward`` on the instance)."""
    kind = block_kind(block)
    passed = {name: value for name, value in kwargs.items() if name in kind.passes}
    if args or any(value is not None and value is not False for name, value in kwargs.items() if name not in passed):
        raise ConfigError(f"{type(block).__name__} was called with arguments key-value prompts cannot pass through "
                          f"(an attention mask?)")
    key_values = source.key_values(index, x.shape[0], block.attn.num_heads)
    return block_output(rows, block, kind, x, passed, key_values)
