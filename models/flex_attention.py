"""Frequency-restricted attention on PyTorch's FlexAttention.

FlexAttention (:mod:`torch.nn.attention.flex_attention`) computes attention tile by tile: a *block mask*
lists, for every tile of ``BLOCK_SIZE`` queries, the tiles of keys that hold at least one allowed pair,
and marks those whose pairs are all allowed ("full"); a *mask_mod* decides single pairs inside the other
("partial") tiles. Tiles without an allowed pair are never computed, and no tokens x tokens tensor is
built. Uneven clusters of rows, bands and patchout (which only changes how many tokens each frequency row
keeps) cost nothing extra: the tiles follow the sequence, not the rows.

Here the mask_mod reads two small tensors: the code of each token (its frequency row + 1; 0 for the
global cls/dist tokens) and the pattern's table of allowed (query code, key code) pairs, taken from
:meth:`AttentionPattern.allowed_rows`, with the global code allowed in both directions. The block mask is
derived from the same table without visiting token pairs: a tile of queries and a tile of keys hold an
allowed pair when some row present in the first may attend some row present in the second, and are full
when no present pair is forbidden (and neither tile runs past the sequence end).

On CUDA the executor calls ``torch.compile(flex_attention)``, compiled once per process and shape family
(the first call of each compiles Triton kernels); elsewhere FlexAttention's eager mode, which materialises
the scores and, in torch 2.14, has no backward on the CPU: the CPU is for checking results (use
``attention_impl="sparse"`` to train there). FlexAttention has no attention dropout; the executor refuses
it. Unrestricted attention (``rf_norm_t=""``) is one plain ``scaled_dot_product_attention`` call.

A model runs this executor when built with ``attention_impl="flex"`` (``models.net.attention_impl=flex``);
``"auto"`` does not choose it (see :func:`models.sparse_choice.choose_execution`).
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from models.patterns import AttentionPattern, TokenLayout

BLOCK_SIZE = 128  # FlexAttention's default tile: queries and keys per block-mask entry
_CACHED_BLOCK_MASKS = 64  # (pattern, layout, device, block size) block masks kept; patchout makes a new layout per step


def flex_attention_executor(
    q: Tensor, k: Tensor, v: Tensor, pattern: AttentionPattern, layout: TokenLayout, dropout_p: float = 0.0
) -> Tensor:
    """Executor running a pattern on FlexAttention: equal to the masked reference, without N x N tensors on CUDA.

    q, k, v: (batch, heads, tokens, head_dim) in the token order of ``layout``; returns the same shape.
    """
    if dropout_p > 0:
        raise ValueError(
            f"attention dropout {dropout_p} was requested, but FlexAttention has no attention dropout: "
            "train with attn_drop_rate=0, or use attention_impl='sparse' (its sdpa blocks apply dropout)"
        )
    if q.shape[2] != layout.n_tokens:
        raise ValueError(f"q has {q.shape[2]} tokens but the layout describes {layout.n_tokens}")
    if not pattern.is_restricted:
        return F.scaled_dot_product_attention(q, k, v)
    if q.device.type == "cpu" and any(t.requires_grad for t in (q, k, v)):
        if torch.is_grad_enabled():
            raise NotImplementedError(
                "FlexAttention has no backward pass on the CPU (torch 2.14): train on the CPU with "
                "attention_impl='sparse', or run the flex executor without gradients (torch.no_grad())"
            )
        q, k, v = q.detach(), k.detach(), v.detach()  # FlexAttention refuses CPU inputs that require grad
    block_mask = flex_block_mask(pattern, layout, q.device)
    attend = _compiled_flex_attention() if q.device.type == "cuda" else flex_attention
    return attend(q, k, v, block_mask=block_mask)


def flex_block_mask(
    pattern: AttentionPattern, layout: TokenLayout, device: torch.device | str, block_size: int = BLOCK_SIZE
) -> BlockMask:
    """The block mask of ``pattern`` over ``layout`` on ``device``, built once and cached (layouts are equal
    when their global tokens and tokens per row are, so equal layouts of different steps share one mask)."""
    if block_size < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    return _cached_block_mask(pattern, layout, torch.device(device), block_size)


@functools.lru_cache(maxsize=_CACHED_BLOCK_MASKS)
def _cached_block_mask(
    pattern: AttentionPattern, layout: TokenLayout, device: torch.device, block_size: int
) -> BlockMask:
    codes = layout.token_rows + 1
    allowed = _allowed_codes(pattern, layout.n_rows)
    partial, full = _tile_pairs(codes, allowed, block_size)
    kv_num_blocks, kv_indices = _ordered(partial)
    full_kv_num_blocks, full_kv_indices = _ordered(full)
    return BlockMask.from_kv_blocks(
        kv_num_blocks.to(device),
        kv_indices.to(device),
        full_kv_num_blocks.to(device),
        full_kv_indices.to(device),
        BLOCK_SIZE=block_size,
        mask_mod=_code_mask_mod(codes.to(device, torch.int32), allowed.flatten().to(device), layout.n_rows + 1),
        seq_lengths=(layout.n_tokens, layout.n_tokens),
    )


def _allowed_codes(pattern: AttentionPattern, n_rows: int) -> Tensor:
    """Bool (n_rows + 1, n_rows + 1): may a token of code i (0: global, r + 1: row r) attend one of code j."""
    rows = torch.arange(n_rows)
    allowed = torch.ones(n_rows + 1, n_rows + 1, dtype=torch.bool)
    allowed[1:, 1:] = pattern.allowed_rows(rows, rows, n_rows)
    return allowed


def _code_mask_mod(codes: Tensor, allowed: Tensor, n_codes: int):
    """mask_mod of one token pair: the allowed-pair table (flattened) at (code of query, code of key).

    Every pattern and layout gets a closure of this one function over tensors, so the compiled kernel is
    reused (tensors of equal shape) rather than compiled again for each.
    """

    def mask_mod(batch: Tensor, head: Tensor, query: Tensor, key: Tensor) -> Tensor:
        return allowed[codes[query] * n_codes + codes[key]]

    return mask_mod


def _tile_pairs(codes: Tensor, allowed: Tensor, block_size: int) -> tuple[Tensor, Tensor]:
    """Bool (query tiles, key tiles) of partial and of full tiles, from which codes each tile holds."""
    n_tokens = codes.numel()
    n_tiles = -(-n_tokens // block_size)
    present = torch.zeros(n_tiles, allowed.shape[0])
    present[torch.arange(n_tokens) // block_size, codes] = 1.0
    some_allowed = present @ allowed.float() @ present.T > 0
    some_forbidden = present @ (~allowed).float() @ present.T > 0
    whole = torch.arange(n_tiles) < n_tokens // block_size  # tiles not running past the sequence end
    full = some_allowed & ~some_forbidden & whole[:, None] & whole[None, :]
    return some_allowed & ~full, full


def _ordered(tiles: Tensor) -> tuple[Tensor, Tensor]:
    """(count, indices) of the key tiles listed for each query tile, as BlockMask stores them: shape
    (1, 1, query tiles) and (1, 1, query tiles, key tiles), the listed tiles first, in ascending order."""
    counts = tiles.sum(-1, dtype=torch.int32)
    indices = torch.argsort(tiles.to(torch.int8), dim=-1, descending=True, stable=True).to(torch.int32)
    return counts[None, None], indices[None, None]


@functools.cache
def _compiled_flex_attention():
    """``torch.compile(flex_attention)``, created once: the fused, block-sparse kernels."""
    return torch.compile(flex_attention)
