"""Timing for the attention-core and whole-model sections: variants interleaved in one process with their
peak memory, the batch that fills the GPU, the whole model they share, and the cells of their tables.

Targets: training at 60 s at most 0.60 of unrestricted (per_row_1 0.35); nothing slower than unrestricted
at 10 s (training and inference).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from benchmarks.gpu.check import MEL_BINS, Check, first_line, not_implemented
from helpers.training.step_timing import synchronize, training_step
from models.attention import masked_attention
from models.passt import get_model
from models.patterns import parse_rf_norm_t

TARGET_60S_TRAINING = {"per_row_1": 0.35}  # other restricted forms: DEFAULT_60S_TRAINING
DEFAULT_60S_TRAINING = 0.60
TARGET_10S = 1.0
MEMORY_FILL = 0.7  # the batch that fills the GPU: estimated peak of a float32 training step at 70 % of its memory
N_CLASSES = 527


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
        timing.failed[name] = f"n/a: {not_implemented(error)}"
    except torch.cuda.OutOfMemoryError:
        timing.failed[name] = "out of memory"
        torch.cuda.empty_cache()
    except Exception as error:  # reported in the table; the other variants still run
        timing.failed[name] = f"error: {type(error).__name__}: {first_line(error)}"
    return False


def timing_cells() -> Iterator[tuple[str, bool, str, str]]:
    """(clip, training, dtype name, batch kind) in order of value: 60 s training first."""
    for clip, training in (("60 s", True), ("10 s", True), ("60 s", False), ("10 s", False)):
        for dtype_name in ("bfloat16", "float32"):
            for batch_kind in ("1", "fill"):
                yield clip, training, dtype_name, batch_kind


# --- the whole model, shared by both sections -------------------------------------------------------------


def model_for(check: Check, clip: str) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    """One model (and its AdamW) per clip length, unrestricted; variants swap each block's pattern and executor."""
    if clip not in check.models:
        torch.manual_seed(0)
        frames = check.sizes.clips[clip]
        model = get_model(arch=check.sizes.arch, n_classes=N_CLASSES, input_tdim=frames, rf_norm_t="")
        model.to(check.device)
        check.models[clip] = (model, torch.optim.AdamW(model.parameters(), lr=1e-6))
    return check.models[clip]


def model_step(model, optimizer, pattern, executor, x, training: bool, dtype: torch.dtype) -> Callable[[], None]:
    """One training step (:func:`helpers.training.step_timing.training_step`) or inference call of ``model`` on ``x``
    with ``pattern`` run by ``executor`` in every block; bfloat16 as autocast. Gradients are dropped
    first, also those a step that failed half-way left behind."""
    autocast_dtype = None if dtype == torch.float32 else dtype
    labels = torch.randint(N_CLASSES, (x.shape[0],), device=x.device)
    step = training_step(model, x, labels, optimizer, autocast_dtype)

    def run() -> None:
        for block in model.blocks:
            block.attn.pattern = pattern
            block.attn.executor = executor
        model.train(training)
        optimizer.zero_grad(set_to_none=True)
        if training:
            step()
            return
        autocast = torch.autocast(x.device.type, dtype=autocast_dtype) if autocast_dtype else contextlib.nullcontext()
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
        step = model_step(model, optimizer, parse_rf_norm_t(""), masked_attention, x, True, torch.float32)
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


# --- table cells ------------------------------------------------------------------------------------------


def mode(training: bool) -> str:
    return "training" if training else "inference"


def ratios(timing: Timing, base: str, names: list[str]) -> dict[str, str]:
    """Cells of each variant's median time over ``base``'s, or why it has none."""
    cells = {}
    for name in names:
        if name in timing.failed:
            cells[name] = timing.failed[name]
        elif name in timing.seconds and base in timing.seconds:
            cells[name] = f"{timing.seconds[name] / timing.seconds[base]:.3f}"
        else:
            cells[name] = "-"
    return cells


def milliseconds(timing: Timing, name: str) -> str:
    if name in timing.seconds:
        return f"{timing.seconds[name] * 1e3:.2f} (x{timing.rounds})"
    return timing.failed.get(name, "-")


def peaks(timing: Timing, names: list[str]) -> str:
    if not timing.peak_gib:
        return "skipped: no CUDA"
    return " / ".join(f"{timing.peak_gib[name]:.2f}" if name in timing.peak_gib else "-" for name in names)


def training_target(form: str, clip: str, training: bool) -> float | None:
    """The highest ratio to unrestricted the target allows here; None where there is no target."""
    if clip == "60 s" and training:
        return TARGET_60S_TRAINING.get(form, DEFAULT_60S_TRAINING)
    return TARGET_10S if clip == "10 s" else None


def target_cell(check: Check, where: str, form: str, clip: str, training: bool, cells: dict[str, str],
                dtype_name: str, batch: int) -> str:
    """The sparse and flex ratios judged against :func:`training_target` (recorded for the summary)."""
    limit = training_target(form, clip, training)
    if limit is None:
        return ""
    verdicts = []
    for name in ("sparse", "flex"):
        if not is_number(cells[name]):
            continue
        ratio = float(cells[name])
        figure = f"{where}, {form}, {clip}, {mode(training)}, {dtype_name}, batch {batch}, {name}: {ratio:.3f}"
        verdicts.append(f"{name} {check.verdict(f'{where} ratio <= {limit:.2f}', figure, ratio <= limit)}")
    return f"<= {limit:.2f}: " + ", ".join(verdicts)


def compile_note(timing: Timing, name: str) -> str:
    """A warm-up call far slower than the timed ones: the first call of a compiled kernel."""
    if name in timing.seconds and timing.warmup.get(name, 0.0) > 5 * timing.seconds[name] + 1.0:
        return f"{name} warm-up {timing.warmup[name]:.1f} s (compiling)"
    return ""


def is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False
