"""Section 4, whole model: PaSST-S, one training step (forward, cross-entropy, backward, AdamW step) and
inference, each form's sparse and flex executors beside the unrestricted model (and masked per_row_1),
interleaved in one process on one set of weights; time ratios and peak memory."""

from __future__ import annotations

import torch

from benchmarks.gpu.check import DTYPES, MEL_BINS, Check
from benchmarks.gpu.timing import (
    compile_note,
    fill_batches,
    milliseconds,
    mode,
    model_for,
    model_step,
    peaks,
    ratios,
    target_cell,
    time_interleaved,
    timing_cells,
)
from models.attention import masked_attention
from models.flex_attention import flex_attention_executor
from models.patterns import parse_rf_norm_t
from models.sparse_attention import sparse_attention

VARIANTS = ["unrestricted", "sparse", "flex", "masked"]


def section_whole_model(check: Check) -> None:
    report, sizes, device = check.report, check.sizes, check.device
    report.line(
        f"{sizes.arch} on log-mel inputs; training step = forward, cross-entropy, backward, AdamW step; bfloat16 = "
        "autocast; ratio = median time / the unrestricted model's in the same rounds; peak = GiB allocated during "
        "each variant's warm-up call (weights and optimizer state included)"
    )
    fill_batches(check)
    row = report.table("form", "clip", "mode", "dtype", "batch", "unrestricted ms", *VARIANTS[1:],
                       "peak GiB " + "/".join(VARIANTS), "target", "notes")
    for clip, training, dtype_name, batch_kind in timing_cells():
        batch = 1 if batch_kind == "1" else check.fill.get(clip)
        if batch is None:
            continue
        model, optimizer = model_for(check, clip)
        x = torch.randn(batch, 1, MEL_BINS, sizes.clips[clip], device=device)
        for index, form in enumerate(sizes.model_forms):
            if check.time_left() <= 0:
                report.line(f"skipped: budget (from {form}, {clip}, {mode(training)}, {dtype_name}, batch {batch} on)")
                return
            pattern = parse_rf_norm_t(form)
            variants = {"unrestricted": (parse_rf_norm_t(""), masked_attention), "sparse": (pattern, sparse_attention),
                        "flex": (pattern, flex_attention_executor)}
            if index == 0:  # the masked reference costs the same for every form
                variants["masked"] = (pattern, masked_attention)
            runs = {
                name: model_step(model, optimizer, variant_pattern, executor, x, training, DTYPES[dtype_name])
                for name, (variant_pattern, executor) in variants.items()
            }
            timing = time_interleaved(runs, check)
            cells = ratios(timing, "unrestricted", VARIANTS[1:])
            if index:
                cells["masked"] = "-"
            target = target_cell(check, "whole model", form, clip, training, cells, dtype_name, batch)
            row(form, clip, mode(training), dtype_name, batch, milliseconds(timing, "unrestricted"), *cells.values(),
                peaks(timing, VARIANTS), target, compile_note(timing, "flex"))
        del x
