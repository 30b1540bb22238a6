"""GPU check: every CUDA path of the restricted attention verified, and timed against unrestricted attention.

Run from the repository root of a fresh checkout after the README's install (nothing is downloaded):

    python -m benchmarks.gpu_check                        # about 7 minutes on one GPU (--budget-s 420)
    python -m benchmarks.gpu_check --budget-s 200 --sections exactness core
    python -m benchmarks.gpu_check --smoke                # every section on the CPU, tiny sizes (CI)

Prints one report, also written to --out (default gpu_check_report.md) line by line, so a run cut short
keeps what it measured. Sections, in order of value; each may use its share of the budget that is left
(shares below), measures in order of value too, and reports what it did not reach as "skipped: budget":

1. exactness (15 %): every rf_norm_t form on CUDA, float32 and bfloat16, forward and backward, on a
   10 s patch grid and four patchout layouts; executors ``sparse`` (models.sparse_attention, what
   attention_impl "auto" and "sparse" run), ``flex`` (models.flex_attention) and ``masked`` against the
   masked reference computed in higher precision (float64 for float32; float32 for bfloat16, on the same
   bfloat16 inputs). Errors are the largest absolute difference over the largest magnitude of the
   reference tensor. float32 passes within 1e-4; bfloat16 within 4 u, u = 2^-8 (bfloat16's unit roundoff,
   8 significant bits): four roundings of the tensor's largest value. The masked executor's own error
   in bfloat16 is the baseline of what a fused bfloat16 kernel reaches.
2. CUDA tests (15 %): the suite's tests that skip without CUDA (test files mentioning "cuda", tests
   marked skipif with a reason naming CUDA/GPU), run by pytest in a subprocess; pass/fail counts.
3. attention core (30 %): PaSST-S attention (12 heads x 64, 12 frequency rows) at 10 s and 60 s clips
   (1000 and 6000 mel frames: 1190 and 7190 tokens), training (forward + backward) and inference,
   float32 and bfloat16, batch 1 and the batch that fills the GPU, per form: unrestricted SDPA, sparse,
   flex and masked interleaved in one process (A B C D A B C D ...) after a warm-up round (which compiles
   flex), CUDA-synchronised, median; ratios to unrestricted, peak memory of each
   (torch.cuda.max_memory_allocated during its warm-up call), the fastest restricted executor per form,
   dtype and clip.
4. whole model (20 %): PaSST-S, one training step (forward, backward, AdamW step) and inference, the same
   clips, dtypes (bfloat16: autocast) and batches, each form's sparse and flex executors beside the
   unrestricted model (and masked per_row_1), interleaved in one process on one set of weights.
5. mixed precision (20 %): two epochs of the demo training (``python ex_dcase20.py``) with
   trainer.precision=bf16-mixed and 16-mixed beside float32, same seed, the three side by side on the
   GPU; final accuracy from each run folder's metrics.json (test/acc where written, else val/acc).

The batch that fills the GPU: from the peak memory of a float32 training step of the unrestricted model at
batch 1 and 2, the batch whose estimated peak is 70 % of the GPU's memory (bfloat16 then fills less).

Targets, printed as met/missed beside each figure: training at 60 s at most 0.60 of unrestricted (per_row_1
0.35), judged on the attention core and, in the same words, on the whole model; nothing slower than
unrestricted at 10 s; bfloat16 within bfloat16 rounding of float32 (section 1); mixed-precision demo
trainings within 2 points of float32 accuracy.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from models.attention import TokenLayout, masked_attention, parse_rf_norm_t
from models.flex_attention import flex_attention_executor
from models.passt import ARCHITECTURES, PATCH_SIZE, get_model
from models.sparse_attention import sparse_attention

REPO = Path(__file__).resolve().parents[1]
MEL_BINS = 128
N_GLOBAL = 2

SECTION_SHARES = {"exactness": 0.15, "tests": 0.15, "core": 0.30, "model": 0.20, "demo": 0.20}
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
EXECUTORS = {"sparse": sparse_attention, "flex": flex_attention_executor, "masked": masked_attention}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}

BF16_UNIT = 2.0**-8  # bfloat16 keeps 8 significant bits: unit roundoff 2^-8
BF16_TOLERANCE_UNITS = 4
FP32_TOLERANCE = 1e-4
TARGET_60S_TRAINING = {"per_row_1": 0.35}  # other restricted forms: DEFAULT_60S_TRAINING
DEFAULT_60S_TRAINING = 0.60
TARGET_10S = 1.0
ACCURACY_POINTS = 2.0
MEMORY_FILL = 0.7


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one check: the GPU's, or the smoke run's tiny ones.

    arch: PaSST architecture of the whole-model section.
    clips: label -> mel frames of the clip lengths timed.
    exact_grid: (frequency rows, time columns) of the exactness layouts.
    exact_shape: (batch, heads, head_dim) of the exactness inputs.
    core_shape: (heads, head_dim) of the attention-core timing.
    repeats: timed rounds per measurement (fewer when the budget runs short).
    core_forms, model_forms: forms timed, in order of value.
    demo_options: Sacred updates of each demo training.
    """

    arch: str
    clips: dict[str, int]
    exact_grid: tuple[int, int]
    exact_shape: tuple[int, int, int]
    core_shape: tuple[int, int]
    repeats: int
    core_forms: tuple[str, ...]
    model_forms: tuple[str, ...]
    demo_options: tuple[str, ...]


GPU_SIZES = Sizes(
    arch="passt_s_swa_p16_128_ap476",
    clips={"60 s": 6000, "10 s": 1000},
    exact_grid=(12, 99),
    exact_shape=(2, 12, 64),
    core_shape=(12, 64),
    repeats=5,
    core_forms=(
        "per_row_1",
        "row_overlap_2",
        "per_row_3",
        "high_low",
        "row_overlap_4",
        "per_row_5",
        "sparse_row_6",
        "row_overlap_1",
        "row_overlap_8",
    ),
    model_forms=("per_row_1", "row_overlap_2", "per_row_3", "high_low", "row_overlap_4"),
    demo_options=("trainer.max_epochs=2",),
)
SMOKE_SIZES = Sizes(
    arch="passt_mini",
    clips={"60 s": 60, "10 s": 40},  # stand-ins: 5 and 3 time columns
    exact_grid=(12, 4),
    exact_shape=(1, 2, 8),
    core_shape=(2, 8),
    repeats=1,
    core_forms=("per_row_3", "row_overlap_2"),
    model_forms=("per_row_3",),
    demo_options=("trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"),
)


class Report:
    """The one report: each line printed as it comes and the file rewritten, so partial results survive."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []

    def line(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, flush=True)
        self.path.write_text("\n".join(self.lines) + "\n")

    def table(self, *columns: str) -> Callable[..., None]:
        """Prints a markdown table header; returns the function that prints a row."""
        self.line("| " + " | ".join(columns) + " |")
        self.line("|" + "---|" * len(columns))
        return lambda *cells: self.line("| " + " | ".join(str(cell) for cell in cells) + " |")


@dataclass
class Check:
    """What the sections share: sizes, device, report, budget, and results gathered on the way."""

    sizes: Sizes
    device: torch.device
    report: Report
    budget_s: float
    start: float = field(default_factory=time.monotonic)
    section_end: float = 0.0
    targets: list[tuple[str, str, bool]] = field(default_factory=list)  # (target, figure, met)
    fastest: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    fill: dict[str, int] = field(default_factory=dict)
    models: dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def time_left(self) -> float:
        return self.section_end - time.monotonic()

    def verdict(self, target: str, figure: str, met: bool) -> str:
        """'met'/'missed' (recorded for the summary), or 'skipped: no CUDA' off the GPU."""
        if not self.cuda:
            return "skipped: no CUDA"
        self.targets.append((target, figure, met))
        return "met" if met else "missed"


# --- measurement helpers ----------------------------------------------------------------------------------


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Timing:
    """Median seconds of each variant; peak memory (GiB) and time of its warm-up call; why some did not run."""

    seconds: dict[str, float] = field(default_factory=dict)
    warmup: dict[str, float] = field(default_factory=dict)
    peak_gib: dict[str, float] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    rounds: int = 0


def time_interleaved(runs: dict[str, Callable[[], None]], check: Check) -> Timing:
    """One warm-up round (compilation, peak memory), then up to ``repeats`` timed rounds A B C A B C ...,
    each call CUDA-synchronised; stops after the round that would end past the section's budget."""
    device = check.device
    timing = Timing()
    for name, run in runs.items():
        if check.cuda:
            torch.cuda.reset_peak_memory_stats(device)
        started = time.perf_counter()
        if _attempt(run, name, timing, device):
            timing.warmup[name] = time.perf_counter() - started
            if check.cuda:
                timing.peak_gib[name] = torch.cuda.max_memory_allocated(device) / 2**30
    samples: dict[str, list[float]] = {name: [] for name in runs if name not in timing.failed}
    for round_index in range(check.sizes.repeats):
        last_round = sum(values[-1] for values in samples.values() if values) if round_index else 0.0
        if round_index and time.monotonic() + last_round > check.section_end:
            break
        for name in list(samples):
            started = time.perf_counter()
            if _attempt(runs[name], name, timing, device):
                samples[name].append(time.perf_counter() - started)
            else:
                del samples[name]
        timing.rounds += 1
    timing.seconds = {name: statistics.median(values) for name, values in samples.items() if values}
    return timing


def _attempt(run: Callable[[], None], name: str, timing: Timing, device: torch.device) -> bool:
    """Runs once, synchronised; a failure is recorded with its reason instead of stopping the check."""
    try:
        synchronize(device)
        run()
        synchronize(device)
        return True
    except NotImplementedError as error:
        timing.failed[name] = f"n/a: {_reason(error)}"
    except torch.cuda.OutOfMemoryError:
        timing.failed[name] = "out of memory"
        torch.cuda.empty_cache()
    except Exception as error:  # reported in the table; the other variants still run
        timing.failed[name] = f"error: {type(error).__name__}: {_first_line(error)}"
    return False


def _first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:160]


def _reason(error: NotImplementedError) -> str:
    """What is not implemented, without the advice that follows it."""
    return _first_line(error).split(":")[0]


def relative_error(value: torch.Tensor, reference: torch.Tensor) -> float:
    """Largest absolute difference over the reference's largest magnitude."""
    reference = reference.double()
    scale = reference.abs().max().item()
    return (value.double() - reference).abs().max().item() / (scale if scale > 0 else 1.0)


def patch_columns(arch: str, frames: int) -> int:
    return (frames - PATCH_SIZE) // ARCHITECTURES[arch].tstride + 1


def patch_rows(arch: str) -> int:
    return (MEL_BINS - PATCH_SIZE) // ARCHITECTURES[arch].fstride + 1


# --- 1. exactness -----------------------------------------------------------------------------------------


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
    return {name: TokenLayout.from_kept(rows, n_rows, N_GLOBAL) for name, rows in kept.items()}


def forward_backward(executor, inputs, grad_out, pattern, layout) -> tuple[torch.Tensor, list | None, str]:
    """Output and input gradients; forward only (gradients None, with the reason) where the executor has
    no backward on this device."""
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    try:
        out = executor(*leaves, pattern, layout, 0.0)
    except NotImplementedError as error:
        with torch.no_grad():
            return executor(*inputs, pattern, layout, 0.0), None, _reason(error)
    out.backward(grad_out)
    return out.detach(), [leaf.grad for leaf in leaves], ""


def section_exactness(check: Check) -> None:
    report, sizes, device = check.report, check.sizes, check.device
    n_rows, n_cols = sizes.exact_grid
    batch, heads, head_dim = sizes.exact_shape
    layouts = patchout_layouts(n_rows, n_cols)
    report.line(
        f"{n_rows} x {n_cols} patch grid + {N_GLOBAL} global tokens, batch {batch}, {heads} heads x {head_dim}; "
        "layouts: " + ", ".join(f"{name} ({layout.n_tokens} tokens)" for name, layout in layouts.items())
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
                cells = _exactness_cells(check, form, dtype, name, out_error, grad_error, no_backward.get(name, ""))
                row(form, dtype_name, name, *cells[:2], worst_layout, cells[2])


def _exactness_cells(check, form, dtype, executor, out_error, grad_error, no_backward) -> tuple[str, str, str]:
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


# --- 2. the suite's CUDA tests ----------------------------------------------------------------------------


def pytest_collection_modifyitems(config, items) -> None:
    """pytest hook, active where this module is loaded as a plugin (``-p benchmarks.gpu_check``, section 2
    only): keeps the tests marked skipif with a reason naming CUDA or a GPU."""
    kept, deselected = [], []
    for item in items:
        reasons = " ".join(str(mark.kwargs.get("reason", "")) for mark in item.iter_markers("skipif")).lower()
        (kept if "cuda" in reasons or "gpu" in reasons else deselected).append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def cuda_test_files() -> list[str]:
    return sorted(
        str(path.relative_to(REPO)) for path in (REPO / "tests").glob("test_*.py") if "cuda" in path.read_text()
    )


def section_cuda_tests(check: Check) -> None:
    """pytest -v in a subprocess; the outcomes are counted from its lines, so a run stopped at the budget
    still reports the tests it finished."""
    report = check.report
    files = cuda_test_files()
    report.line("test files mentioning cuda: " + ", ".join(files))
    command = [sys.executable, "-m", "pytest", "-v", "-p", "benchmarks.gpu_check", "-p", "no:cacheprovider", *files]
    started = time.monotonic()
    with tempfile.TemporaryFile("w+") as output:
        process = subprocess.Popen(command, cwd=REPO, stdout=output, stderr=subprocess.STDOUT, text=True)
        try:
            process.wait(timeout=max(30.0, check.time_left()))
            stopped = ""
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            stopped = " (stopped: budget)"
        output.seek(0)
        lines = output.read().splitlines()
    outcomes = {}
    for line in lines:
        match = TEST_OUTCOME.match(line)
        if match:
            outcomes[match.group(1)] = match.group(2)
    selected = next((int(m.group(1)) for m in map(SELECTED.search, lines) if m), len(outcomes))
    counts = {outcome: sum(value == outcome for value in outcomes.values()) for outcome in OUTCOMES}
    failed = [name for name, outcome in outcomes.items() if outcome in ("FAILED", "ERROR")]
    if not outcomes and not stopped and process.returncode not in (0, 5):
        report.line(f"error: pytest exited {process.returncode}: {' / '.join(lines[-3:])}")
        return
    skipped = f"{counts['SKIPPED']} skipped" + (" (skipped: no CUDA)" if not check.cuda else "")
    report.line(
        f"{selected} CUDA tests, {time.monotonic() - started:.0f} s{stopped}: {counts['PASSED']} passed, "
        f"{len(failed)} failed, {skipped}, {selected - len(outcomes)} not reached"
    )
    for name in failed[:20]:
        report.line(f"- failed: {name}")
    if check.cuda:
        check.targets.append(("the suite's CUDA tests pass", f"{counts['PASSED']} of {selected}", not failed))


OUTCOMES = ("PASSED", "FAILED", "SKIPPED", "ERROR", "XFAIL", "XPASS")
TEST_OUTCOME = re.compile(r"^(tests/\S+::\S+) (" + "|".join(OUTCOMES) + r")\b")
SELECTED = re.compile(r"collected \d+ items / \d+ deselected / (\d+) selected")


# --- 3./4. timing -----------------------------------------------------------------------------------------


def unrestricted(q, k, v, pattern, layout, dropout_p=0.0):
    return F.scaled_dot_product_attention(q, k, v)


def training_target(form: str, clip: str, training: bool) -> float | None:
    if clip == "60 s" and training:
        return TARGET_60S_TRAINING.get(form, DEFAULT_60S_TRAINING)
    return TARGET_10S if clip == "10 s" else None


def timing_cells():
    """(clip, training, dtype name, batch kind) in order of value: 60 s training first."""
    for clip, training in (("60 s", True), ("10 s", True), ("60 s", False), ("10 s", False)):
        for dtype_name in ("bfloat16", "float32"):
            for batch_kind in ("1", "fill"):
                yield clip, training, dtype_name, batch_kind


def section_attention_core(check: Check) -> None:
    report, sizes, device = check.report, check.sizes, check.device
    heads, head_dim = sizes.core_shape
    n_rows = patch_rows(sizes.arch)
    report.line(
        f"{heads} heads x {head_dim}, {n_rows} frequency rows + {N_GLOBAL} global tokens; ratio = median time / "
        "unrestricted SDPA's in the same rounds; ideal = fraction of (query, key) pairs the form allows; "
        "peak = GiB allocated during each executor's warm-up call (inputs included)"
    )
    fill_batches(check)
    row = report.table("form", "clip", "mode", "dtype", "batch", "unrestricted ms", "sparse", "flex", "masked",
                       "ideal", "peak GiB unrestricted/sparse/flex/masked", "target", "notes")
    for clip, training, dtype_name, batch_kind in timing_cells():
        frames = sizes.clips[clip]
        layout = TokenLayout.full_grid(n_rows, patch_columns(sizes.arch, frames), N_GLOBAL)
        batch = 1 if batch_kind == "1" else check.fill.get(clip)
        if batch is None:
            continue
        for form in sizes.core_forms:
            if check.time_left() <= 0:
                report.line(f"skipped: budget (from {form}, {clip}, {_mode(training)}, {dtype_name}, batch {batch} on)")
                return
            pattern = parse_rf_norm_t(form)
            runs = _core_runs(pattern, layout, batch, heads, head_dim, training, DTYPES[dtype_name], device)
            timing = time_interleaved(runs, check)
            ideal = allowed_fraction(pattern, layout)
            ratios = _ratios(timing, "unrestricted", ["sparse", "flex", "masked"])
            target = _target_cell(check, "attention core", form, clip, training, ratios, dtype_name, batch)
            row(form, clip, _mode(training), dtype_name, batch, _milliseconds(timing, "unrestricted"),
                *ratios.values(), f"{ideal:.3f}", _peaks(timing, ["unrestricted", "sparse", "flex", "masked"]), target,
                _compile_note(timing, "flex"))
            _record_fastest(check, form, dtype_name, clip, training, batch_kind, ratios)
    _print_fastest(check)


def allowed_fraction(pattern, layout: TokenLayout) -> float:
    """Fraction of (query, key) pairs the pattern allows (the FLOP limit), from the rows' token counts."""
    n_global, n_tokens = layout.n_global, layout.n_tokens
    counts = torch.bincount(layout.token_rows[n_global:], minlength=layout.n_rows).double()
    rows = torch.arange(layout.n_rows)
    patch_pairs = counts @ pattern.allowed_rows(rows, rows, layout.n_rows).double() @ counts
    global_pairs = n_global * n_tokens + (n_tokens - n_global) * n_global
    return (patch_pairs.item() + global_pairs) / n_tokens**2


def _core_runs(pattern, layout, batch, heads, head_dim, training, dtype, device) -> dict[str, Callable[[], None]]:
    """One closure per executor on shared q, k, v laid out as the transformer block hands them over
    (tokens-major memory, heads interleaved); training adds the backward pass to q, k and v."""
    shape = (batch, layout.n_tokens, heads, head_dim)
    leaves = [torch.randn(shape, device=device, dtype=dtype, requires_grad=training) for _ in range(3)]
    grad = torch.randn(batch, heads, layout.n_tokens, head_dim, device=device, dtype=dtype)
    executors = {"unrestricted": unrestricted, **EXECUTORS}

    def make(executor) -> Callable[[], None]:
        def run() -> None:
            for leaf in leaves:
                leaf.grad = None
            q, k, v = (leaf.transpose(1, 2) for leaf in leaves)
            if training:
                executor(q, k, v, pattern, layout, 0.0).backward(grad)
            else:
                with torch.no_grad():
                    executor(q, k, v, pattern, layout, 0.0)

        return run

    return {name: make(executor) for name, executor in executors.items()}


def section_whole_model(check: Check) -> None:
    report, sizes, device = check.report, check.sizes, check.device
    report.line(
        f"{sizes.arch}; training step = forward, loss, backward, AdamW step; bfloat16 = autocast; ratio = median "
        "time / the unrestricted model's in the same rounds; peak = GiB allocated during each variant's "
        "warm-up call (weights and optimizer state included)"
    )
    fill_batches(check)
    row = report.table("form", "clip", "mode", "dtype", "batch", "unrestricted ms", "sparse", "flex", "masked",
                       "peak GiB unrestricted/sparse/flex/masked", "target", "notes")
    for clip, training, dtype_name, batch_kind in timing_cells():
        batch = 1 if batch_kind == "1" else check.fill.get(clip)
        if batch is None:
            continue
        model, optimizer = model_for(check, clip)
        x = torch.randn(batch, 1, MEL_BINS, sizes.clips[clip], device=device)
        for index, form in enumerate(sizes.model_forms):
            if check.time_left() <= 0:
                report.line(f"skipped: budget (from {form}, {clip}, {_mode(training)}, {dtype_name}, batch {batch} on)")
                return
            pattern = parse_rf_norm_t(form)
            variants = {"unrestricted": (parse_rf_norm_t(""), masked_attention), "sparse": (pattern, sparse_attention),
                        "flex": (pattern, flex_attention_executor)}
            if index == 0:  # the masked reference costs the same for every form
                variants["masked"] = (pattern, masked_attention)
            runs = {
                name: _model_step(model, optimizer, variant_pattern, executor, x, training, DTYPES[dtype_name])
                for name, (variant_pattern, executor) in variants.items()
            }
            timing = time_interleaved(runs, check)
            ratios = _ratios(timing, "unrestricted", ["sparse", "flex", "masked"])
            if index:
                ratios["masked"] = "-"
            target = _target_cell(check, "whole model", form, clip, training, ratios, dtype_name, batch)
            row(form, clip, _mode(training), dtype_name, batch, _milliseconds(timing, "unrestricted"),
                *ratios.values(), _peaks(timing, ["unrestricted", "sparse", "flex", "masked"]), target,
                _compile_note(timing, "flex"))
        del x


def model_for(check: Check, clip: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """One model (and its AdamW) per clip length, unrestricted; variants swap each block's pattern and executor."""
    if clip not in check.models:
        torch.manual_seed(0)
        frames = check.sizes.clips[clip]
        model = get_model(arch=check.sizes.arch, n_classes=527, input_tdim=frames, rf_norm_t="").to(check.device)
        check.models[clip] = (model, torch.optim.AdamW(model.parameters(), lr=1e-6))
    return check.models[clip]


def set_attention(model: torch.nn.Module, pattern, executor) -> None:
    for block in model.blocks:
        block.attn.pattern = pattern
        block.attn.executor = executor


def _model_step(model, optimizer, pattern, executor, x, training: bool, dtype) -> Callable[[], None]:
    def run() -> None:
        set_attention(model, pattern, executor)
        model.train(training)
        optimizer.zero_grad(set_to_none=True)  # also after a step that failed half-way
        autocast = torch.autocast(x.device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
        if training:
            with autocast:
                logits = model(x)[0]
            logits.float().square().mean().backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        else:
            with torch.no_grad(), autocast:
                model(x)

    return run


def fill_batches(check: Check) -> None:
    """For each clip length, once: the batch whose float32 training step is estimated to peak at 70 % of
    the GPU's memory, from the peaks at batch 1 and 2 (memory grows linearly with the batch); 2 off the GPU."""
    for clip in check.sizes.clips:
        if clip in check.fill:
            continue
        if not check.cuda:
            check.fill[clip] = 2
            check.report.line(f"batch that fills the GPU, {clip}: skipped: no CUDA (the smoke run uses 2)")
        elif check.time_left() <= 0:
            check.report.line(f"batch that fills the GPU, {clip}: skipped: budget (its rows are left out)")
        else:
            _find_fill_batch(check, clip)


def _find_fill_batch(check: Check, clip: str) -> None:
    model, optimizer = model_for(check, clip)
    peaks = []
    for batch in (1, 1, 2):  # the first step allocates the optimizer state
        x = torch.randn(batch, 1, MEL_BINS, check.sizes.clips[clip], device=check.device)
        step = _model_step(model, optimizer, parse_rf_norm_t(""), masked_attention, x, True, torch.float32)
        torch.cuda.reset_peak_memory_stats(check.device)
        step()
        synchronize(check.device)
        peaks.append(torch.cuda.max_memory_allocated(check.device))
        del x
    per_clip = max(peaks[2] - peaks[1], 1)
    total = torch.cuda.get_device_properties(check.device).total_memory
    check.fill[clip] = max(1, int((MEMORY_FILL * total - (peaks[1] - per_clip)) // per_clip))
    check.report.line(
        f"batch that fills the GPU, {clip}: {check.fill[clip]} (float32 training step of the unrestricted model: "
        f"{(peaks[1] - per_clip) / 2**30:.2f} GiB + {per_clip / 2**30:.3f} GiB per clip; "
        f"{MEMORY_FILL:.0%} of {total / 2**30:.0f} GiB)"
    )


def _mode(training: bool) -> str:
    return "training" if training else "inference"


def _ratios(timing: Timing, base: str, names: list[str]) -> dict[str, str]:
    cells = {}
    for name in names:
        if name in timing.failed:
            cells[name] = timing.failed[name]
        elif name in timing.seconds and base in timing.seconds:
            cells[name] = f"{timing.seconds[name] / timing.seconds[base]:.3f}"
        else:
            cells[name] = "-"
    return cells


def _milliseconds(timing: Timing, name: str) -> str:
    if name in timing.seconds:
        return f"{timing.seconds[name] * 1e3:.2f} (x{timing.rounds})"
    return timing.failed.get(name, "-")


def _peaks(timing: Timing, names: list[str]) -> str:
    if not timing.peak_gib:
        return "skipped: no CUDA"
    return " / ".join(f"{timing.peak_gib[name]:.2f}" if name in timing.peak_gib else "-" for name in names)


def _target_cell(check, where, form, clip, training, ratios, dtype_name, batch) -> str:
    limit = training_target(form, clip, training)
    if limit is None:
        return ""
    verdicts = []
    for name in ("sparse", "flex"):
        try:
            ratio = float(ratios[name])
        except ValueError:
            continue
        figure = f"{where}, {form}, {clip}, {_mode(training)}, {dtype_name}, batch {batch}, {name}: {ratio:.3f}"
        verdicts.append(f"{name} {check.verdict(f'{where} ratio <= {limit:.2f}', figure, ratio <= limit)}")
    return f"<= {limit:.2f}: " + ", ".join(verdicts)


def _compile_note(timing: Timing, name: str) -> str:
    """A warm-up call far slower than the timed ones: the first call of a compiled kernel."""
    if name in timing.seconds and timing.warmup.get(name, 0.0) > 5 * timing.seconds[name] + 1.0:
        return f"{name} warm-up {timing.warmup[name]:.1f} s (compiling)"
    return ""


def _record_fastest(check, form, dtype_name, clip, training, batch_kind, ratios) -> None:
    timed = {name: float(value) for name, value in ratios.items() if _is_number(value)}
    cell = f"{'train' if training else 'infer'} b{batch_kind}: "
    cell += f"{min(timed, key=timed.get)} {min(timed.values()):.3f}" if timed else "-"
    check.fastest.setdefault((form, dtype_name, clip), []).append(cell)


def _print_fastest(check: Check) -> None:
    check.report.line()
    check.report.line(
        "Fastest restricted executor per form, dtype and clip (ratio to unrestricted; b1 = batch 1, "
        "bfill = the batch that fills the GPU): the measurement to set attention_impl='auto' on CUDA from"
    )
    row = check.report.table("form", "dtype", "clip", "fastest (sparse = sdpa blocks, flex, masked)")
    for (form, dtype_name, clip), cells in sorted(check.fastest.items()):
        row(form, dtype_name, clip, "; ".join(cells))


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


# --- 5. mixed precision demo trainings --------------------------------------------------------------------

PRECISIONS = {"float32": None, "bf16-mixed": "bf16-mixed", "16-mixed": "16-mixed"}


def section_mixed_precision(check: Check) -> None:
    """The trainings run at once (one small model each on one GPU; the first builds the demo cache under a
    lock while the others wait), so the section takes the time of the slowest; the budget stops them."""
    report, sizes = check.report, check.sizes
    options = " ".join(sizes.demo_options)
    report.line(f"python ex_dcase20.py -F <tmp> with {options} seed=1 [trainer.precision=...]: demo data, "
                "GPU when present, the runs side by side")
    row = report.table("precision", "accuracy", "key", "wall time", "difference to float32", "target")
    labels = [label for label, precision in PRECISIONS.items() if check.cuda or precision is None]
    with tempfile.TemporaryDirectory() as folder:
        runs = run_demos(Path(folder), labels, sizes.demo_options, check)
        accuracies: dict[str, float] = {}
        for label in PRECISIONS:
            run = runs.get(label)
            if run is None:
                row(label, "skipped: no CUDA", "", "", "", "")
                continue
            minutes = f"{(run.finished or time.monotonic()) - run.started:.0f} s"
            if run.finished is None:
                row(label, "stopped: budget", "", minutes, "", "")
                continue
            if run.process.returncode != 0:
                tail = run.log.read_text().strip().splitlines()[-1:] or [""]
                row(label, f"error: exit {run.process.returncode}: {tail[0][:160]}", "", minutes, "", "")
                continue
            metrics = json.loads(next((Path(folder) / label).glob("*/metrics.json")).read_text())
            key = "test/acc" if "test/acc" in metrics else "val/acc"
            accuracies[label] = metrics[key]["values"][-1]
            difference, target = "", ""
            if label != "float32" and "float32" in accuracies:
                points = 100 * (accuracies[label] - accuracies["float32"])
                difference = f"{points:+.1f} points"
                figure = f"{label} {100 * accuracies[label]:.1f} % vs float32 {100 * accuracies['float32']:.1f} %"
                met = abs(points) <= ACCURACY_POINTS
                target = f"within {ACCURACY_POINTS:g} points: " + check.verdict("mixed precision accuracy", figure, met)
            row(label, f"{100 * accuracies[label]:.1f} %", key, minutes, difference, target)


@dataclass
class DemoRun:
    """One demo training in a subprocess; finished: when it was seen to end (None: stopped at the budget)."""

    process: subprocess.Popen
    log: Path
    started: float
    finished: float | None = None


def run_demos(folder: Path, labels: list[str], options: tuple[str, ...], check: Check) -> dict[str, DemoRun]:
    env = {**os.environ, "FRITO_CACHE_DIR": str(folder / "cache")}
    runs = {}
    for label in labels:
        command = [sys.executable, "ex_dcase20.py", "-F", str(folder / label), "with", *options, "seed=1"]
        if PRECISIONS[label]:
            command.append(f"trainer.precision={PRECISIONS[label]}")
        log = folder / f"{label}.log"
        with log.open("w") as output:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT)
        runs[label] = DemoRun(process, log, time.monotonic())
    while any(run.finished is None for run in runs.values()) and check.time_left() > 0:
        time.sleep(0.5)
        for run in runs.values():
            if run.finished is None and run.process.poll() is not None:
                run.finished = time.monotonic()
    for run in runs.values():
        if run.finished is None:
            run.process.kill()
            run.process.wait()
    return runs


# --- the report -------------------------------------------------------------------------------------------

SECTIONS = {
    "exactness": ("1. Exactness of every executor against the masked reference", section_exactness),
    "tests": ("2. The suite's CUDA tests", section_cuda_tests),
    "core": ("3. Attention core: time and memory against unrestricted attention", section_attention_core),
    "model": ("4. Whole model (PaSST-S): time and memory against the unrestricted model", section_whole_model),
    "demo": ("5. Mixed-precision demo trainings against float32", section_mixed_precision),
}


def environment(check: Check, smoke: bool) -> None:
    report = check.report
    report.line("# frito GPU check")
    report.line()
    report.line(f"- date: {datetime.datetime.now(datetime.UTC):%Y-%m-%d %H:%M} UTC")
    if check.cuda:
        properties = torch.cuda.get_device_properties(check.device)
        report.line(
            f"- GPU: {properties.name}, {properties.total_memory / 2**30:.0f} GiB, compute capability "
            f"{properties.major}.{properties.minor}"
        )
    else:
        report.line("- GPU: none (skipped: no CUDA)" + ("; smoke run: tiny sizes on the CPU" if smoke else ""))
    report.line(f"- torch {torch.__version__}, CUDA {torch.version.cuda or 'none'}, float32 matmul precision "
                f"'{torch.get_float32_matmul_precision()}'")
    report.line(f"- budget: {check.budget_s:.0f} s; shares of what is left: "
                + ", ".join(f"{name} {share:.0%}" for name, share in SECTION_SHARES.items()))


def run_check(args: argparse.Namespace) -> Report:
    smoke = args.smoke or not torch.cuda.is_available()
    device = torch.device("cuda" if torch.cuda.is_available() and not args.smoke else "cpu")
    if device.type == "cuda":  # one process compiles flex for many shapes, dtypes and grad modes
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    check = Check(SMOKE_SIZES if smoke else GPU_SIZES, device, Report(Path(args.out)), args.budget_s)
    environment(check, smoke)
    chosen = [name for name in SECTIONS if name in args.sections]
    for index, name in enumerate(chosen):
        title, section = SECTIONS[name]
        left = check.budget_s - (time.monotonic() - check.start)
        shares = [SECTION_SHARES[later] for later in chosen[index:]]
        check.section_end = time.monotonic() + max(0.0, left) * SECTION_SHARES[name] / sum(shares)
        check.report.line()
        check.report.line(f"## {title}")
        check.report.line()
        if left <= 0:
            check.report.line("skipped: budget")
            continue
        started = time.monotonic()
        try:
            section(check)
        except Exception as error:  # the other sections still run and report
            check.report.line(f"error: {type(error).__name__}: {_first_line(error)}")
        check.report.line(f"({time.monotonic() - started:.0f} s)")
    summary(check)
    return check.report


def summary(check: Check) -> None:
    report = check.report
    report.line()
    report.line("## Targets")
    report.line()
    if not check.cuda:
        report.line("skipped: no CUDA (smoke run: no target is judged)")
    by_target: dict[str, list[tuple[str, bool]]] = {}
    for target, figure, met in check.targets:
        by_target.setdefault(target, []).append((figure, met))
    for target, results in by_target.items():
        missed = [figure for figure, met in results if not met]
        report.line(f"- {target}: {len(results) - len(missed)} met, {len(missed)} missed")
        for figure in missed[:30]:
            report.line(f"  - missed: {figure}")
    report.line()
    report.line(f"finished in {time.monotonic() - check.start:.0f} s (budget {check.budget_s:.0f} s)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="gpu_check_report.md", help="the report, also printed")
    parser.add_argument("--budget-s", type=float, default=420.0, help="seconds for all sections together")
    parser.add_argument("--sections", nargs="+", choices=list(SECTIONS), default=list(SECTIONS))
    parser.add_argument("--smoke", action="store_true", help="every section on the CPU with tiny sizes")
    run_check(parser.parse_args(argv))


if __name__ == "__main__":
    main()
