"""Sparse executors for the frequency-restricted forms of attention.

A restricted form is computed as a few batched attention calls over *blocks*: runs of query tokens (one
cluster of frequency rows, or a group of neighbouring rows of a band) with the one contiguous run of
tokens those rows may attend, plus the global tokens. No tensor of size tokens x tokens is built: memory
grows with the tokens times the block length, and the result equals the masked reference under every
patchout. The work is split in three:

- planning (:mod:`models.sparse_plan`): the blocks of a pattern on a token layout, as calls and windows;
- kernel choice (:mod:`models.sparse_choice`): which kernel, and how many band rows per block, modelled
  fastest for the input from measured constants;
- kernels (:mod:`models.sparse_kernels`): ``matmul``, ``matmul_windows``, ``fused_cpu`` and ``sdpa``.
"""

from __future__ import annotations

from torch import Tensor

from models.patterns import AttentionPattern, TokenLayout
from models.sparse_choice import Execution, choose_execution
from models.sparse_kernels import BLOCK_KERNELS
from models.sparse_plan import make_plan


def sparse_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: AttentionPattern, layout: TokenLayout, dropout_p: float = 0.0
) -> Tensor:
    """Executor for every restricted form: equal to the masked reference, without N x N tensors.

    q, k, v: (batch, heads, tokens, head_dim) in the token order of ``layout``; returns the same shape.
    """
    execution = choose_execution(pattern, layout, q, dropout_p, dense_allowed=False)
    return blockwise_attention(q, k, v, pattern, layout, dropout_p, execution)


def blockwise_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    pattern: AttentionPattern,
    layout: TokenLayout,
    dropout_p: float = 0.0,
    execution: Execution | None = None,
) -> Tensor:
    """A restricted form computed block by block, as ``execution`` says (default: the ``sdpa`` kernel, one
    row per block; see :func:`sparse_attention`)."""
    execution = execution or Execution()
    if not pattern.is_restricted:
        raise ValueError("blockwise_attention computes restricted forms; use masked_attention for rf_norm_t=''")
    if q.shape[2] != layout.n_tokens:
        raise ValueError(f"q has {q.shape[2]} tokens but the layout describes {layout.n_tokens}")
    if execution.kernel not in BLOCK_KERNELS:
        raise ValueError(f"unknown block kernel {execution.kernel!r}; expected one of {sorted(BLOCK_KERNELS)}")
    if execution.group_rows < 1:
        raise ValueError(f"group_rows must be >= 1, got {execution.group_rows}")
    rows_per_block = execution.group_rows if pattern.is_band else 1
    plan = make_plan(pattern, layout, rows_per_block, q.device)
    return BLOCK_KERNELS[execution.kernel](q, k, v, plan, dropout_p)
