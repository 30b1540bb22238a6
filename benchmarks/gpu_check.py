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
   attention_impl "auto" and "sparse" run), ``flex`` (models.flex_attention, attention_impl "flex") and
   ``masked`` against the masked reference computed in higher precision (float64 for float32; float32 for
   bfloat16, on the same bfloat16 inputs). Errors are the largest absolute difference over the largest
   magnitude of the reference tensor. float32 passes within 1e-4; bfloat16 within 4 u, u = 2^-8
   (bfloat16's unit roundoff, 8 significant bits): four roundings of the tensor's largest value. The
   masked executor's own error in bfloat16 is the baseline of what a fused bfloat16 kernel reaches.
2. CUDA tests (15 %): the suite's tests that skip without CUDA (test files mentioning "cuda", tests
   marked skipif with a reason naming CUDA/GPU), run by pytest in a subprocess; pass/fail counts.
3. attention core (30 %): PaSST-S attention (12 heads x 64, 12 frequency rows) at 10 s and 60 s clips
   (1000 and 6000 mel frames: 1190 and 7190 tokens), training (forward + backward) and inference,
   float32 and bfloat16, batch 1 and the batch that fills the GPU, per form: unrestricted SDPA, sparse,
   flex and masked interleaved in one process (A B C D A B C D ...) after a warm-up round (which compiles
   flex), CUDA-synchronised, median; ratios to unrestricted, peak memory of each
   (torch.cuda.max_memory_allocated during its warm-up call), the fastest restricted executor per form,
   dtype and clip.
4. whole model (20 %): PaSST-S on log-mel inputs, one training step (forward, cross-entropy, backward,
   AdamW step: helpers.training.step_timing.training_step) and inference, the same clips, dtypes (bfloat16: autocast)
   and batches, each form's sparse and flex executors beside the unrestricted model (and masked
   per_row_1), interleaved in one process on one set of weights.
5. mixed precision (20 %): two epochs of the demo training (``python ex_dcase20.py``) with
   trainer.precision=bf16-mixed and 16-mixed beside float32, same seed, the three side by side on the
   GPU; their accuracy on the test split at the epoch selected on the validation split (results.json).

This module runs the sections in order within the budget and writes the report; the sections are in
benchmarks/gpu/ (exactness.py, cuda_tests.py, attention_core.py, whole_model.py, demo.py), on what they
share (benchmarks/gpu/check.py: sizes, report, budget) and the timing of sections 3 and 4
(benchmarks/gpu/timing.py).

The batch that fills the GPU: from the peak memory of a float32 training step of the unrestricted model at
batch 1 and 2, the batch whose estimated peak is 70 % of the GPU's memory (bfloat16 then fills less).

Targets, printed as met/missed beside each figure: training at 60 s at most 0.60 of unrestricted (per_row_1
0.35), judged on the attention core and, in the same words, on the whole model; nothing slower than
unrestricted at 10 s; bfloat16 within bfloat16 rounding of float32 (section 1); mixed-precision demo
trainings within 2 points of float32 accuracy.

The check only measures: attention_impl "auto" runs the sparse executor on CUDA whatever it reports; the
fastest table of section 3 is the measurement to change that from (models.sparse_choice.choose_execution).
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch

from benchmarks.gpu.attention_core import section_attention_core
from benchmarks.gpu.check import GPU_SIZES, SMOKE_SIZES, Check, Report, first_line
from benchmarks.gpu.cuda_tests import section_cuda_tests
from benchmarks.gpu.demo import section_mixed_precision
from benchmarks.gpu.exactness import section_exactness
from benchmarks.gpu.whole_model import section_whole_model

SECTION_SHARES = {"exactness": 0.15, "tests": 0.15, "core": 0.30, "model": 0.20, "demo": 0.20}

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
            check.report.line(f"error: {type(error).__name__}: {first_line(error)}")
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
