"""The demo preset's training step: every form against unrestricted attention, side by side in one process.

The size a user's first runs have (the CPU preset ``cpu_tiny``: passt_mini, 2 s clips = 128 x 200 log-mel
frames, batch 16): for each form, the whole training step (front-end, network, cross-entropy, backward, AdamW
step; no patchout) with ``attention_impl="auto"`` and with the dense masked call, timed interleaved with the
unrestricted model after a warm-up, median of the rounds. Prints spectrograms per second and the ratio to
the unrestricted model timed in the same rounds.

    python -m benchmarks.demo_training        # about 2 minutes on 2 cores
"""

from __future__ import annotations

import argparse

import torch

from benchmarks.attention import median_times
from helpers.model_spec import ModelSpec
from helpers.training.step_timing import training_step

FORMS = ("row_overlap_8", "row_overlap_2", "per_row_1", "per_row_3", "high_low")
ARCH, SECONDS, BATCH = "passt_mini", 2.0, 16


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--forms", nargs="+", default=list(FORMS))
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds (median)")
    parser.add_argument("--steps", type=int, default=3, help="training steps per timed round")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"training step of {ARCH}, {SECONDS:g} s clips, batch {BATCH}, no patchout, {args.threads} threads, "
          f"torch {torch.__version__}; median of {args.repeats} interleaved rounds of {args.steps} steps")
    print(f"{'rf_norm_t':<15} {'auto spec/s':>11} {'auto / unr':>10} {'masked spec/s':>13} {'masked / unr':>12}")
    for form in args.forms:
        steps = {name: _steps(form if name != "unrestricted" else "", impl, args.steps)
                 for name, impl in (("unrestricted", "auto"), ("auto", "auto"), ("masked", "masked"))}
        times = median_times(steps, args.repeats)
        rate = {name: BATCH * args.steps / seconds for name, seconds in times.items()}
        print(f"{form:<15} {rate['auto']:>11.1f} {rate['auto'] / rate['unrestricted']:>10.2f} "
              f"{rate['masked']:>13.1f} {rate['masked'] / rate['unrestricted']:>12.2f}   "
              f"(unrestricted {rate['unrestricted']:.1f})", flush=True)


def _steps(form: str, attention_impl: str, steps: int):
    spec = ModelSpec.of(ARCH, SECONDS, n_classes=10, rf_norm_t=form, attention_impl=attention_impl)
    model = spec.build().train()
    waveform = torch.randn(BATCH, spec.clip_samples)
    labels = torch.randint(0, 10, (BATCH,))
    step = training_step(model, waveform, labels, torch.optim.AdamW(model.parameters(), lr=1e-5))

    def run() -> None:
        for _ in range(steps):
            step()

    return run


if __name__ == "__main__":
    main()
