"""The lean forward: a block computes outputs only at the rows whose output is used.

Two kinds of rows are thrown away by the full computation. Where a prompt replaces the prompt
tokens entering block *l+1* (VPT-deep, VAPT), block *l*'s outputs at the prompt positions are
never read: the prompts are needed there as keys and values of the attention, never as queries,
never through the output projection or the MLP. In the last block, the pooling reads only some
rows (the class token for token pooling, never the prompts). A lean block takes the whole
sequence and returns only its ``Rows``: every row still enters the keys and values, so what the
kept rows compute is the full block's math, composed from the block's own timm modules (``norm1``,
``qkv``, ``q_norm``, rotary embedding, ``proj``, layer scale, ``mlp``).

Only block and attention classes listed in [`LEAN_BLOCKS`][vprompt.families.lean.LEAN_BLOCKS]
get a lean forward, matched by exact class: a subclass, another block, a call with an attention
mask, an attention with hooks on it, or a training block with active dropout runs timm's own
forward and keeps the same rows from its output, so the row layout between blocks never depends
on which path ran. The tests check every listed class against timm's full forward.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LEAN_BLOCKS", "BlockKind", "Lean", "Rows", "block_kind"]


@dataclass(frozen=True)
class Lean:
    """The request for a lean forward, with what only the caller knows."""

    pooled_rows: int | None = None
    """How many leading rows of the last block its pooling reads (None: every row but the prompts)."""


@dataclass(frozen=True)
class Rows:
    """The rows of a block's input sequence that get an output: the first ``lead`` rows, or
    every row but the ``skip`` rows starting at ``start`` (the prompts)."""

    lead: int = 0
    """The first ``lead`` rows only (0: not this kind)."""
    start: int = 0
    """Where the rows left out begin."""
    skip: int = 0
    """How many rows are left out from ``start`` on."""

    def take(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """These rows of a tensor.

        Args:
            x: Any tensor with the sequence along ``dim``.
            dim: The sequence dimension.

        Returns:
            The rows, concatenated in their order (a view when they are contiguous).
        """
        if self.lead:
            return x.narrow(dim, 0, self.lead)
        after = self.start + self.skip
        rest = x.narrow(dim, after, x.shape[dim] - after)
        return rest if self.start == 0 else torch.cat([x.narrow(dim, 0, self.start), rest], dim)


QKV = tuple[torch.Tensor, torch.Tensor, torch.Tensor, "torch.Tensor | None"]
"""Queries (B, heads, rows kept, head_dim), keys and values (B, heads, every row, head_dim), and
the additive attention bias."""


@dataclass(frozen=True)
class BlockKind:
    """How a supported block computes: its attention's queries, keys and values, the block keyword
    arguments that reach the attention, and whether its layer scale is a ``gamma`` parameter
    (Eva, BEiT) or ``ls`` modules (ViT)."""

    qkv: Callable[..., QKV]
    """The attention's queries (kept rows), keys and values (every row) and additive bias."""
    passes: tuple[str, ...]
    """The block's keyword arguments that its attention takes (``rope``, ``shared_rel_pos_bias``)."""
    gamma: bool
    """Layer scale as ``gamma_1``/``gamma_2`` parameters (Eva, BEiT) rather than ``ls1``/``ls2`` modules."""


def heads(t: torch.Tensor, parts: int, num_heads: int) -> tuple[torch.Tensor, ...]:
    """(B, N, parts·heads·head_dim) split into ``parts`` tensors of (B, heads, N, head_dim)."""
    batch, rows, width = t.shape
    return t.reshape(batch, rows, parts, num_heads, width // (parts * num_heads)).permute(2, 0, 3, 1, 4).unbind(0)


def fused_qkv(attn: nn.Module, h: torch.Tensor, rows: Rows) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries of the kept rows, keys and values of every row, from one fused ``qkv`` projection
    (Eva and BEiT add a separate query/value bias, as timm does). A plain ``nn.Linear`` is applied
    in two slices of its weight, so no query is computed, or kept for the backward pass, for a
    row whose output is not read; a wrapped projection (an adapter) runs whole on every row."""
    linear, extra = attn.qkv, None
    if getattr(attn, "q_bias", None) is not None:
        extra = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
    through_module = extra is None or attn.qkv_bias_separate  # timm's own call goes through the module
    if through_module and type(linear) is not nn.Linear:
        qkv = linear(h) if extra is None else linear(h) + extra
        q, k, v = heads(qkv, 3, attn.num_heads)
        return rows.take(q, 2), k, v
    bias, added = (linear.bias, extra) if through_module else (extra, None)
    width = linear.weight.shape[0] // 3

    def project(x: torch.Tensor, part: slice) -> torch.Tensor:
        out = F.linear(x, linear.weight[part], None if bias is None else bias[part])
        return out if added is None else out + added[part]

    q = heads(project(rows.take(h, 1), slice(0, width)), 1, attn.num_heads)[0]
    k, v = heads(project(h, slice(width, 3 * width)), 2, attn.num_heads)
    return q, k, v


def vit_qkv(attn: nn.Module, h: torch.Tensor, rows: Rows) -> QKV:
    """timm's ``Attention`` (ViT, DeiT, CLIP, SigLIP, DINOv2)."""
    q, k, v = fused_qkv(attn, h, rows)
    return attn.q_norm(q), attn.k_norm(k), v, None


def eva_qkv(attn: nn.Module, h: torch.Tensor, rows: Rows, rope: torch.Tensor | None = None) -> QKV:
    """timm's ``EvaAttention`` and ``AttentionRope``: fused or separate projections, a rotary
    embedding of every row after the prefix, grouped keys and values. The kept rows after the
    prefix are the sequence's last rows (the patches), so their rotations are the rotary
    embedding's last rows."""
    from timm.layers import apply_rot_embed_cat

    if attn.qkv is not None:
        q, k, v = fused_qkv(attn, h, rows)
    else:
        kv_heads = getattr(attn, "num_kv_heads", attn.num_heads)
        q = heads(attn.q_proj(rows.take(h, 1)), 1, attn.num_heads)[0]
        k, v = heads(attn.k_proj(h), 1, kv_heads)[0], heads(attn.v_proj(h), 1, kv_heads)[0]
    q, k = attn.q_norm(q), attn.k_norm(k)
    if rope is not None:
        prefix, half = attn.num_prefix_tokens, getattr(attn, "rotate_half", False)
        k = torch.cat([k[:, :, :prefix], apply_rot_embed_cat(k[:, :, prefix:], rope, half=half)], dim=2).type_as(v)
        rotated = q.shape[2] - prefix
        if rotated > 0:
            rope = rope.narrow(-2, rope.shape[-2] - rotated, rotated)
            q = torch.cat([q[:, :, :prefix], apply_rot_embed_cat(q[:, :, prefix:], rope, half=half)], dim=2).type_as(v)
    groups = getattr(attn, "num_kv_groups", 1)
    if groups > 1:
        k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    return q, k, v, None


def beit_qkv(attn: nn.Module, h: torch.Tensor, rows: Rows, shared_rel_pos_bias: torch.Tensor | None = None) -> QKV:
    """timm's BEiT ``Attention``: the relative position bias (the block's own, plus the shared one)
    is the attention's additive bias, kept at the query rows."""
    q, k, v = fused_qkv(attn, h, rows)
    bias = attn._get_rel_pos_bias() if attn.relative_position_bias_table is not None else None
    if shared_rel_pos_bias is not None:
        bias = shared_rel_pos_bias if bias is None else bias + shared_rel_pos_bias
    return q, k, v, None if bias is None else rows.take(bias, -2)


def attend(attn: nn.Module, h: torch.Tensor, rows: Rows, qkv: QKV) -> torch.Tensor:
    """The attention's output at ``rows``: their queries against every row's keys and values,
    then the attention's output norm, gate and projection (timm's fused or explicit softmax, as
    the module is set)."""
    q, k, v, bias = qkv
    if attn.fused_attn:
        dropout = attn.attn_drop.p if attn.training else 0.0
        x = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout)
    else:
        scores = (q * attn.scale) @ k.transpose(-2, -1)
        x = attn.attn_drop((scores if bias is None else scores + bias).softmax(dim=-1)) @ v
    x = x.transpose(1, 2).flatten(2)
    x = getattr(attn, "norm", nn.Identity())(x)
    gate = getattr(attn, "gate", None)
    if gate is not None:
        x = x * gate(rows.take(h, 1)).sigmoid()
    return attn.proj_drop(attn.proj(x))


def lean_block(rows: Rows, block: nn.Module, kind: BlockKind, stochastic: bool, x: torch.Tensor, *args: Any,
               **kwargs: Any) -> torch.Tensor:
    """``block``'s output at ``rows`` (it replaces the block's ``forward`` on the instance)."""
    passed = {name: value for name, value in kwargs.items() if name in kind.passes}
    unknown = any(value is not None and value is not False for name, value in kwargs.items() if name not in passed)
    attn = block.attn
    hooked = attn._forward_hooks or attn._forward_pre_hooks  # a hook on the attention sees timm's own call
    if args or unknown or hooked or (stochastic and block.training):  # timm's own forward, then the same rows
        return rows.take(type(block).forward(block, x, *args, **kwargs), 1)
    return block_output(rows, block, kind, x, passed)


def with_key_values(qkv: QKV, keys: torch.Tensor, values: torch.Tensor) -> QKV:
    """The attention's queries, keys and values with (B, heads, p, head_dim) ``keys`` and
    ``values`` appended after every row's (queried by every row, queries of none), and the
    additive bias padded with zero bias for them."""
    q, k, v, bias = qkv
    k, v = torch.cat([k, keys.to(k.dtype)], dim=2), torch.cat([v, values.to(v.dtype)], dim=2)
    return q, k, v, None if bias is None else F.pad(bias, (0, keys.shape[2]))


def block_output(rows: Rows, block: nn.Module, kind: BlockKind, x: torch.Tensor, passed: dict[str, Any],
                 key_values: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
    """The block's math at ``rows``, composed from its own modules; ``key_values`` (keys and
    values of shape (B, heads, p, head_dim)) join its attention's keys and values."""
    attn = block.attn
    h = block.norm1(x)
    qkv = kind.qkv(attn, h, rows, **passed)
    attended = attend(attn, h, rows, qkv if key_values is None else with_key_values(qkv, *key_values))
    x = rows.take(x, 1)
    if kind.gamma:
        if block.gamma_1 is not None:
            attended = block.gamma_1 * attended
        x = x + block.drop_path1(attended)
        mlp = block.mlp(block.norm2(x))
        return x + block.drop_path2(mlp if block.gamma_2 is None else block.gamma_2 * mlp)
    x = x + block.drop_path1(block.ls1(attended))
    return x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))


LEAN_BLOCKS: dict[tuple[str, str], tuple[tuple[str, ...], BlockKind]] = {
    ("timm.models.vision_transformer", "Block"): (("timm.layers.attention.Attention",),
                                                  BlockKind(vit_qkv, (), gamma=False)),
    ("timm.models.eva", "EvaBlock"): (("timm.models.eva.EvaAttention", "timm.layers.attention.AttentionRope"),
                                      BlockKind(eva_qkv, ("rope",), gamma=True)),
    ("timm.models.beit", "Block"): (("timm.models.beit.Attention",), BlockKind(beit_qkv, ("shared_rel_pos_bias",),
                                                                             gamma=True)),
}
"""The timm blocks with a lean forward: (module, class) → the attention classes it may hold and
how it computes."""


@cache
def timm_class(path: str) -> type:
    """The class at ``module.Name``, imported once (timm is imported only when a model is attached)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def block_kind(block: nn.Module) -> BlockKind | None:
    """How ``block`` computes on the lean path, matched by its exact class and its attention's.

    Args:
        block: A transformer block of a timm model.

    Returns:
        Its entry of [`LEAN_BLOCKS`][vprompt.families.lean.LEAN_BLOCKS], or None when timm's own
        forward must run.
    """
    for (module, name), (attentions, kind) in LEAN_BLOCKS.items():
        if type(block) is timm_class(f"{module}.{name}"):
            attn = getattr(block, "attn", None)
            return kind if any(type(attn) is timm_class(path) for path in attentions) else None
    return None


def stochastic(block: nn.Module) -> bool:
    """Whether ``block`` draws random numbers in training (dropout, stochastic depth): the lean
    forward would draw other ones, so a training block of this kind runs timm's forward."""
    drop_path = timm_class("timm.layers.DropPath")
    return any((isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0)
               or (isinstance(module, drop_path) and module.drop_prob > 0) for module in block.modules())
