"""Is data loading the bottleneck? Loader throughput from a prepared cache beside the tiny model's step rate.

    python -m benchmarks.loader                                    # TAU 2020 demo data, 2 s clips
    python -m benchmarks.loader nsynth --clip-length 4 --batches 40
    python -m benchmarks.loader dcase20 --base-dir ~/data/TAU2020 --clip-length 10 --arch passt_mini

Prints the clips per second a DataLoader delivers from the training split's cache with 0, 1 and 2
worker processes, and the clips per second of training steps (mel front-end, forward, backward, AdamW)
of a small PaSST on clips of the same length (GPU when there is one). Where the loader's rate is below
the training rate, the training waits for data. Both are measured alone (in a real run loader workers
and training share the CPU), each as the best of --repeats runs so that other load on the machine
disturbs the figures less.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader, RandomSampler

from datasets import dcase20, nsynth
from helpers.model_spec import ModelSpec
from helpers.training.step_timing import training_step_seconds

DATASETS = {"dcase20": dcase20, "nsynth": nsynth}


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    package = DATASETS[args.dataset]
    settings = {"base_dir": args.base_dir, "cache_dir": args.cache_dir, "clip_length": args.clip_length}
    data = package.Data(**{**package.DEFAULTS, **settings})
    data.prepare()
    train_set = data.train_set()
    cache = data.cache_files()[data.train_split]
    source = "demo data" if data.is_demo else str(data.layout.root)
    print(
        f"{args.dataset} ({source}): {len(train_set)} training clips of {data.clip_length:g} s at "
        f"{data.sample_rate} Hz from {cache} ({cache.stat().st_size / 1e6:.0f} MB, {data.audio_dtype})"
    )
    print(
        f"batches of {args.batch_size}; best of {args.repeats} runs of {args.batches} batches (after a warm-up batch)\n"
    )

    loader_rates = {
        workers: max(loader_rate(train_set, args.batch_size, args.batches, workers) for _ in range(args.repeats))
        for workers in args.workers
    }
    train_rate, device = training_rate(data, next(iter(DataLoader(train_set, batch_size=args.batch_size))), args)
    for workers, rate in loader_rates.items():
        print(f"loader, {workers} workers:  {rate:8.1f} clips/s  ({rate / train_rate:5.1f}x the training rate)")
    print(f"training steps, {args.arch} on {device}: {train_rate:8.1f} clips/s")


def loader_rate(dataset, batch_size: int, batches: int, workers: int) -> float:
    """Clips per second over `batches` shuffled batches, after a first batch that absorbs worker start-up."""
    sampler = RandomSampler(dataset, replacement=True, num_samples=(batches + 1) * batch_size)
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=workers)
    iterator = iter(loader)
    next(iterator)
    start = time.perf_counter()
    for _ in range(batches):
        next(iterator)
    return batches * batch_size / (time.perf_counter() - start)


def training_rate(data, batch: dict, args: argparse.Namespace) -> tuple[float, str]:
    """Clips per second of training steps on one batch of real clips."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec = ModelSpec.of(args.arch, data.clip_length, len(data.class_names), data.sample_rate)
    model = spec.build().to(device)
    waveform, labels = batch["waveform"].to(device), batch["label"].to(device)
    seconds = training_step_seconds(model, waveform, labels, args.steps, repeats=args.repeats, warm_up_steps=1)
    return len(waveform) / seconds, device.type


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", nargs="?", choices=sorted(DATASETS), default="dcase20")
    parser.add_argument("--base-dir", default=None, help="the downloaded dataset (default: the demo data)")
    parser.add_argument(
        "--cache-dir", default=None, help="where caches are (default: $FRITO_CACHE_DIR or ~/.cache/frito)"
    )
    parser.add_argument("--clip-length", type=float, default=None, help="seconds (default: the dataset's own)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=30, help="timed loader batches per worker count")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--arch", default="passt_tiny", help="a models.passt architecture")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement; the fastest counts")
    return parser


if __name__ == "__main__":
    main()
