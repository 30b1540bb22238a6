"""Frequency-restricted multi-head self-attention (FRITO) and its executors.

:class:`FrequencyAttention` is the attention of every transformer block: queries, keys and values from
the tokens, attention restricted by an :class:`~models.patterns.AttentionPattern` over a
:class:`~models.patterns.TokenLayout`, an output projection. How the restriction is computed is the
executor's business; executors share one signature, ``executor(q, k, v, pattern, layout, dropout_p) ->
out`` with q, k, v of shape (batch, heads, tokens, head_dim). :func:`masked_attention` is the reference;
:func:`models.sparse_attention.sparse_attention` computes every restricted form without N x N tensors.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from models.patterns import AttentionPattern, TokenLayout
from models.sparse_attention import sparse_attention

ATTENTION_IMPLS = ("auto", "sparse", "masked")


Executor = Callable[[Tensor, Tensor, Tensor, AttentionPattern, TokenLayout, float], Tensor]


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: AttentionPattern, layout: TokenLayout, dropout_p: float = 0.0
) -> Tensor:
    """Reference executor: scaled dot-product attention with the pattern's boolean token mask."""
    mask = pattern.token_mask(layout).to(q.device) if pattern.is_restricted else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def select_executor(pattern: AttentionPattern, attention_impl: str = "auto") -> Executor:
    """The executor for a pattern: "masked" forces the reference; "auto"/"sparse" compute every restricted
    form block-sparsely (:func:`models.sparse_attention.sparse_attention`); unrestricted attention is one
    plain fused call either way."""
    if attention_impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {attention_impl!r}")
    if attention_impl == "masked" or not pattern.is_restricted:
        return masked_attention
    return sparse_attention


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
            attention_impl: "auto", "sparse" or "masked" (reference) execution of the pattern.
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
