"""Sparse executors for the frequency-restricted forms of attention.

A restricted form is computed as a few batched attention calls over *blocks*. A block is a run of query
tokens (one cluster of frequency rows, or a group of neighbouring rows of a band) together with the one
contiguous run of tokens those rows may attend, plus the global tokens. Blocks of one shape are gathered
into a single call, blocks folded into the batch dimension; the few global queries attend every token in
one more small call. No tensor of size tokens x tokens is built: memory grows with the tokens times the
block length.

Patchout only changes how many tokens each frequency row keeps: blocks are cut from the kept tokens by
their original rows (:attr:`TokenLayout.row_offsets`), so the result stays exact. Blocks of unequal size
run as a few calls of equal shape, or, when there are many sizes, padded to one shape with a key mask.

How a form runs on a given shape is an :class:`Execution`: the block kernel (fused
``scaled_dot_product_attention``, or explicit matmul-softmax-matmul, which wins for blocks of about one
frequency row on a CPU) and, for band forms, how many rows of queries share one block. Grouping rows lets
neighbouring rows share one key window and one call, at the price of the keys outside each row's band
inside the window (masked). :func:`choose_execution` picks both from a cost model whose constants were
measured by ``benchmarks/attention.py``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor

if TYPE_CHECKING:
    from models.attention import AttentionPattern, TokenLayout


@dataclass(frozen=True)
class Execution:
    """How a restricted form runs on one shape.

    kernel: a name in BLOCK_KERNELS.
    group_rows: frequency rows of queries per block for band forms (cluster forms use their clusters).
    """

    kernel: str = "sdpa"
    group_rows: int = 1


def sparse_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: AttentionPattern, layout: TokenLayout, dropout_p: float = 0.0
) -> Tensor:
    """Executor for every restricted form: equal to the masked reference, without N x N tensors.

    q, k, v: (batch, heads, tokens, head_dim) in the token order of ``layout``; returns the same shape.
    """
    execution = choose_execution(pattern, layout, q)
    return blockwise_attention(q, k, v, pattern, layout, dropout_p, execution)


def blockwise_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pattern: AttentionPattern,
    layout: TokenLayout,
    dropout_p: float = 0.0,
    execution: Execution = Execution(),
) -> Tensor:
    """A restricted form computed block by block, as ``execution`` says (see :func:`sparse_attention`)."""
    if not pattern.is_restricted:
        raise ValueError("blockwise_attention computes restricted forms; use masked_attention for rf_norm_t=''")
    if q.shape[2] != layout.n_tokens:
        raise ValueError(f"q has {q.shape[2]} tokens but the layout describes {layout.n_tokens}")
    if execution.kernel not in BLOCK_KERNELS:
        raise ValueError(f"unknown block kernel {execution.kernel!r}; expected one of {sorted(BLOCK_KERNELS)}")
    group_rows = execution.group_rows if pattern.kind == "band" else 1
    plan = _plan(pattern, layout.n_global, layout.row_counts, group_rows, q.device)
    kernel = BLOCK_KERNELS[execution.kernel]
    n_global = layout.n_global
    parts = []
    if n_global:
        global_queries = F.scaled_dot_product_attention(q[:, :, :n_global], k, v, dropout_p=dropout_p)
        parts.append(global_queries.transpose(1, 2))
    parts.extend(kernel(q, k, v, call, dropout_p) for call in plan.calls)
    out = torch.cat(parts, dim=1)
    if plan.order is not None:
        out = out.index_select(1, plan.order)
    return out.transpose(1, 2)


def choose_execution(pattern: AttentionPattern, layout: TokenLayout, q: Tensor) -> Execution:
    """The execution the cost model expects to be fastest for this pattern, layout and input."""
    return Execution()


@dataclass(frozen=True)
class _Call:
    """Blocks of one shape attended in one batched call.

    query_index: (n_blocks * block_queries,) token of each query slot, block after block.
    key_index: (n_blocks * block_keys,) token of each key slot (the global tokens first in every block).
    mask: bool (n_blocks, 1, block_queries, block_keys), True where a query slot may attend a key slot;
        None when every query of a block may attend every key of the block.
    """

    n_blocks: int
    block_queries: int
    block_keys: int
    query_index: Tensor
    key_index: Tensor
    mask: Tensor | None


@dataclass(frozen=True)
class _Plan:
    """The calls of one pattern on one layout; ``order`` maps their concatenated outputs to token order."""

    calls: tuple[_Call, ...]
    order: Tensor | None


@dataclass(frozen=True)
class _Block:
    """Query tokens [query_start, query_end) attend key tokens [key_start, key_end) and the global tokens."""

    query_start: int
    query_end: int
    key_start: int
    key_end: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.query_end - self.query_start, self.key_end - self.key_start


_MAX_CALLS = 4


@functools.lru_cache(maxsize=64)
def _plan(
    pattern: AttentionPattern, n_global: int, row_counts: tuple[int, ...], group_rows: int, device: torch.device
) -> _Plan:
    n_rows = len(row_counts)
    offsets = [n_global]
    for count in row_counts:
        offsets.append(offsets[-1] + count)
    if pattern.kind == "band":
        blocks = _band_blocks(pattern.size, offsets, group_rows)
    else:
        blocks = [
            _Block(offsets[first], offsets[end], offsets[first], offsets[end])
            for first, end in pattern.row_clusters(n_rows)
            if offsets[first] < offsets[end]
        ]
    counts = torch.tensor(row_counts)
    token_rows = torch.cat([torch.full((n_global,), -1), torch.arange(n_rows).repeat_interleave(counts)])
    band_width = pattern.size if pattern.kind == "band" and group_rows > 1 else None
    calls, query_slots = [], [torch.arange(n_global)]
    for group in _partition(blocks):
        call, slots = _make_call(group, n_global, token_rows, band_width, device)
        calls.append(call)
        query_slots.append(slots)
    slots = torch.cat(query_slots)
    n_tokens = offsets[-1]
    if torch.equal(slots, torch.arange(n_tokens)):
        return _Plan(tuple(calls), None)
    position = torch.empty(n_tokens, dtype=torch.long)
    kept = slots >= 0
    position[slots[kept]] = torch.arange(slots.numel())[kept]
    return _Plan(tuple(calls), position.to(device))


def _band_blocks(band_width: int, offsets: list[int], group_rows: int) -> list[_Block]:
    """One block per group of ``group_rows`` rows; its keys are the union of the rows' bands."""
    n_rows = len(offsets) - 1
    blocks = []
    for first in range(0, n_rows, group_rows):
        end = min(first + group_rows, n_rows)
        if offsets[first] == offsets[end]:
            continue
        key_first, key_end = max(0, first - band_width + 1), min(n_rows, end + band_width - 1)
        blocks.append(_Block(offsets[first], offsets[end], offsets[key_first], offsets[key_end]))
    return blocks


def _partition(blocks: list[_Block]) -> list[list[_Block]]:
    """Blocks grouped into calls of one shape each: runs of consecutive blocks, else blocks of equal shape
    anywhere, else (many shapes) all blocks in one call padded to the largest shape."""
    runs: list[list[_Block]] = []
    for block in blocks:
        if runs and runs[-1][0].shape == block.shape:
            runs[-1].append(block)
        else:
            runs.append([block])
    if len(runs) <= _MAX_CALLS:
        return runs
    by_shape: dict[tuple[int, int], list[_Block]] = {}
    for block in blocks:
        by_shape.setdefault(block.shape, []).append(block)
    if len(by_shape) <= _MAX_CALLS:
        return list(by_shape.values())
    return [blocks]


def _make_call(
    blocks: list[_Block], n_global: int, token_rows: Tensor, band_width: int | None, device: torch.device
) -> tuple[_Call, Tensor]:
    """The call for ``blocks`` and the token of each of its query slots (-1 for padding)."""
    block_queries = max(block.shape[0] for block in blocks)
    block_keys = n_global + max(block.shape[1] for block in blocks)
    global_keys = list(range(n_global))
    query_slots, key_slots = [], []
    for block in blocks:
        queries = list(range(block.query_start, block.query_end))
        keys = global_keys + list(range(block.key_start, block.key_end))
        query_slots.append(queries + [-1] * (block_queries - len(queries)))
        key_slots.append(keys + [-1] * (block_keys - len(keys)))
    query_slots_t = torch.tensor(query_slots, dtype=torch.long)
    key_slots_t = torch.tensor(key_slots, dtype=torch.long)
    mask = None
    if band_width is not None or bool((key_slots_t < 0).any()):
        mask = (key_slots_t >= 0)[:, None, :].expand(-1, block_queries, -1)
        if band_width is not None:
            # padding query slots see every key of their block, so that no row of scores is all -inf
            query_rows = token_rows[query_slots_t.clamp(min=0)][:, :, None]
            key_rows = token_rows[key_slots_t.clamp(min=0)][:, None, :]
            padding = (query_slots_t < 0)[:, :, None]
            mask = mask & (((query_rows - key_rows).abs() < band_width) | (key_rows < 0) | padding)
        mask = mask[:, None].to(device)
    call = _Call(
        n_blocks=len(blocks),
        block_queries=block_queries,
        block_keys=block_keys,
        query_index=query_slots_t.clamp(min=0).flatten().to(device),
        key_index=key_slots_t.clamp(min=0).flatten().to(device),
        mask=mask,
    )
    return call, query_slots_t.flatten()


def _sdpa_blocks(q: Tensor, k: Tensor, v: Tensor, call: _Call, dropout_p: float) -> Tensor:
    """Fused attention, blocks as the batch and (batch, head) pairs as heads; -> (batch, slots, heads, dim)."""
    batch, heads, _, head_dim = q.shape

    def gather(x: Tensor, index: Tensor, block_len: int) -> Tensor:
        # token-major slots (slot, batch, head, dim), the fused kernel's own memory order
        slots = x.permute(2, 0, 1, 3).index_select(0, index)
        return slots.view(call.n_blocks, block_len, batch * heads, head_dim).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        gather(q, call.query_index, call.block_queries),
        gather(k, call.key_index, call.block_keys),
        gather(v, call.key_index, call.block_keys),
        attn_mask=call.mask,
        dropout_p=dropout_p,
    )
    out = out.transpose(1, 2).reshape(call.n_blocks * call.block_queries, batch, heads, head_dim)
    return out.permute(1, 0, 2, 3)


def _matmul_blocks(q: Tensor, k: Tensor, v: Tensor, call: _Call, dropout_p: float) -> Tensor:
    """Explicit scores, softmax and weighted sum, a cache-sized chunk of blocks at a time.

    Returns (batch, slots, heads, dim).
    """
    batch, heads, _, head_dim = q.shape
    scale = 1.0 / math.sqrt(head_dim)

    def gather(x: Tensor, index: Tensor, block_len: int) -> Tensor:
        return x.index_select(2, index).view(batch * heads * call.n_blocks, block_len, head_dim)

    queries = gather(q, call.query_index, call.block_queries)
    keys = gather(k, call.key_index, call.block_keys)
    values = gather(v, call.key_index, call.block_keys)
    mask = None if call.mask is None else call.mask[:, 0]
    chunk = max(1, _CHUNK_SCORES // (call.block_queries * call.block_keys))
    if mask is not None:
        chunk = max(1, chunk // call.n_blocks) * call.n_blocks
    outputs = []
    for start in range(0, queries.shape[0], chunk):
        part = slice(start, start + chunk)
        scores = torch.baddbmm(
            queries.new_empty(()), queries[part], keys[part].transpose(1, 2), beta=0.0, alpha=scale
        )
        if mask is not None:
            scores = scores.view(-1, *mask.shape).masked_fill(~mask, float("-inf")).flatten(0, 1)
        weights = scores.softmax(dim=-1)
        if dropout_p > 0:
            weights = F.dropout(weights, dropout_p)
        outputs.append(torch.bmm(weights, values[part]))
    out = torch.cat(outputs) if len(outputs) > 1 else outputs[0]
    return out.view(batch, heads, call.n_blocks * call.block_queries, head_dim).transpose(1, 2)


# scores per chunk of the matmul kernel: 1 MiB of float32, about one core's L2 cache
_CHUNK_SCORES = 1 << 18

BlockKernel = Callable[[Tensor, Tensor, Tensor, _Call, float], Tensor]
BLOCK_KERNELS: dict[str, BlockKernel] = {"sdpa": _sdpa_blocks, "matmul": _matmul_blocks}
