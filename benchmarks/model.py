"""Whole PaSST-S model, inference: restricted forms against the unrestricted model, side by side.

Part 1, 10 s clips (12 x 99 patch grid), batch sizes 1 and 8, one process, variants interleaved after a
warm-up, median of the repeats, as a ratio to the unrestricted model:

    no attention   every attention core replaced by its values: the floor any restriction can reach
    original       full scores + additive mask in every block (the FRITO code's execution; the same cost
                   for every form, measured with per_row_1)
    masked         the reference executor (scaled_dot_product_attention with a boolean mask)
    <form>         the sparse executor attention_impl="auto" selects

Part 2, clips of 10, 20, 30 and 60 s at batch 1: time of each variant (interleaved in one process, as in
part 1) and the peak memory of one forward pass of each variant in a fresh process (Linux: VmHWM).

Run from the repository root:  python -m benchmarks.model   (about 10 minutes on 2 CPU cores;
``--batch 1 8`` adds batch 8 to part 1, about 7 minutes more; ``--seconds 10 20`` or ``--skip-lengths``
for less).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import torch

from benchmarks.attention import median_times, original_attention
from models.passt import get_model
from models.preprocess import clip_frames

FORMS = ("per_row_1", "per_row_3", "per_row_6", "row_overlap_2", "row_overlap_4")
SAMPLE_RATE, HOP = 32000, 320
LENGTH_VARIANTS = ("unrestricted", "masked:per_row_1", *FORMS)


def frames(seconds: float) -> int:
    """Log-mel frames of a clip at PaSST-S's front-end settings (1000 for 10 s)."""
    return clip_frames(seconds, SAMPLE_RATE, HOP)


def build(variant: str, seconds: float) -> torch.nn.Module:
    """The PaSST-S model of a variant ("unrestricted", "no_attention", "original:<form>",
    "masked:<form>" or a form run by the sparse executor), sized for clips of ``seconds``."""
    impl, _, form = variant.rpartition(":")
    if variant in ("unrestricted", "no_attention"):
        impl, form = "auto", ""
    model = get_model(
        n_classes=527,
        input_tdim=max(998, frames(seconds)),
        rf_norm_t=form,
        attention_impl="masked" if impl in ("masked", "original") else "auto",
    )
    if impl == "original" or variant == "no_attention":
        executor = original_attention if impl == "original" else _values_only
        for block in model.blocks:
            block.attn.executor = executor
    return model.eval()


def _values_only(q, k, v, pattern, layout, dropout_p=0.0):
    return v


def ten_seconds(batch_sizes: list[int], repeats: int) -> None:
    """The original execution is timed in its own group with the unrestricted model (see
    benchmarks.attention.measure: its N x N buffers would slow whatever runs after them)."""
    groups = [["unrestricted", "no_attention", "masked:per_row_1", *FORMS], ["unrestricted", "original:per_row_1"]]
    columns = ["no_attention", "original:per_row_1", "masked:per_row_1", *FORMS]
    print(f"\nwhole model, 10 s clips ({frames(10)} frames), inference; ratio to the unrestricted model")
    print(f"{'batch':>5} {'unrestricted ms':>15}  " + "  ".join(f"{c.replace(':per_row_1', ''):>13}" for c in columns))
    for batch in batch_sizes:
        torch.manual_seed(0)
        x = torch.randn(batch, 1, 128, frames(10))
        ratios = {}
        for group in groups:
            times = median_times({variant: _forward(build(variant, 10), x) for variant in group}, repeats)
            ratios.update({variant: seconds / times["unrestricted"] for variant, seconds in times.items()})
            ratios.setdefault("unrestricted_seconds", times["unrestricted"])
        cells = "  ".join(f"{ratios[c]:>13.3f}" for c in columns)
        print(f"{batch:>5} {ratios['unrestricted_seconds'] * 1e3:>15.0f}  {cells}", flush=True)


def _forward(model: torch.nn.Module, x: torch.Tensor):
    def run() -> None:
        with torch.no_grad():
            model(x)

    return run


def lengths(seconds_list: list[float], variants: list[str], threads: int) -> None:
    """Per clip length: times of all variants interleaved in this process (median; 3 rounds after a
    warm-up up to 20 s, 2 rounds above, the first without warm-up at 60 s and more), then the peak
    memory of each variant's forward pass in a fresh process."""
    print(
        "\nwhole model, batch 1, inference; ratios to the unrestricted model at the same clip length. "
        "peak: peak resident memory of a fresh process running one forward pass; rise: its growth "
        "during that pass (activations)"
    )
    print(
        f"{'clip':>5} {'tokens':>6} {'variant':<18} {'s/pass':>7} {'ratio':>6} "
        f"{'peak GB':>8} {'rise GB':>8} {'rise ratio':>10}"
    )
    for seconds in seconds_list:
        torch.manual_seed(0)
        x = torch.randn(1, 1, 128, frames(seconds))
        runs = {variant: _forward(build(variant, seconds), x) for variant in variants}
        repeats, warmup = (3, 1) if seconds <= 20 else (2, 1) if seconds < 60 else (2, 0)
        times = median_times(runs, repeats, warmup)
        del runs
        memory = {variant: _child(variant, seconds, threads) for variant in variants}
        n_tokens = 2 + 12 * ((frames(seconds) - 16) // 10 + 1)
        for variant in variants:
            time_ratio = times[variant] / times["unrestricted"] if "unrestricted" in times else math.nan
            rise_ratio = (
                memory[variant]["rise_gb"] / memory["unrestricted"]["rise_gb"] if "unrestricted" in memory else math.nan
            )
            print(
                f"{seconds:>4.0f}s {n_tokens:>6} {variant:<18} {times[variant]:>7.2f} {time_ratio:>6.2f} "
                f"{memory[variant]['peak_gb']:>8.2f} {memory[variant]['rise_gb']:>8.2f} {rise_ratio:>10.2f}",
                flush=True,
            )


def _child(variant: str, seconds: float, threads: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.model", "--child", variant, str(seconds), "--threads", str(threads)]
    completed = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(completed.stdout.strip().splitlines()[-1])


def child(variant: str, seconds: float) -> None:
    """Peak memory of one forward pass of a variant, in this fresh process."""
    torch.manual_seed(0)
    model = build(variant, seconds)
    x = torch.randn(1, 1, 128, frames(seconds))
    before = _memory_gb("VmRSS")
    _forward(model, x)()
    peak = _memory_gb("VmHWM")  # the process's high-water mark; unlike ru_maxrss it starts afresh at exec
    print(json.dumps({"peak_gb": peak, "rise_gb": peak - before}))


def _memory_gb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 2**20
    raise RuntimeError(f"/proc/self/status has no {field} line (Linux only)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", nargs="+", type=int, default=[1])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds at 10 s (median)")
    parser.add_argument("--seconds", nargs="+", type=float, default=[10, 20, 30, 60])
    parser.add_argument("--variants", nargs="+", default=list(LENGTH_VARIANTS), help="variants of part 2")
    parser.add_argument("--skip-ten-seconds", action="store_true")
    parser.add_argument("--skip-lengths", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.child:
        child(args.child[0], float(args.child[1]))
        return
    print(f"PaSST-S (12 blocks, 768 wide, 12 heads), float32, cpu, {args.threads} threads")
    if not args.skip_ten_seconds:
        ten_seconds(args.batch, args.repeats)
    if not args.skip_lengths:
        lengths(args.seconds, args.variants, args.threads)


if __name__ == "__main__":
    main()
