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

How a form runs on a given input is an :class:`Execution`: the block kernel and, for band forms, how many
rows of queries share one block (neighbouring rows then share one key window and one call, at the price
of the keys inside the window but outside a row's band, which are masked). The kernels
(:data:`BLOCK_KERNELS`):

- ``matmul``: explicit scores, softmax (in place) and weighted sum over chunks of about 3 MiB of scores,
  with a backward that recomputes each chunk's probabilities instead of storing them; the fastest for
  cluster forms on a CPU in float32 (benchmarks/README.md); no attention dropout;
- ``matmul_windows``: the same on each block's key window read where it lies instead of gathered
  (windows of a band overlap: gathering copies each key several times), outputs and gradients written
  in token order; the fastest for band forms on a CPU in float32;
- ``fused_cpu``: PyTorch's fused CPU attention kernel, with a backward written here that gathers each
  block again instead of keeping gathered copies, and adds each block's gradient straight into one
  gradient per input (CPU only, no attention dropout); used for 16-bit floats on a CPU;
- ``sdpa``: ``scaled_dot_product_attention`` per call with autograd through the gathers; any device,
  attention dropout included.

:func:`choose_execution` picks one from measurements made with ``benchmarks/attention.py``.
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
    """How a restricted form runs on one input.

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
    execution = choose_execution(pattern, layout, q, dropout_p)
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
    if execution.group_rows < 1:
        raise ValueError(f"group_rows must be >= 1, got {execution.group_rows}")
    group_rows = execution.group_rows if pattern.kind == "band" else 1
    plan = _plan(pattern, layout.n_global, layout.row_counts, group_rows, q.device)
    return BLOCK_KERNELS[execution.kernel](q, k, v, plan, dropout_p)


def choose_execution(pattern: AttentionPattern, layout: TokenLayout, q: Tensor, dropout_p: float = 0.0) -> Execution:
    """The execution measured fastest for this pattern, layout and input (benchmarks/attention.py).

    On a CPU in float32/64 without attention dropout: ``matmul`` for cluster forms, unless their blocks
    reach 768 queries (long clips), where the fused kernel's 256-row tiles make ``fused_cpu`` faster;
    ``matmul_windows`` with one row per block for band forms (their overlapping windows read in place;
    grouping rows costs masked work). In 16-bit floats on a CPU: ``fused_cpu``, which computes them
    natively. Attention dropout, other devices and tracing (TorchScript and ONNX export, whose tracers
    record functional operations faithfully but not the in-place and ``out=`` writes of the matmul
    kernels): ``sdpa``. With ``fused_cpu`` and ``sdpa``, band forms take the number of rows per block with
    the lowest modelled cost (:func:`_modelled_cost`).
    """
    portable = dropout_p > 0 or torch.jit.is_tracing()
    return _choose(pattern, layout.n_global, layout.row_counts, q.device.type, q.dtype, portable)


@functools.lru_cache(maxsize=256)
def _choose(
    pattern: AttentionPattern,
    n_global: int,
    row_counts: tuple[int, ...],
    device_type: str,
    dtype: torch.dtype,
    portable: bool,
) -> Execution:
    offsets = _offsets(n_global, row_counts)
    fused = "fused_cpu" if hasattr(torch.ops.aten, _FUSED_CPU) else "sdpa"
    if device_type != "cpu" or portable:
        kernel = "sdpa"
    elif dtype not in (torch.float32, torch.float64):
        kernel = fused
    elif pattern.kind == "band":
        return Execution("matmul_windows")
    else:
        longest = max((block.shape[0] for block in _cluster_blocks(pattern, offsets)), default=0)
        return Execution(fused if longest >= _FUSED_LONG_BLOCK else "matmul")
    if pattern.kind != "band":
        return Execution(kernel)
    costs = []
    for group_rows in range(1, _MAX_GROUP_ROWS + 1):
        blocks = _band_blocks(pattern.size, offsets, group_rows)
        costs.append((_modelled_cost(blocks, n_global, masked=group_rows > 1), Execution(kernel, group_rows)))
    # within the model's accuracy, fewer rows per block: less masked work and smaller masks
    lowest = min(cost for cost, _ in costs)
    return next(execution for cost, execution in costs if cost <= lowest * _COST_TOLERANCE)


def _modelled_cost(blocks: list[_Block], n_global: int, masked: bool) -> float:
    """Time of the block calls on the fused kernel, in units of one (query, key) pair at its best efficiency.

    Constants measured with benchmarks/attention.py (PaSST-S, 64-dimensional heads, 2-core CPU): the
    fused kernel reaches 71 %, 92 % and 100 % of its efficiency on long sequences with its query tiles of
    32, 64 and 256 rows, the unused rows of a last, partial tile costing half as much as used ones; a key
    mask costs 5 %; gathering one token of queries, keys or values costs as much as 9 pairs. Measured
    times scatter by about 5 % around the model.
    """
    cost = 0.0
    for block in blocks:
        block_queries, block_keys = block.shape[0], block.shape[1] + n_global
        tile, tile_efficiency = next((tile, eff) for below, tile, eff in _FUSED_TILES if block_queries < below)
        unused_rows = math.ceil(block_queries / tile) * tile - block_queries
        efficiency = tile_efficiency * block_queries / (block_queries + unused_rows / 2)
        cost += block_queries * block_keys / efficiency * (_MASK_COST if masked else 1.0)
        cost += _GATHER_COST * (block_queries + 2 * block_keys)
    return cost


# the fused CPU kernel's query tiles: (queries below which it is used, tile rows, relative efficiency)
_FUSED_TILES = ((192, 32, 0.71), (768, 64, 0.92), (math.inf, 256, 1.0))
_MASK_COST = 1.05
_GATHER_COST = 9.0
_FUSED_LONG_BLOCK = _FUSED_TILES[1][0]  # queries from which the fused kernel uses its 256-row tiles
_MAX_GROUP_ROWS = 4
_COST_TOLERANCE = 1.03


@dataclass(frozen=True)
class _Call:
    """Blocks of one shape attended in one batched call.

    query_index: (n_blocks * block_queries,) token of each query slot, block after block (padding: 0).
    key_index: (n_blocks * block_keys,) token of each key slot, the global tokens first in every block
        (padding: 0).
    mask: bool (n_blocks, 1, block_queries, block_keys), True where a query slot may attend a key slot;
        None when every query of a block may attend every key of the block.
    query_kept: positions of the real (not padding) query slots; None when there is no padding.
    """

    n_blocks: int
    block_queries: int
    block_keys: int
    query_index: Tensor
    key_index: Tensor
    mask: Tensor | None
    query_kept: Tensor | None

    def blocks(self, start: int, end: int) -> _Call:
        """The same call restricted to blocks start ... end - 1."""
        kept = None
        if self.query_kept is not None:
            first, last = start * self.block_queries, end * self.block_queries
            inside = (self.query_kept >= first) & (self.query_kept < last)
            kept = self.query_kept[inside] - first
        return _Call(
            n_blocks=end - start,
            block_queries=self.block_queries,
            block_keys=self.block_keys,
            query_index=self.query_index[start * self.block_queries : end * self.block_queries],
            key_index=self.key_index[start * self.block_keys : end * self.block_keys],
            mask=None if self.mask is None else self.mask[start:end],
            query_kept=kept,
        )

    def kept_queries(self) -> Tensor:
        """Token of each real query slot."""
        return self.query_index if self.query_kept is None else self.query_index[self.query_kept]

    def additive_mask(self, dtype: torch.dtype) -> Tensor | None:
        if self.mask is None:
            return None
        return torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device).masked_fill_(
            ~self.mask, float("-inf")
        )


@dataclass(frozen=True)
class _Window:
    """Query tokens ``queries`` attend the global tokens and the key tokens ``keys`` (both contiguous).

    blocked: bool (queries, global + window keys), True where a query may not attend a key (rows of a
        grouped band outside each other's band); None when every query may attend every key.
    """

    queries: slice
    keys: slice
    blocked: Tensor | None


@dataclass(frozen=True)
class _Plan:
    """The blocks of one pattern on one layout: as gathered calls and as windows in place.

    order: token order of the concatenated outputs [global queries, call 1, call 2, ...] (None when
        that concatenation is already in token order).
    """

    n_global: int
    calls: tuple[_Call, ...]
    order: Tensor | None
    windows: tuple[_Window, ...]


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
    offsets = _offsets(n_global, row_counts)
    if pattern.kind == "band":
        blocks = _band_blocks(pattern.size, offsets, group_rows)
    else:
        blocks = _cluster_blocks(pattern, offsets)
    counts = torch.tensor(row_counts)
    token_rows = torch.cat([torch.full((n_global,), -1), torch.arange(n_rows).repeat_interleave(counts)])
    band_width = pattern.size if pattern.kind == "band" and group_rows > 1 else None
    calls, query_slots = [], [torch.arange(n_global)]
    for group in _partition(blocks):
        call, slots = _make_call(group, n_global, token_rows, band_width, device)
        calls.append(call)
        query_slots.append(slots)
    windows = tuple(_window(block, n_global, token_rows, band_width, device) for block in blocks)
    slots = torch.cat(query_slots)
    n_tokens = offsets[-1]
    if torch.equal(slots, torch.arange(n_tokens)):
        return _Plan(n_global, tuple(calls), None, windows)
    position = torch.empty(n_tokens, dtype=torch.long)
    kept = slots >= 0
    position[slots[kept]] = torch.arange(slots.numel())[kept]
    return _Plan(n_global, tuple(calls), position.to(device), windows)


def _window(block: _Block, n_global: int, token_rows: Tensor, band_width: int | None, device) -> _Window:
    blocked = None
    if band_width is not None:
        query_rows = token_rows[block.query_start : block.query_end, None]
        key_rows = token_rows[None, block.key_start : block.key_end]
        outside = (query_rows - key_rows).abs() >= band_width
        blocked = torch.cat([torch.zeros(outside.shape[0], n_global, dtype=torch.bool), outside], dim=1).to(device)
    return _Window(slice(block.query_start, block.query_end), slice(block.key_start, block.key_end), blocked)


def _offsets(n_global: int, row_counts: tuple[int, ...]) -> list[int]:
    """Sequence index where each frequency row's tokens start; the last entry is the sequence length."""
    offsets = [n_global]
    for count in row_counts:
        offsets.append(offsets[-1] + count)
    return offsets


def _cluster_blocks(pattern: AttentionPattern, offsets: list[int]) -> list[_Block]:
    """One block per non-empty cluster: its tokens attend themselves (and the global tokens)."""
    return [
        _Block(offsets[first], offsets[end], offsets[first], offsets[end])
        for first, end in pattern.row_clusters(len(offsets) - 1)
        if offsets[first] < offsets[end]
    ]


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
    flat_slots = query_slots_t.flatten()
    padded = bool((flat_slots < 0).any())
    call = _Call(
        n_blocks=len(blocks),
        block_queries=block_queries,
        block_keys=block_keys,
        query_index=flat_slots.clamp(min=0).to(device),
        key_index=key_slots_t.clamp(min=0).flatten().to(device),
        mask=mask,
        query_kept=torch.nonzero(flat_slots >= 0).flatten().to(device) if padded else None,
    )
    return call, flat_slots


def _pieces(call: _Call, q: Tensor) -> list[_Call]:
    """The call split so that no gathered key tensor exceeds _MAX_GATHER_BYTES on a CPU.

    glibc serves larger buffers with a fresh mmap each time, and touching its pages costs more than the
    copy itself; smaller freed buffers are reused. GPU allocators cache, so GPU calls stay whole.
    """
    if q.device.type != "cpu":
        return [call]
    batch, heads, _, head_dim = q.shape
    block_bytes = call.block_keys * batch * heads * head_dim * q.element_size()
    per_piece = max(1, _MAX_GATHER_BYTES // block_bytes)
    return [call.blocks(start, min(start + per_piece, call.n_blocks)) for start in range(0, call.n_blocks, per_piece)]


_MAX_GATHER_BYTES = 8 << 20


def _gather_slots(x: Tensor, index: Tensor, n_blocks: int, block_len: int) -> Tensor:
    """(batch, heads, tokens, dim) -> (blocks, batch * heads, block_len, dim), token-major in memory
    (slot, batch, head, dim): the fused kernel's own order."""
    batch, heads, _, head_dim = x.shape
    slots = x.permute(2, 0, 1, 3).index_select(0, index)
    return slots.view(n_blocks, block_len, batch * heads, head_dim).transpose(1, 2)


def _slots_to_tokens(out: Tensor, batch: int, heads: int) -> Tensor:
    """(blocks, batch * heads, block_len, dim) in token-major memory -> (batch, slots, heads, dim)."""
    n_blocks, _, block_len, head_dim = out.shape
    return out.transpose(1, 2).reshape(n_blocks * block_len, batch, heads, head_dim).permute(1, 0, 2, 3)


def _concatenate(parts: list[Tensor], plan: _Plan) -> Tensor:
    """Outputs (batch, slots, heads, dim) of [global queries, calls...] -> (batch, heads, tokens, dim)."""
    out = torch.cat(parts, dim=1)
    if plan.order is not None:
        out = out.index_select(1, plan.order)
    return out.transpose(1, 2)


def _autograd_executor(kernel: Callable[[Tensor, Tensor, Tensor, _Call, float], Tensor]):
    """An executor running ``kernel`` on every piece of every call, differentiated by autograd."""

    def execute(q: Tensor, k: Tensor, v: Tensor, plan: _Plan, dropout_p: float) -> Tensor:
        parts = []
        if plan.n_global:
            global_queries = F.scaled_dot_product_attention(q[:, :, : plan.n_global], k, v, dropout_p=dropout_p)
            parts.append(global_queries.transpose(1, 2))
        for call in plan.calls:
            parts.extend(kernel(q, k, v, piece, dropout_p) for piece in _pieces(call, q))
        return _concatenate(parts, plan)

    return execute


def _sdpa_blocks(q: Tensor, k: Tensor, v: Tensor, call: _Call, dropout_p: float) -> Tensor:
    """``scaled_dot_product_attention`` with blocks as the batch and (batch, head) pairs as heads."""
    batch, heads = q.shape[:2]
    out = F.scaled_dot_product_attention(
        _gather_slots(q, call.query_index, call.n_blocks, call.block_queries),
        _gather_slots(k, call.key_index, call.n_blocks, call.block_keys),
        _gather_slots(v, call.key_index, call.n_blocks, call.block_keys),
        attn_mask=call.mask,
        dropout_p=dropout_p,
    )
    return _slots_to_tokens(out, batch, heads)


_Forward = Callable[[Tensor, Tensor, Tensor, _Plan], Tensor]
_Backward = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, _Plan], tuple[Tensor, Tensor, Tensor]]


def _explicit_executor(forward: _Forward, backward: _Backward):
    """An executor computing scores, softmax and weighted sum explicitly with ``forward``; in training its
    backward recomputes the probabilities (``backward``) instead of keeping them."""

    def execute(q: Tensor, k: Tensor, v: Tensor, plan: _Plan, dropout_p: float) -> Tensor:
        if dropout_p > 0:
            raise ValueError(
                f"the matmul kernels have no attention dropout (got dropout_p={dropout_p}); use Execution('sdpa')"
            )
        if q.dtype in (torch.float16, torch.bfloat16):  # scores and softmax in float32
            return execute(q.float(), k.float(), v.float(), plan, dropout_p).to(q.dtype)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
            return _RecomputedAttention.apply(q, k, v, plan, (forward, backward))
        with torch.no_grad():
            return forward(q, k, v, plan)

    return execute


class _RecomputedAttention(torch.autograd.Function):
    """Keeps only the inputs and the output; the backward recomputes what it needs chunk by chunk."""

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, plan: _Plan, kernel: tuple[_Forward, _Backward]) -> Tensor:
        forward, ctx.backward_kernel = kernel
        out = forward(q, k, v, plan)
        ctx.save_for_backward(q, k, v, out)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        q, k, v, out = ctx.saved_tensors
        return (*ctx.backward_kernel(q, k, v, out, grad_out, ctx.plan), None, None)


def _global_query_gradients(q: Tensor, k: Tensor, v: Tensor, grad_out: Tensor, n_global: int):
    """Gradients from the global queries' attention over every token: to q (zero but for the global
    queries), k and v, each laid out in memory as its input."""
    grad_q, grad_k, grad_v = (torch.zeros_like(x) for x in (q, k, v))
    if n_global:
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_() for t in (q[:, :, :n_global], k, v)]
            global_out = F.scaled_dot_product_attention(*inputs)
        grad_q_global, grad_k_global, grad_v_global = torch.autograd.grad(global_out, inputs, grad_out[:, :, :n_global])
        grad_q[:, :, :n_global] = grad_q_global
        grad_k.copy_(grad_k_global)
        grad_v.copy_(grad_v_global)
    return grad_q, grad_k, grad_v


def _matmul_forward(q: Tensor, k: Tensor, v: Tensor, plan: _Plan) -> Tensor:
    """Every call as explicit scores, softmax and weighted sum, a cache-sized chunk at a time."""
    batch, heads = q.shape[:2]
    parts = []
    if plan.n_global:
        global_queries = F.scaled_dot_product_attention(q[:, :, : plan.n_global], k, v)
        parts.append(global_queries.transpose(1, 2))
    scores = _score_buffer(q, _call_shapes(plan))
    for call in plan.calls:
        for piece in _pieces(call, q):
            queries, keys, values = _gather_blocks(q, k, v, piece)
            out = torch.empty_like(queries)
            for items, rows, probabilities in _probability_chunks(queries, keys, piece, scores):
                torch.bmm(probabilities, values[items], out=out[items, rows])
            parts.append(out.view(batch, heads, -1, out.shape[-1]).transpose(1, 2))
    return _concatenate(parts, plan)


def _matmul_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, plan: _Plan):
    """Gradients of the gathered matmul kernel: each block gathered again (no gathered copies kept), its
    probabilities recomputed chunk by chunk, its key and value gradients added into one per input."""
    batch, heads, _, head_dim = q.shape
    scale = head_dim**-0.5
    grad_q, grad_k, grad_v = _global_query_gradients(q, k, v, grad_out, plan.n_global)
    scores, grad_scores = (_score_buffer(q, _call_shapes(plan)) for _ in "ab")
    for call in plan.calls:
        for piece in _pieces(call, q):
            queries, keys, values = _gather_blocks(q, k, v, piece)
            slot_grad_out, slot_out = (_gather_rows(x, piece.query_index, piece.block_queries) for x in (grad_out, out))
            if piece.query_kept is not None:  # padding slots pass no gradient back
                padding = torch.ones(piece.query_index.numel(), dtype=torch.bool, device=q.device)
                padding[piece.query_kept] = False
                slot_grad_out.view(batch * heads, -1, head_dim)[:, padding] = 0
            # d(loss)/d(score) = p * (d(loss)/dp - sum_j p_j d(loss)/dp_j); that sum is grad_out . out
            grad_dot_out = (slot_grad_out * slot_out).sum(-1, keepdim=True)
            piece_grad_q = torch.empty_like(queries)
            piece_grad_k, piece_grad_v = torch.zeros_like(keys), torch.zeros_like(values)
            for items, rows, probabilities in _probability_chunks(queries, keys, piece, scores):
                chunk_grad_out = slot_grad_out[items, rows]
                piece_grad_v[items].baddbmm_(probabilities.transpose(1, 2), chunk_grad_out)
                chunk_grad_scores = grad_scores[: probabilities.numel()].view(probabilities.shape)
                torch.bmm(chunk_grad_out, values[items].transpose(1, 2), out=chunk_grad_scores)
                chunk_grad_scores.sub_(grad_dot_out[items, rows]).mul_(probabilities)
                torch.bmm(chunk_grad_scores, keys[items], out=piece_grad_q[items, rows]).mul_(scale)
                piece_grad_k[items].baddbmm_(chunk_grad_scores.transpose(1, 2), queries[items, rows], alpha=scale)
            query_grads = piece_grad_q.view(batch, heads, -1, head_dim)
            if piece.query_kept is not None:
                query_grads = query_grads.index_select(2, piece.query_kept)
            grad_q.index_copy_(2, piece.kept_queries(), query_grads)
            grad_k.index_add_(2, piece.key_index, piece_grad_k.view(batch, heads, -1, head_dim))
            grad_v.index_add_(2, piece.key_index, piece_grad_v.view(batch, heads, -1, head_dim))
    return grad_q, grad_k, grad_v


def _gather_blocks(q: Tensor, k: Tensor, v: Tensor, call: _Call) -> tuple[Tensor, Tensor, Tensor]:
    """Queries, keys and values of ``call`` as (batch * heads * blocks, block length, head_dim)."""
    return (
        _gather_rows(q, call.query_index, call.block_queries),
        _gather_rows(k, call.key_index, call.block_keys),
        _gather_rows(v, call.key_index, call.block_keys),
    )


def _gather_rows(x: Tensor, index: Tensor, block_len: int) -> Tensor:
    """Tokens ``index`` of x (batch, heads, tokens, head_dim) as (batch * heads * blocks, block_len,
    head_dim), contiguous, blocks fastest."""
    return x.index_select(2, index).view(-1, block_len, x.shape[-1])


def _probability_chunks(queries: Tensor, keys: Tensor, call: _Call, buffer: Tensor):
    """(blocks, query rows, attention probabilities) for chunks of about _CHUNK_SCORES scores: runs of
    whole blocks, or runs of the query rows of one block where its scores alone are more. Every chunk's
    probabilities are computed in place in ``buffer`` (:func:`_score_buffer`)."""
    n_items, block_queries, head_dim = queries.shape
    block_keys = keys.shape[1]
    items_per_chunk, rows_per_chunk = _chunk_sizes(n_items, block_queries, block_keys)
    blocked = None
    if call.mask is not None:  # items run blocks fastest: a chunk is one block or whole runs of all blocks
        blocked = ~call.mask[:, 0]
        items_per_chunk = 1 if items_per_chunk < call.n_blocks else items_per_chunk // call.n_blocks * call.n_blocks
    for first_item in range(0, n_items, items_per_chunk):
        items = slice(first_item, min(first_item + items_per_chunk, n_items))
        for first_row in range(0, block_queries, rows_per_chunk):
            rows = slice(first_row, min(first_row + rows_per_chunk, block_queries))
            chunk_queries = queries[items, rows]
            scores = buffer[: chunk_queries.shape[0] * chunk_queries.shape[1] * block_keys]
            scores = scores.view(chunk_queries.shape[0], chunk_queries.shape[1], block_keys)
            torch.baddbmm(
                scores, chunk_queries, keys[items].transpose(1, 2), beta=0.0, alpha=head_dim**-0.5, out=scores
            )
            if blocked is not None and items_per_chunk == 1:
                scores.masked_fill_(blocked[first_item % call.n_blocks, rows], float("-inf"))
            elif blocked is not None:
                scores.view(-1, call.n_blocks, *scores.shape[1:]).masked_fill_(blocked[:, rows], float("-inf"))
            torch.ops.aten._softmax.out(scores, -1, False, out=scores)
            yield items, rows, scores


def _chunk_sizes(n_items: int, n_queries: int, n_keys: int) -> tuple[int, int]:
    """(items, query rows) per chunk of about _CHUNK_SCORES scores: whole items (blocks of queries, or
    (batch, head) pairs) where one item's scores fit, else one item's query rows in runs."""
    rows = min(n_queries, max(1, _CHUNK_SCORES // n_keys))
    return min(n_items, max(1, _CHUNK_SCORES // (rows * n_keys))), rows


# scores per chunk of the matmul kernel: 3 MiB of float32, measured best on blocks of one to six frequency
# rows (smaller chunks pay per-call overhead, larger ones spill the scores out of cache)
_CHUNK_SCORES = 3 << 18


def _matmul_windows_forward(q: Tensor, k: Tensor, v: Tensor, plan: _Plan) -> Tensor:
    """Every window as explicit scores, softmax and weighted sum, a cache-sized chunk at a time, reading
    the window's keys and values where they lie (no gathered copies) and writing the output in token order."""
    batch, heads, n_tokens, head_dim = q.shape
    n_global = plan.n_global
    out = q.new_empty(batch, n_tokens, heads, head_dim).transpose(1, 2)
    if n_global:
        out[:, :, :n_global] = F.scaled_dot_product_attention(q[:, :, :n_global], k, v)
    scores = _score_buffer(q, _window_shapes(plan))
    for queries, keys, values, outputs in _pair_groups(q, k, v, out):
        for window in plan.windows:
            spans = _key_spans(window, n_global)
            for pairs, rows, probabilities in _window_probability_chunks(queries, keys, window, n_global, scores):
                chunk_out = outputs[pairs, rows]
                for index, (tokens, columns) in enumerate(spans):  # the first span overwrites, beta=0
                    chunk_out.baddbmm_(probabilities[:, :, columns], values[pairs, tokens], beta=float(index > 0))
    return out


def _matmul_windows_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, plan: _Plan):
    """Gradients of the windows kernel: each window's probabilities recomputed chunk by chunk, its
    gradients added in place."""
    n_global = plan.n_global
    scale = q.shape[-1] ** -0.5
    grad_q, grad_k, grad_v = _global_query_gradients(q, k, v, grad_out, n_global)
    # d(loss)/d(score) = p * (d(loss)/dp - sum_j p_j d(loss)/dp_j); that sum is grad_out . out
    grad_dot_out = (grad_out * out).sum(-1, keepdim=True)
    scores, all_grad_scores = (_score_buffer(q, _window_shapes(plan)) for _ in "ab")
    groups = _pair_groups(q, k, v, grad_out, grad_dot_out, grad_q, grad_k, grad_v)
    for queries, keys, values, grad_outputs, grad_dots, grad_queries, grad_keys, grad_values in groups:
        for window in plan.windows:
            spans = _key_spans(window, n_global)
            for pairs, rows, probabilities in _window_probability_chunks(queries, keys, window, n_global, scores):
                chunk_grad_out, chunk_queries = grad_outputs[pairs, rows], queries[pairs, rows]
                grad_scores = all_grad_scores[: probabilities.numel()].view(probabilities.shape)
                for tokens, columns in spans:
                    chunk_probabilities = probabilities[:, :, columns]
                    grad_values[pairs, tokens].baddbmm_(chunk_probabilities.transpose(1, 2), chunk_grad_out)
                    chunk_values = values[pairs, tokens].transpose(1, 2)
                    torch.bmm(chunk_grad_out, chunk_values, out=grad_scores[:, :, columns])
                grad_scores.sub_(grad_dots[pairs, rows]).mul_(probabilities)
                chunk_grad_q = grad_queries[pairs, rows]
                for index, (tokens, columns) in enumerate(spans):
                    grad_keys[pairs, tokens].baddbmm_(
                        grad_scores[:, :, columns].transpose(1, 2), chunk_queries, alpha=scale
                    )
                    chunk_grad_q.baddbmm_(grad_scores[:, :, columns], keys[pairs, tokens], beta=float(index > 0))
                chunk_grad_q.mul_(scale)
    return grad_q, grad_k, grad_v


def _pair_groups(*tensors: Tensor):
    """The (batch, heads, tokens, dim) tensors as (pairs, tokens, dim) views with one stride per
    dimension, as batched matrix products need them: all (batch, head) pairs at once where the memory
    layout allows, else one batch element at a time (no copies either way)."""
    batch, heads = tensors[0].shape[:2]
    if all(t.stride(0) == heads * t.stride(1) for t in tensors):
        yield tuple(t.flatten(0, 1) for t in tensors)
    else:
        for index in range(batch):
            yield tuple(t[index] for t in tensors)


def _window_probability_chunks(queries: Tensor, keys: Tensor, window: _Window, n_global: int, buffer: Tensor):
    """(pairs, query rows, attention probabilities) of one window, in chunks of about _CHUNK_SCORES
    scores: runs of (batch, head) pairs, split into runs of query rows where one pair's scores alone are
    more. The keys are the global tokens, then the window's; every chunk's probabilities are computed in
    place in ``buffer`` (:func:`_score_buffer`)."""
    n_pairs = queries.shape[0]
    head_dim = queries.shape[-1]
    n_queries = window.queries.stop - window.queries.start
    n_keys = n_global + window.keys.stop - window.keys.start
    pairs_per_chunk, rows_per_chunk = _chunk_sizes(n_pairs, n_queries, n_keys)
    for first_pair in range(0, n_pairs, pairs_per_chunk):
        pairs = slice(first_pair, min(first_pair + pairs_per_chunk, n_pairs))
        for first_row in range(0, n_queries, rows_per_chunk):
            last_row = min(first_row + rows_per_chunk, n_queries)
            rows = slice(window.queries.start + first_row, window.queries.start + last_row)
            chunk_queries = queries[pairs, rows]
            scores = buffer[: chunk_queries.shape[0] * chunk_queries.shape[1] * n_keys]
            scores = scores.view(chunk_queries.shape[0], chunk_queries.shape[1], n_keys)
            for tokens, columns in _key_spans(window, n_global):
                torch.baddbmm(
                    scores[:, :, columns],
                    chunk_queries,
                    keys[pairs, tokens].transpose(1, 2),
                    beta=0.0,
                    alpha=head_dim**-0.5,
                    out=scores[:, :, columns],
                )
            if window.blocked is not None:
                scores.masked_fill_(window.blocked[first_row:last_row], float("-inf"))
            torch.ops.aten._softmax.out(scores, -1, False, out=scores)
            yield pairs, rows, scores


def _call_shapes(plan: _Plan) -> list[tuple[int, int, int]]:
    """(blocks, queries, keys) of each gathered call."""
    return [(call.n_blocks, call.block_queries, call.block_keys) for call in plan.calls]


def _window_shapes(plan: _Plan) -> list[tuple[int, int, int]]:
    """(1, queries, keys) of each window, the global keys included."""
    return [
        (1, window.queries.stop - window.queries.start, plan.n_global + window.keys.stop - window.keys.start)
        for window in plan.windows
    ]


def _score_buffer(q: Tensor, shapes: list[tuple[int, int, int]]) -> Tensor:
    """One buffer for every chunk of scores of a call, allocated once per call: glibc maps buffers of this
    size afresh each time, and touching the new pages costs more than the scores themselves. A chunk holds
    at most _CHUNK_SCORES scores or one query's keys, and never more than a block's scores for all
    (batch, head) pairs."""
    pairs = q.shape[0] * q.shape[1]
    return q.new_empty(
        max(
            (min(max(_CHUNK_SCORES, keys), pairs * blocks * queries * keys) for blocks, queries, keys in shapes),
            default=0,
        )
    )


def _key_spans(window: _Window, n_global: int) -> list[tuple[slice, slice]]:
    """(key tokens, columns of the window's scores) of the global tokens, if any, and the window's own."""
    window_span = (window.keys, slice(n_global, None))
    return [(slice(0, n_global), slice(0, n_global)), window_span] if n_global else [window_span]


def _fused_cpu_applies(q: Tensor, dropout_p: float) -> bool:
    return q.device.type == "cpu" and dropout_p == 0.0 and hasattr(torch.ops.aten, _FUSED_CPU)


_FUSED_CPU = "_scaled_dot_product_flash_attention_for_cpu"


def _fused_cpu_executor(q: Tensor, k: Tensor, v: Tensor, plan: _Plan, dropout_p: float) -> Tensor:
    if not _fused_cpu_applies(q, dropout_p):
        raise ValueError(
            f"the fused_cpu kernel needs CPU tensors and no attention dropout (got {q.device}, "
            f"dropout_p={dropout_p}); use Execution('sdpa')"
        )
    return _FusedCpuBlocks.apply(q, k, v, plan)


class _FusedCpuBlocks(torch.autograd.Function):
    """Block attention on PyTorch's fused CPU kernel, outputs and gradients written per token.

    The forward keeps only the output and the log-sum-exp of every query; the backward gathers each
    block's queries, keys, values, output gradients and log-sum-exps again, runs the kernel's backward,
    and adds the block's key and value gradients into one gradient per input (a key of several blocks,
    such as a global token, gathers its gradient from each).
    """

    @staticmethod
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, plan: _Plan) -> Tensor:
        forward_kernel = getattr(torch.ops.aten, _FUSED_CPU)
        batch, heads, n_tokens, head_dim = q.shape
        n_global = plan.n_global
        out = q.new_empty(batch, n_tokens, heads, head_dim)
        lse_dtype = torch.float64 if q.dtype == torch.float64 else torch.float32  # the kernel's accumulation
        lse = torch.empty(n_tokens, batch, heads, dtype=lse_dtype)
        if n_global:
            global_out, global_lse = forward_kernel(q[:, :, :n_global], k, v)
            out[:, :n_global] = global_out.transpose(1, 2)
            lse[:n_global] = global_lse.permute(2, 0, 1)
        for call in plan.calls:
            for piece in _pieces(call, q):
                piece_out, piece_lse = forward_kernel(
                    _gather_slots(q, piece.query_index, piece.n_blocks, piece.block_queries),
                    _gather_slots(k, piece.key_index, piece.n_blocks, piece.block_keys),
                    _gather_slots(v, piece.key_index, piece.n_blocks, piece.block_keys),
                    attn_mask=piece.additive_mask(q.dtype),
                )
                tokens = _slots_to_tokens(piece_out, batch, heads)
                slot_lse = piece_lse.permute(0, 2, 1).reshape(-1, batch, heads)
                if piece.query_kept is not None:
                    tokens = tokens.index_select(1, piece.query_kept)
                    slot_lse = slot_lse.index_select(0, piece.query_kept)
                out.index_copy_(1, piece.kept_queries(), tokens)
                lse.index_copy_(0, piece.kept_queries(), slot_lse)
        out = out.transpose(1, 2)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.plan = plan
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        backward_kernel = getattr(torch.ops.aten, _FUSED_CPU + "_backward")
        q, k, v, out, lse = ctx.saved_tensors
        plan = ctx.plan
        batch, heads, n_tokens, head_dim = q.shape
        n_global = plan.n_global
        grad_out = grad_out.contiguous() if grad_out.stride(-1) != 1 else grad_out
        if n_global:
            glob = slice(0, n_global)
            grad_q_global, grad_k, grad_v = backward_kernel(
                grad_out[:, :, glob],
                q[:, :, glob],
                k,
                v,
                out[:, :, glob],
                lse[glob].permute(1, 2, 0),
                0.0,
                False,
            )
        else:
            grad_k, grad_v = torch.zeros_like(k), torch.zeros_like(v)
        # gradients token-major (token, batch, head, dim): block gradients index into dimension 0
        grad_q = q.new_empty(batch, n_tokens, heads, head_dim).permute(1, 0, 2, 3)
        grad_k_tokens, grad_v_tokens = grad_k.permute(2, 0, 1, 3), grad_v.permute(2, 0, 1, 3)
        if n_global:
            grad_q[glob] = grad_q_global.permute(2, 0, 1, 3)
        for call in plan.calls:
            for piece in _pieces(call, q):
                slot_lse = lse.index_select(0, piece.query_index)
                slot_grad_out = grad_out.permute(2, 0, 1, 3).index_select(0, piece.query_index)
                if piece.query_kept is not None:
                    # padding slots: no gradient flows back, and exp(score - inf) = 0 keeps them finite
                    padding = torch.ones(slot_lse.shape[0], dtype=torch.bool, device=lse.device)
                    padding[piece.query_kept] = False
                    slot_lse[padding] = float("inf")
                    slot_grad_out[padding] = 0
                shape = (piece.n_blocks, piece.block_queries, batch * heads)
                piece_grad_q, piece_grad_k, piece_grad_v = backward_kernel(
                    slot_grad_out.view(*shape, head_dim).transpose(1, 2),
                    _gather_slots(q, piece.query_index, piece.n_blocks, piece.block_queries),
                    _gather_slots(k, piece.key_index, piece.n_blocks, piece.block_keys),
                    _gather_slots(v, piece.key_index, piece.n_blocks, piece.block_keys),
                    _gather_slots(out, piece.query_index, piece.n_blocks, piece.block_queries),
                    slot_lse.view(shape).transpose(1, 2),
                    0.0,
                    False,
                    attn_mask=piece.additive_mask(q.dtype),
                )
                query_grads = _slots_to_tokens(piece_grad_q, batch, heads).transpose(0, 1)
                if piece.query_kept is not None:
                    query_grads = query_grads.index_select(0, piece.query_kept)
                grad_q.index_copy_(0, piece.kept_queries(), query_grads)
                grad_k_tokens.index_add_(
                    0, piece.key_index, _slots_to_tokens(piece_grad_k, batch, heads).transpose(0, 1)
                )
                grad_v_tokens.index_add_(
                    0, piece.key_index, _slots_to_tokens(piece_grad_v, batch, heads).transpose(0, 1)
                )
        return grad_q.permute(1, 2, 0, 3), grad_k, grad_v, None


BlockExecutor = Callable[[Tensor, Tensor, Tensor, _Plan, float], Tensor]
BLOCK_KERNELS: dict[str, BlockExecutor] = {
    "fused_cpu": _fused_cpu_executor,
    "matmul": _explicit_executor(_matmul_forward, _matmul_backward),
    "matmul_windows": _explicit_executor(_matmul_windows_forward, _matmul_windows_backward),
    "sdpa": _autograd_executor(_sdpa_blocks),
}
