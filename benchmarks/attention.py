"""Attention core: every restricted rf_norm_t form against unrestricted attention, side by side.

For each form, batch size and mode (inference, training = forward + backward to q, k and v), times in one
process, interleaved (A B C A B C ...) after a warm-up, and prints the median of each as a ratio to
unrestricted ``scaled_dot_product_attention`` (SDPA) timed in the same rounds:

    original  full scores + additive mask (q @ k^T * scale + mask, softmax, @ v), as the FRITO code did
    masked    the reference executor: SDPA with the pattern's boolean token mask
    sparse    the block-sparse executor, ``attention_impl="sparse"`` (models.sparse_attention); ``"auto"``
              chooses between it and the masked call per input (python -m benchmarks.grid)
    ideal     the fraction of (query, key) pairs the pattern allows: the FLOP limit

Run from the repository root:  python -m benchmarks.attention
``--candidates`` also times every block kernel and band grouping the sparse executor can choose from.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from models.attention import masked_attention
from models.patterns import TokenLayout, parse_rf_norm_t
from models.sparse_attention import blockwise_attention, sparse_attention
from models.sparse_choice import MAX_GROUP_ROWS, Execution, candidate_name
from models.sparse_kernels import BLOCK_KERNELS

FORMS = ("per_row_1", "per_row_3", "per_row_6", "row_overlap_2", "row_overlap_4")
GRID = (12, 99)  # PaSST-S on 10 s clips: 12 frequency rows x 99 time frames of patches
N_GLOBAL = 2
HEADS, HEAD_DIM = 12, 64


def median_times(
    candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1, statistic: str = "median"
) -> dict[str, float]:
    """Median (or ``statistic="min"``: least) seconds per candidate, the candidates run in turn (A B C A B C
    ...) to share the noise."""
    synchronize = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    for _ in range(warmup):
        for run in candidates.values():
            run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            synchronize()
            start = time.perf_counter()
            run()
            synchronize()
            times[name].append(time.perf_counter() - start)
    summary = statistics.median if statistic == "median" else min
    return {name: summary(values) for name, values in times.items()}


def original_attention(q, k, v, pattern, layout, dropout_p=0.0):
    """The FRITO code's execution: full scores plus an additive -10000 mask, softmax, weighted sum."""
    mask = pattern.token_mask(layout).to(q.device)
    additive = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(~mask, -10000.0)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5 + additive
    return scores.softmax(dim=-1) @ v


def unrestricted_attention(q, k, v, pattern, layout, dropout_p=0.0):
    return F.scaled_dot_product_attention(q, k, v)


def make_run(executor, pattern, layout, batch: int, training: bool, device, dtype) -> Callable[[], None]:
    """A closure timing ``executor`` on its own PaSST-S q, k, v (see :func:`attention_inputs`)."""
    leaves, grad = attention_inputs(batch, layout.n_tokens, HEADS, HEAD_DIM, training, device, dtype)
    return executor_run(executor, pattern, layout, leaves, grad, training)


def attention_inputs(
    batch: int, n_tokens: int, heads: int, head_dim: int, training: bool, device, dtype
) -> tuple[list[Tensor], Tensor]:
    """Random q, k, v of shape (batch, tokens, heads, head_dim), as the transformer block hands them over
    (tokens-major memory, heads interleaved), requiring grad when training; and a gradient of the output."""
    shape = (batch, n_tokens, heads, head_dim)
    leaves = [torch.randn(shape, device=device, dtype=dtype, requires_grad=training) for _ in range(3)]
    grad = torch.randn(batch, heads, n_tokens, head_dim, device=device, dtype=dtype)
    return leaves, grad


def executor_run(executor, pattern, layout, leaves: list[Tensor], grad: Tensor, training: bool) -> Callable[[], None]:
    """A closure of one ``executor`` call on ``leaves`` (from :func:`attention_inputs`) seen as (batch, heads,
    tokens, head_dim); training adds the backward pass of ``grad`` to q, k and v."""

    def run() -> None:
        q, k, v = (leaf.transpose(1, 2) for leaf in leaves)
        if training:
            for leaf in leaves:
                leaf.grad = None
            executor(q, k, v, pattern, layout, 0.0).backward(grad)
        else:
            with torch.no_grad():
                executor(q, k, v, pattern, layout, 0.0)

    return run


def candidate_executions(pattern, device) -> Iterable[Execution]:
    """Every execution the sparse executor could choose here."""
    group_rows = range(1, MAX_GROUP_ROWS + 1) if pattern.is_band else (1,)
    for kernel in BLOCK_KERNELS:
        if kernel == "fused_cpu" and device.type != "cpu":
            continue
        for rows in group_rows:
            yield Execution(kernel, rows)


def measure(form: str, batch: int, training: bool, repeats: int, candidates: bool, device, dtype) -> dict:
    """Ratios to unrestricted SDPA. The masked reference and the original execution each run in their
    own interleaved group with unrestricted SDPA: their N x N buffers (up to hundreds of MB at batch 8)
    would otherwise slow whatever is timed after them through page faults and evicted caches, which no
    model running one executor sees."""
    pattern = parse_rf_norm_t(form)
    layout = TokenLayout.full_grid(*GRID, N_GLOBAL)
    executors = {"unrestricted": unrestricted_attention, "sparse": sparse_attention}
    if candidates:
        for execution in candidate_executions(pattern, device):
            executors[candidate_name(execution)] = fixed_execution(execution)
    groups = [
        executors,
        {"unrestricted": unrestricted_attention, "masked": masked_attention},
        {"unrestricted": unrestricted_attention, "original": original_attention},
    ]
    ratios = {}
    for group in groups:
        runs = {name: make_run(ex, pattern, layout, batch, training, device, dtype) for name, ex in group.items()}
        times = median_times(runs, repeats)
        ratios.update(
            {name: seconds / times["unrestricted"] for name, seconds in times.items() if name != "unrestricted"}
        )
        ratios.setdefault("unrestricted_seconds", times["unrestricted"])
    mask = pattern.token_mask(layout)
    return {"ratios": ratios, "ideal": mask.sum().item() / mask.numel()}


def fixed_execution(execution: Execution):
    """An executor running the restricted forms always as ``execution`` says."""

    def executor(q, k, v, pattern, layout, dropout_p=0.0):
        return blockwise_attention(q, k, v, pattern, layout, dropout_p, execution)

    return executor


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forms", nargs="+", default=list(FORMS))
    parser.add_argument("--batch", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--modes", nargs="+", choices=["inference", "training"], default=["inference", "training"])
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per measurement (median)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default="float32")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--candidates", action="store_true", help="also time every sparse execution")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, args.dtype)
    device = torch.device(args.device)
    n_tokens = N_GLOBAL + math.prod(GRID)
    print(
        f"attention core, {GRID[0]}x{GRID[1]} patch grid + {N_GLOBAL} global tokens = {n_tokens} tokens, "
        f"{HEADS} heads x {HEAD_DIM}, {args.dtype}, {device}"
        + (f", {args.threads} threads" if device.type == "cpu" else "")
    )
    print("ratios to unrestricted SDPA (median of interleaved repeats); speedup = original / sparse")
    header = (
        f"{'form':<14} {'batch':>5} {'mode':<9} {'SDPA ms':>8} {'ideal':>6} "
        f"{'original':>8} {'masked':>7} {'sparse':>7} {'speedup':>7}"
    )
    print(header)
    for batch in args.batch:
        for mode in args.modes:
            for form in args.forms:
                result = measure(form, batch, mode == "training", args.repeats, args.candidates, device, dtype)
                ratios = result["ratios"]
                print(
                    f"{form:<14} {batch:>5} {mode:<9} {ratios['unrestricted_seconds'] * 1e3:>8.1f} "
                    f"{result['ideal']:>6.3f} {ratios['original']:>8.2f} {ratios['masked']:>7.2f} "
                    f"{ratios['sparse']:>7.3f} {ratios['original'] / ratios['sparse']:>6.1f}x",
                    flush=True,
                )
                extra = {name: ratio for name, ratio in ratios.items() if "/" in name}
                if extra:
                    print("    candidates: " + "  ".join(f"{n} {r:.3f}" for n, r in extra.items()), flush=True)


if __name__ == "__main__":
    main()
