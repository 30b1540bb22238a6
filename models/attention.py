"""Frequency-restricted multi-head self-attention (FRITO) and its executors.

:class:`FrequencyAttention` is the attention of every transformer block: queries, keys and values from
the tokens, attention restricted by an :class:`~models.patterns.AttentionPattern` over a
:class:`~models.patterns.TokenLayout`, an output projection. How the restriction is computed is the
executor's business; executors share one signature, ``executor(q, k, v, pattern, layout, dropout_p) ->
out`` with q, k, v of shape (batch, heads, tokens, head_dim). :func:`masked_attention` is the reference;
:func:`models.sparse_attention.sparse_attention` computes every restricted form without N x N tensors;
:func:`models.flex_attention.flex_attention_executor` runs them on PyTorch's FlexAttention.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.flex_attention import flex_attention_executor
from models.patterns import AttentionPattern, TokenLayout
from models.sparse_attention import blockwise_attention, sparse_attention
from models.sparse_choice import DENSE, choose_execution

Executor = Callable[[Tensor, Tensor, Tensor, AttentionPattern, TokenLayout, float], Tensor]


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: AttentionPattern, layout: TokenLayout, dropout_p: float = 0.0
) -> Tensor:
    """Reference executor: scaled dot-product attention with the pattern's token mask (as an additive mask of
    0 and -inf, which PyTorch's CPU kernels take about 1.4x faster than the equal boolean one)."""
    mask = additive_mask(pattern, layout, q.device, q.dtype) if pattern.is_restricted else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


@functools.lru_cache(maxsize=16)
def additive_mask(pattern: AttentionPattern, layout: TokenLayout, device: torch.device, dtype: torch.dtype) -> Tensor:
    """(N, N) 0 where the pattern lets a query attend a key, -inf elsewhere; cached per layout, device and dtype."""
    allowed = pattern.token_mask(layout)
    return torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, float("-inf")).to(device)


def auto_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: AttentionPattern, layout: TokenLayout, dropout_p: float = 0.0
) -> Tensor:
    """The executor with the lowest modelled time for this input (models.sparse_choice): the dense masked
    call where the blocks cannot pay (few tokens, wide bands), a block kernel elsewhere."""
    execution = choose_execution(pattern, layout, q, dropout_p)
    if execution.kernel == DENSE:
        return masked_attention(q, k, v, pattern, layout, dropout_p)
    return blockwise_attention(q, k, v, pattern, layout, dropout_p, execution)


# attention_impl -> the executor of the restricted forms
RESTRICTED_EXECUTORS: dict[str, Executor] = {
    "auto": auto_attention,
    "sparse": sparse_attention,  # block kernels only: never a tokens x tokens tensor
    "masked": masked_attention,  # the reference
    "flex": flex_attention_executor,  # FlexAttention; not yet measured on a GPU, so never "auto"'s choice
}
ATTENTION_IMPLS = tuple(RESTRICTED_EXECUTORS)


def select_executor(pattern: AttentionPattern, attention_impl: str = "auto") -> Executor:
    """The executor for a pattern: the restricted forms run on ``RESTRICTED_EXECUTORS[attention_impl]``;
    unrestricted attention is one plain fused call whatever attention_impl says."""
    check_attention_impl(attention_impl)
    if not pattern.is_restricted:
        return masked_attention
    return RESTRICTED_EXECUTORS[attention_impl]


def check_attention_impl(attention_impl: str) -> None:
    """ValueError naming the accepted values if ``attention_impl`` is not one of ATTENTION_IMPLS."""
    if attention_impl not in RESTRICTED_EXECUTORS:
        raise ValueError(
            f"attention_impl (models.net.attention_impl) must be one of {', '.join(map(repr, ATTENTION_IMPLS))}, "
            f"got {attention_impl!r}"
        )


class FrequencyAttention(nn.Module):
    """Multi-head self-attention restricted along frequency by an :class:`AttentionPattern`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        pattern: AttentionPattern,
        attention_impl: str = "auto",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        """
        Args:
            dim: token embedding width.
            num_heads: attention heads; dim must divide evenly.
            pattern: which frequency rows each patch token may attend.
            attention_impl: execution of the pattern, a name in ATTENTION_IMPLS: "auto", "sparse",
                "masked" (the reference) or "flex" (FlexAttention).
            attn_drop: dropout on attention weights while training.
            proj_drop: dropout after the output projection.
        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.pattern = pattern
        self.executor = select_executor(pattern, attention_impl)
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, layout: TokenLayout) -> Tensor:
        batch, n_tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, n_tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.attn_drop if self.training else 0.0
        out = self.executor(q, k, v, self.pattern, layout, dropout_p)
        out = out.transpose(1, 2).reshape(batch, n_tokens, dim)
        return self.proj_drop(self.proj(out))
