"""The cost of each DG method per training step, as a ratio to the step without any method, side by side.

One training step as the training module runs it (helpers.training.classifier.AudioClassifier.training_step):
waveform -> front-end (training mode, filterbank jitter) -> spectrogram-place methods -> batch-place methods ->
input transform (input-place methods) -> network -> the batch's criterion (+ loss-place losses) -> backward ->
AdamW step. The variants are read from the registry (helpers.augment.registry.METHODS), so a method registered
later is timed without editing this script: the baseline (every method off, SpecAugment's masks included), and
for each method of the spectrogram, batch, input and loss places each of its named configs (those that turn it
on) or, without one, its defaults with its strength at 1. Waveform-place methods act in the data loader's
workers, not in the step, and need files (impulse responses): they are listed as skipped.

All variants share one network, front-end and AdamW optimiser (the methods' own modules are built per variant,
a loss-place method's parameters are added to the optimiser), and are timed interleaved in one process after a
warm-up round: in every round each variant runs one step, the order rotated from round to round (so no variant
always follows the same one), and a variant's ratio is the median over rounds of its time over the baseline's in
the same round: paired, so that load which drifts between rounds (a shared machine) cancels. The table gives
the median seconds per step of the baseline and those ratios, with their range over the rounds.

Run from the repository root:

    python -m benchmarks.dg_methods            # passt_mini (2 s, batch 16) and PaSST-S (10 s, batch 2), ~10 min
    python -m benchmarks.dg_methods --quick    # passt_mini only, batch 4, 3 rounds: a smoke run of seconds
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from helpers.augment.method import Place, RunContext
from helpers.augment.places import TrainingMethods
from helpers.augment.registry import (
    METHODS,
    active_settings,
    build_methods,
    config_defaults,
    input_transform,
    switched_strengths,
)
from helpers.model_spec import ModelSpec
from helpers.training.step_timing import synchronize
from models.audio_model import AudioModel

STEP_PLACES = (Place.SPECTROGRAM, Place.BATCH, Place.INPUT, Place.LOSS)
N_CLASSES = 10  # TAU 2020's scenes
DOMAINS = ["a", "b", "c", "s1", "s2", "s3", "s4", "s5", "s6"]  # TAU 2020's devices; the first six trained on


@dataclass(frozen=True)
class Setup:
    """One model size to time: architecture, clip length (s), batch size, timed rounds."""

    arch: str
    seconds: float
    batch: int
    repeats: int


FULL = (Setup("passt_mini", 2.0, 16, 15), Setup("passt_s_swa_p16_128_ap476", 10.0, 2, 5))
QUICK = (Setup("passt_mini", 2.0, 4, 3),)


def baseline_config() -> dict:
    """Every method's defaults with every strength at 0."""
    config = config_defaults()
    config.update({method.key(method.strength): 0.0 for method in METHODS.values()})
    return config


def variants() -> tuple[dict[str, dict], list[str]]:
    """Variant name -> config (the baseline's plus one method's named config), and the methods skipped with why."""
    found, skipped = {"baseline": baseline_config()}, []
    for name, method in METHODS.items():
        if method.place not in STEP_PLACES:
            skipped.append(f"{name} ({method.place.value} place: in the data loader, not the training step)")
            continue
        diffs = dict(method.named_configs) or {name: ("", {method.key(method.strength): 1.0})}
        for named, (_, updates) in diffs.items():
            config = {**baseline_config(), **updates}
            config.update(switched_strengths(config))
            if name in active_settings(config):  # "nomixup" and the like turn nothing on
                found[named] = config
    return found, skipped


def training_step(model: AudioModel, sample_rate: int, config: dict, waveform: torch.Tensor, batch: dict,
                  optimizer: torch.optim.Optimizer) -> Callable[[], None]:
    """One training step of a variant as a closure (see the module docstring); its loss modules' parameters are
    added to ``optimizer``."""
    active = active_settings(config)
    context = RunContext(sample_rate=sample_rate, dataset={}, domain_names=DOMAINS, seen_domains=DOMAINS[:6],
                         domain_kind="device", embedding_size=model.net.embed_dim)
    built = build_methods(active, context, (Place.SPECTROGRAM, Place.BATCH, Place.LOSS))
    methods = TrainingMethods(built[Place.SPECTROGRAM], built[Place.BATCH], built[Place.LOSS])
    if list(methods.parameters()):
        optimizer.add_param_group({"params": list(methods.parameters())})
    variant = AudioModel(model.front_end, model.net, input_transform(active)).train()

    def step() -> None:
        x, criterion = methods.augment(variant.spectrogram(waveform))
        logits, embedding = variant.classify(x)
        extra_loss, _ = methods.extra_loss(embedding, batch)
        loss = criterion(logits, batch["label"]).mean() + extra_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def measure(setup: Setup, configs: dict[str, dict]) -> dict[str, list[float]]:
    """Seconds per training step of every variant on one model size, one entry per timed round (see the module
    docstring)."""
    torch.manual_seed(0)
    spec = ModelSpec.of(setup.arch, setup.seconds, n_classes=N_CLASSES)
    model = spec.build()
    waveform = torch.randn(setup.batch, spec.clip_samples) * 0.1
    batch = {"label": torch.arange(setup.batch) % N_CLASSES, "domain": torch.arange(setup.batch) % 6,
             "index": torch.arange(setup.batch)}
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    steps = {name: training_step(model, spec.sample_rate, config, waveform, batch, optimizer)
             for name, config in configs.items()}
    for step in steps.values():  # warm-up round
        step()
    names, times = list(steps), {name: [] for name in steps}
    for round_ in range(setup.repeats):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            synchronize(waveform.device)
            start = time.perf_counter()
            steps[name]()
            synchronize(waveform.device)
            times[name].append(time.perf_counter() - start)
    return times


def ratios(times: dict[str, list[float]]) -> dict[str, tuple[float, float, float]]:
    """Variant -> (median, lowest, highest) over rounds of its time over the baseline's in the same round."""
    paired = {name: [mine / base for mine, base in zip(values, times["baseline"], strict=True)]
              for name, values in times.items() if name != "baseline"}
    return {name: (statistics.median(values), min(values), max(values)) for name, values in paired.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="passt_mini only, batch 4, 3 rounds (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per model size (default: 15 / 5)")
    arguments = parser.parse_args()
    configs, skipped = variants()
    print(f"# DG methods per training step, {datetime.date.today()}, torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, float32")
    print(f"variants: {', '.join(configs)}; skipped: {', '.join(skipped) or 'none'}")
    setups = QUICK if arguments.quick else FULL
    rows = {}
    for setup in setups:
        if arguments.repeats:
            setup = replace(setup, repeats=arguments.repeats)
        times = measure(setup, configs)
        rows[setup] = (statistics.median(times["baseline"]), ratios(times))
        cells = [f"{name} {median:.3f} ({low:.2f}-{high:.2f})" for name, (median, low, high) in rows[setup][1].items()]
        print(f"{setup.arch} ({setup.seconds:g} s, batch {setup.batch}, {setup.repeats} rounds): baseline "
              f"{rows[setup][0] * 1e3:.0f} ms/step; " + ", ".join(cells), flush=True)
    print("\n| variant | " + " | ".join(f"{s.arch} ({s.seconds:g} s, batch {s.batch})" for s in rows) + " |")
    print("|---|" + "---:|" * len(rows))
    print("| baseline, ms/step | " + " | ".join(f"{rows[s][0] * 1e3:.0f}" for s in rows) + " |")
    for name in configs:
        if name != "baseline":
            print(f"| {name} | " + " | ".join("{:.3f} ({:.2f}-{:.2f})".format(*rows[s][1][name]) for s in rows) + " |")

if __name__ == "__main__":
    main()
