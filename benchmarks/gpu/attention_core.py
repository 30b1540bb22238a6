"""Section 3, attention core: PaSST-S attention at 10 s and 60 s clips, per form unrestricted SDPA, sparse, flex
and masked interleaved on the same q, k, v; time ratios to unrestricted, peak memory, and the fastest restricted
executor per form, dtype and clip (the measurement to choose the CUDA execution from)."""

from __future__ import annotations

import torch

from benchmarks.attention import attention_inputs, executor_run, unrestricted_attention
from benchmarks.gpu.check import DTYPES, EXECUTORS, Check, patch_columns, patch_rows
from benchmarks.gpu.timing import (
    compile_note,
    fill_batches,
    is_number,
    milliseconds,
    mode,
    peaks,
    ratios,
    target_cell,
    time_interleaved,
    timing_cells,
)
from models.passt import N_GLOBAL_TOKENS
from models.patterns import AttentionPattern, TokenLayout, parse_rf_norm_t

VARIANTS = ["unrestricted", *EXECUTORS]


def section_attention_core(check: Check) -> None:
    report, sizes, device = check.report, check.sizes, check.device
    heads, head_dim = sizes.core_shape
    n_rows = patch_rows(sizes.arch)
    report.line(
        f"{heads} heads x {head_dim}, {n_rows} frequency rows + {N_GLOBAL_TOKENS} global "
        "tokens; ratio = median time / unrestricted SDPA's in the same rounds; ideal = fraction of (query, key) "
        "pairs the form allows; peak = GiB allocated during each executor's warm-up call (inputs included)"
    )
    fill_batches(check)
    row = report.table("form", "clip", "mode", "dtype", "batch", "unrestricted ms", *EXECUTORS, "ideal",
                       "peak GiB " + "/".join(VARIANTS), "target", "notes")
    for clip, training, dtype_name, batch_kind in timing_cells():
        layout = TokenLayout.full_grid(n_rows, patch_columns(sizes.arch, sizes.clips[clip]), N_GLOBAL_TOKENS)
        batch = 1 if batch_kind == "1" else check.fill.get(clip)
        if batch is None:
            continue
        for form in sizes.core_forms:
            if check.time_left() <= 0:
                report.line(f"skipped: budget (from {form}, {clip}, {mode(training)}, {dtype_name}, batch {batch} on)")
                return
            pattern = parse_rf_norm_t(form)
            leaves, grad = attention_inputs(batch, layout.n_tokens, heads, head_dim, training, device,
                                            DTYPES[dtype_name])
            executors = {"unrestricted": unrestricted_attention, **EXECUTORS}
            runs = {name: executor_run(executor, pattern, layout, leaves, grad, training)
                    for name, executor in executors.items()}
            timing = time_interleaved(runs, check)
            del leaves, grad, runs
            cells = ratios(timing, "unrestricted", list(EXECUTORS))
            target = target_cell(check, "attention core", form, clip, training, cells, dtype_name, batch)
            row(form, clip, mode(training), dtype_name, batch, milliseconds(timing, "unrestricted"), *cells.values(),
                f"{allowed_fraction(pattern, layout):.3f}", peaks(timing, VARIANTS), target,
                compile_note(timing, "flex"))
            _record_fastest(check, form, dtype_name, clip, training, batch_kind, cells)
    _print_fastest(check)


def allowed_fraction(pattern: AttentionPattern, layout: TokenLayout) -> float:
    """Fraction of (query, key) pairs the pattern allows (the FLOP limit), from the rows' token counts."""
    n_global, n_tokens = layout.n_global, layout.n_tokens
    counts = torch.tensor(layout.row_counts, dtype=torch.float64)
    rows = torch.arange(layout.n_rows)
    patch_pairs = counts @ pattern.allowed_rows(rows, rows, layout.n_rows).double() @ counts
    global_pairs = n_global * n_tokens + (n_tokens - n_global) * n_global
    return (patch_pairs.item() + global_pairs) / n_tokens**2


def _record_fastest(check: Check, form: str, dtype_name: str, clip: str, training: bool, batch_kind: str,
                    cells: dict[str, str]) -> None:
    timed = {name: float(value) for name, value in cells.items() if is_number(value)}
    cell = f"{'train' if training else 'infer'} b{batch_kind}: "
    cell += f"{min(timed, key=timed.get)} {min(timed.values()):.3f}" if timed else "-"
    check.fastest.setdefault((form, dtype_name, clip), []).append(cell)


def _print_fastest(check: Check) -> None:
    check.report.line()
    check.report.line(
        "Fastest restricted executor per form, dtype and clip (ratio to unrestricted; b1 = batch 1, "
        "bfill = the batch that fills the GPU): the measurement to choose the CUDA execution of "
        "attention_impl='auto' from"
    )
    row = check.report.table("form", "dtype", "clip", "fastest (sparse = sdpa blocks, flex, masked)")
    for (form, dtype_name, clip), cells in sorted(check.fastest.items()):
        row(form, dtype_name, clip, "; ".join(cells))
