"""The block kernels of the sparse executors: each computes every block of a plan (models.sparse_plan).

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

Every kernel has the signature ``kernel(q, k, v, plan, dropout_p) -> out`` with q, k, v and out of shape
(batch, heads, tokens, head_dim); the global queries attend every token in one more small call.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from models.sparse_plan import Call, Plan, Window


def fused_cpu_available() -> bool:
    """Whether this torch build has the fused CPU attention kernel the ``fused_cpu`` kernel runs on."""
    return hasattr(torch.ops.aten, _FUSED_CPU)


def _pieces(call: Call, q: Tensor) -> list[Call]:
    """The call split so that no gathered key tensor exceeds _MAX_GATHER_BYTES on a CPU.

    glibc serves larger buffers with a fresh mmap each time, and touching its pages costs more than the
    copy itself; smaller freed buffers are reused. GPU allocators cache, so GPU calls stay whole.
    """
    if q.device.type != "cpu":
        return [call]
    batch, heads, _, head_dim = q.shape
    per_piece = _blocks_per_piece(call.block_keys, batch, heads, head_dim, q.element_size())
    return [call.blocks(start, min(start + per_piece, call.n_blocks)) for start in range(0, call.n_blocks, per_piece)]


def gather_pieces(n_blocks: int, block_keys: int, batch: int, heads: int, head_dim: int, element_size: int = 4) -> int:
    """How many pieces a CPU call of ``n_blocks`` blocks runs as (see :func:`_pieces`)."""
    return math.ceil(n_blocks / _blocks_per_piece(block_keys, batch, heads, head_dim, element_size))


def _blocks_per_piece(block_keys: int, batch: int, heads: int, head_dim: int, element_size: int) -> int:
    return max(1, _MAX_GATHER_BYTES // (block_keys * batch * heads * head_dim * element_size))


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


def _concatenate(parts: list[Tensor], plan: Plan) -> Tensor:
    """Outputs (batch, slots, heads, dim) of [global queries, calls...] -> (batch, heads, tokens, dim)."""
    out = torch.cat(parts, dim=1)
    if plan.order is not None:
        out = out.index_select(1, plan.order)
    return out.transpose(1, 2)


def _autograd_executor(kernel: Callable[[Tensor, Tensor, Tensor, Call, float], Tensor]):
    """An executor running ``kernel`` on every piece of every call, differentiated by autograd."""

    def execute(q: Tensor, k: Tensor, v: Tensor, plan: Plan, dropout_p: float) -> Tensor:
        parts = []
        if plan.n_global:
            global_queries = F.scaled_dot_product_attention(q[:, :, : plan.n_global], k, v, dropout_p=dropout_p)
            parts.append(global_queries.transpose(1, 2))
        for call in plan.calls:
            parts.extend(kernel(q, k, v, piece, dropout_p) for piece in _pieces(call, q))
        return _concatenate(parts, plan)

    return execute


def _sdpa_blocks(q: Tensor, k: Tensor, v: Tensor, call: Call, dropout_p: float) -> Tensor:
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


_Forward = Callable[[Tensor, Tensor, Tensor, Plan], Tensor]
_Backward = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor, Plan], tuple[Tensor, Tensor, Tensor]]


def _explicit_executor(forward: _Forward, backward: _Backward):
    """An executor computing scores, softmax and weighted sum explicitly with ``forward``; in training its
    backward recomputes the probabilities (``backward``) instead of keeping them."""

    def execute(q: Tensor, k: Tensor, v: Tensor, plan: Plan, dropout_p: float) -> Tensor:
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
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, plan: Plan, kernel: tuple[_Forward, _Backward]) -> Tensor:
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


def _matmul_forward(q: Tensor, k: Tensor, v: Tensor, plan: Plan) -> Tensor:
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


def _matmul_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, plan: Plan):
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


def _gather_blocks(q: Tensor, k: Tensor, v: Tensor, call: Call) -> tuple[Tensor, Tensor, Tensor]:
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


def _probability_chunks(queries: Tensor, keys: Tensor, call: Call, buffer: Tensor):
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


def _matmul_windows_forward(q: Tensor, k: Tensor, v: Tensor, plan: Plan) -> Tensor:
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


def _matmul_windows_backward(q: Tensor, k: Tensor, v: Tensor, out: Tensor, grad_out: Tensor, plan: Plan):
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


def _window_probability_chunks(queries: Tensor, keys: Tensor, window: Window, n_global: int, buffer: Tensor):
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


def _call_shapes(plan: Plan) -> list[tuple[int, int, int]]:
    """(blocks, queries, keys) of each gathered call."""
    return [(call.n_blocks, call.block_queries, call.block_keys) for call in plan.calls]


def _window_shapes(plan: Plan) -> list[tuple[int, int, int]]:
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


def _key_spans(window: Window, n_global: int) -> list[tuple[slice, slice]]:
    """(key tokens, columns of the window's scores) of the global tokens, if any, and the window's own."""
    window_span = (window.keys, slice(n_global, None))
    return [(slice(0, n_global), slice(0, n_global)), window_span] if n_global else [window_span]


def _fused_cpu_applies(q: Tensor, dropout_p: float) -> bool:
    return q.device.type == "cpu" and dropout_p == 0.0 and fused_cpu_available()


_FUSED_CPU = "_scaled_dot_product_flash_attention_for_cpu"


def _fused_cpu_executor(q: Tensor, k: Tensor, v: Tensor, plan: Plan, dropout_p: float) -> Tensor:
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
    def forward(ctx, q: Tensor, k: Tensor, v: Tensor, plan: Plan) -> Tensor:
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


BlockExecutor = Callable[[Tensor, Tensor, Tensor, Plan, float], Tensor]
BLOCK_KERNELS: dict[str, BlockExecutor] = {
    "fused_cpu": _fused_cpu_executor,
    "matmul": _explicit_executor(_matmul_forward, _matmul_backward),
    "matmul_windows": _explicit_executor(_matmul_windows_forward, _matmul_windows_backward),
    "sdpa": _autograd_executor(_sdpa_blocks),
}
