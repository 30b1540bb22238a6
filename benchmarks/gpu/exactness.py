"""Section 1, exactness: every rf_norm_t form's executors (sparse, flex, masked) against the masked reference
in higher precision, float32 and bfloat16, forward and backward, on a 10 s patch grid and the layouts
patchout leaves.

Errors are the largest absolute difference over the largest magnitude of the reference tensor. float32
passes within 1e-4 of a float64 reference; bfloat16 within 4 u, u = 2^-8 (bfloat16's unit roundoff, 8
significant bits), of a float32 reference on the same bfloat16 inputs: four roundings of the tensor's
largest value. The masked executor's own bfloat16 error is the baseline of what a fused bfloat16 kernel
reaches.
"""

from __future__ import annotations

import torch

from benchmarks.gpu.check import DTYPES, EXECUTORS, Check, not_implemented
from models.attention import masked_attention
from models.passt import N_GLOBAL_TOKENS
from models.patterns import TokenLayout, parse_rf_norm_t

EXACT_FORMS = (
    "per_row_1",
    "per_row_3",
    "per_row_5",  # clusters of 5, 5 and 2 rows on 12
    "high_low",
    "row_overlap_1",
    "row_overlap_2",
    "row_overlap_4",
    "sparse_row_6",
    "per_row_16",  # wider than the 12 rows
    "row_overlap_16",
)
BF16_UNIT = 2.0**-8  # bfloat16 keeps 8 significant bits: unit roundoff 2^-8
BF16_TOLERANCE_UNITS = 4
FP32_TOLERANCE = 1e-4


def section_exactness(check: Check) -> None:
    report, sizes, device = check.report, check.sizes, check.device
    n_rows, n_cols = sizes.exact_grid
    batch, heads, head_dim = sizes.exact_shape
    layouts = patchout_layouts(n_rows, n_cols)
    report.line(
        f"{n_rows} x {n_cols} patch grid + {N_GLOBAL_TOKENS} global tokens, batch {batch}, {heads} heads x "
        f"{head_dim}; layouts: " + ", ".join(f"{name} ({layout.n_tokens} tokens)" for name, layout in layouts.items())
    )
    report.line(
        f"error = max |executor - reference| / max |reference|, worst over the layouts and over the output "
        f"(out) or the three input gradients (grad); float32 within {FP32_TOLERANCE:g} of a float64 "
        f"reference; bfloat16 within {BF16_TOLERANCE_UNITS} u of a float32 reference on the same inputs, "
        "u = 2^-8 (bfloat16's unit roundoff); masked in bfloat16 is the baseline"
    )
    row = report.table("form", "dtype", "executor", "out error", "grad error", "worst layout", "verdict")
    for dtype_name, dtype in DTYPES.items():
        reference_dtype = torch.float64 if dtype == torch.float32 else torch.float32
        for form in EXACT_FORMS:
            if check.time_left() <= 0:
                report.line(f"skipped: budget (from {form} in {dtype_name} on)")
                return
            pattern = parse_rf_norm_t(form)
            errors: dict[str, list[tuple[float, float, str]]] = {name: [] for name in EXECUTORS}
            no_backward: dict[str, str] = {}
            for layout_name, layout in layouts.items():
                torch.manual_seed(0)
                inputs = [torch.randn(batch, heads, layout.n_tokens, head_dim).to(device, dtype) for _ in range(3)]
                grad_out = torch.randn(batch, heads, layout.n_tokens, head_dim).to(device, dtype)
                reference_inputs = [t.to(reference_dtype) for t in inputs]
                expected, expected_grads, _ = forward_backward(
                    masked_attention, reference_inputs, grad_out.to(reference_dtype), pattern, layout
                )
                for name, executor in EXECUTORS.items():
                    out, grads, reason = forward_backward(executor, inputs, grad_out, pattern, layout)
                    grad_error = 0.0
                    if grads is None:
                        no_backward[name] = reason
                    else:
                        grad_error = max(relative_error(g, e) for g, e in zip(grads, expected_grads, strict=True))
                    errors[name].append((relative_error(out, expected), grad_error, layout_name))
            for name, per_layout in errors.items():
                out_error = max(error for error, _, _ in per_layout)
                grad_error = max(error for _, error, _ in per_layout)
                worst_layout = max(per_layout, key=lambda entry: max(entry[0], entry[1]))[2]
                cells = _cells(check, form, dtype, name, out_error, grad_error, no_backward.get(name, ""))
                row(form, dtype_name, name, *cells[:2], worst_layout, cells[2])


def patchout_layouts(n_rows: int, n_cols: int, seed: int = 0) -> dict[str, TokenLayout]:
    """The full grid and the layouts patchout leaves: time columns dropped, frequency rows dropped, tokens
    dropped at random (rows of unequal length), and a row without tokens on top of that."""
    generator = torch.Generator().manual_seed(seed)
    grid_rows = torch.arange(n_rows).repeat_interleave(n_cols)

    def drop_tokens(rows: torch.Tensor, fraction: float) -> torch.Tensor:
        keep = rows.numel() - max(1, int(fraction * rows.numel()))
        return rows[torch.randperm(rows.numel(), generator=generator)[:keep].sort().values]

    kept_cols = max(1, int(0.6 * n_cols))
    dropped_rows = torch.randperm(n_rows, generator=generator)[: max(1, n_rows // 4)]
    empty_row = n_rows // 2
    kept = {
        "full grid": grid_rows,
        "time patchout": torch.arange(n_rows).repeat_interleave(kept_cols),
        "frequency patchout": grid_rows[~torch.isin(grid_rows, dropped_rows)],
        "token patchout": drop_tokens(grid_rows, 0.25),
        "empty row": drop_tokens(grid_rows[grid_rows != empty_row], 0.1),
    }
    return {name: TokenLayout.from_kept(rows, n_rows, N_GLOBAL_TOKENS) for name, rows in kept.items()}


def forward_backward(executor, inputs, grad_out, pattern, layout) -> tuple[torch.Tensor, list | None, str]:
    """Output and input gradients; forward only (gradients None, with the reason) where the executor has
    no backward on this device."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    try:
        out = executor(*leaves, pattern, layout, 0.0)
    except NotImplementedError as error:
        with torch.no_grad():
            return executor(*inputs, pattern, layout, 0.0), None, not_implemented(error)
    out.backward(grad_out)
    return out.detach(), [leaf.grad for leaf in leaves], ""


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference over the reference's largest magnitude."""
    reference = reference.double()
    scale = reference.abs().max().item()
    return (value.double() - reference).abs().max().item() / (scale if scale > 0 else 1.0)


def _cells(check, form, dtype, executor, out_error, grad_error, no_backward) -> tuple[str, str, str]:
    """(out error, grad error, verdict) cells of one executor in one dtype."""
    if dtype == torch.float32:
        limit, shown = FP32_TOLERANCE, lambda e: f"{e:.1e}"
        target = "float32 equals the masked reference"
    else:
        limit, shown = BF16_TOLERANCE_UNITS * BF16_UNIT, lambda e: f"{e / BF16_UNIT:.2f} u"
        target = "bfloat16 within bfloat16 rounding of float32"
    grad_cell = f"n/a ({no_backward})" if no_backward else shown(grad_error)
    within = out_error <= limit and (no_backward != "" or grad_error <= limit)
    if executor == "masked" and dtype != torch.float32:
        verdict = "baseline" if within else "baseline (outside the tolerance)"
    else:
        verdict = check.verdict(target, f"{form} {executor}: out {shown(out_error)}, grad {grad_cell}", within)
        if not check.cuda:
            verdict += " (CPU: within the tolerance)" if within else " (CPU: OUTSIDE the tolerance)"
    return shown(out_error), grad_cell, verdict
