"""HEAR embeddings per second: frito's HEAR API (helpers.hear) against hear21passt's, same weights, side by side.

Both compute PaSST-S (passt_s_swa_p16_128_ap476, 527 classes, unrestricted attention) with PaSST's front-end at
32 kHz and the same weights: hear21passt's network is built without its pretrained download
(``get_model(..., pretrained=False)``, random initial weights), and its state dict, in the PaSST release format, is
loaded into frito's network (models.pretrained.load_pretrained) and written as a frito checkpoint, which
helpers.hear.load_model reads. hear21passt runs as its ``hear21passt.base`` module does (PasstBasicWrapper, "all"
mode: logits then embedding, the layout helpers.hear uses too). Before timing, the two are checked to agree where
they compute the same thing: the scene embedding of a 10 s sound (one window in both) and the timestamp
embeddings whose windows lie inside the sound (at the ends hear21passt pads by reflection, frito with silence).

Workloads, one sound each, small because a forward pass of PaSST-S over 10 s takes 5 to 20 s on a shared 2-core
CPU (a sound longer than 10 s costs hear21passt a 10 s window every 2.5 s, frito one every 5 s, and is not timed):
- timestamps: get_timestamp_embeddings of 4 s, every 50 ms from 160 ms windows in both (81 embeddings).
  hear21passt runs one forward pass per timestamp; frito scores the windows of all timestamps together, in
  passes of up to 1000 windows (here one).
- scene: get_scene_embeddings of 10 s: one window, one forward pass in both.

The agreement check runs every timed call once (the warm-up); then the calls are timed interleaved, the order
rotated from round to round. The table gives the median over rounds of embeddings per second and frito's
speed-up, the median of the per-round ratios (paired, so that load drifting between rounds on a shared machine
cancels).

hear21passt is not a requirement of frito. It needs torchaudio, whose newest release (2.11.1) is built for an
older torch but whose parts hear21passt uses (its kaldi filterbank, its SpecAugment masks) are plain Python. Install
both without dependencies, into the environment or a folder on PYTHONPATH, and run from the repository root:

    pip install --no-deps --target /tmp/hear21passt_site hear21passt==0.0.26 torchaudio==2.11.1
    PYTHONPATH=/tmp/hear21passt_site python -m benchmarks.hear              # 2 rounds, about 3 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

import helpers.hear as frito_hear
from helpers.checkpoint import NETWORK_PREFIXES, checkpoint_entry
from helpers.model_spec import ModelSpec
from models.pretrained import load_pretrained

ARCH = "passt_s_swa_p16_128_ap476"
N_CLASSES = 527  # AudioSet's, as hear21passt's head
RATE = 32000
WORKLOADS = {"timestamps": (1, 4.0), "scene": (1, 10.0)}  # name -> (sounds, seconds)
INSTALL = "pip install --no-deps --target /tmp/hear21passt_site hear21passt==0.0.26 torchaudio==2.11.1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="timed rounds (default 2)")
    arguments = parser.parse_args()
    try:
        import hear21passt.base as theirs
    except ModuleNotFoundError as missing:
        sys.exit(f"{missing}: this benchmark needs hear21passt and torchaudio: {INSTALL}, then run it with "
                 "PYTHONPATH=/tmp/hear21passt_site (see the module docstring)")
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # hear21passt's deprecated torch calls
        their_model = hear21passt_model()
        checkpoint = frito_checkpoint(their_model.net.state_dict(), Path(folder) / "passt_s.ckpt")
        ours = frito_hear.load_model(checkpoint, device="cpu")
        audio = {name: torch.rand(n_sounds, round(seconds * RATE)) * 1.6 - 0.8
                 for name, (n_sounds, seconds) in WORKLOADS.items()}
        print(f"# HEAR embeddings per second, {datetime.date.today()}, torch {torch.__version__}, "
              f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, float32, {ARCH}")
        print(agreement(theirs, their_model, ours, audio), flush=True)
        runs = {}
        for workload in WORKLOADS:
            runs[workload, "hear21passt"] = call(theirs, their_model, workload, audio[workload])
            runs[workload, "frito"] = call(frito_hear, ours, workload, audio[workload])
        times, counts = measure(runs, arguments.rounds)
    print(f"\n| workload | embeddings per call | hear21passt, embeddings/s | frito, embeddings/s | frito speed-up "
          f"(range over {arguments.rounds} rounds) |")
    print("|---|---:|---:|---:|---:|")
    for workload, (n_sounds, seconds) in WORKLOADS.items():
        count = counts[workload, "hear21passt"]
        their_rate, our_rate = (count / statistics.median(times[workload, who]) for who in ("hear21passt", "frito"))
        median, low, high = speedup(times[workload, "hear21passt"], times[workload, "frito"])
        print(f"| {workload}, {n_sounds} x {seconds:g} s | {count} | {their_rate:.2f} | {our_rate:.2f} | "
              f"{median:.2f} ({low:.2f}-{high:.2f}) |")


def hear21passt_model() -> torch.nn.Module:
    """hear21passt.base's model, built as its get_basic_model builds it but without the pretrained download."""
    from hear21passt.models.passt import get_model
    from hear21passt.models.preprocess import AugmentMelSTFT
    from hear21passt.wrapper import PasstBasicWrapper

    with contextlib.redirect_stdout(io.StringIO()):  # its construction prints notes
        mel = AugmentMelSTFT(n_mels=128, sr=RATE, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=192,
                             htk=False, fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000)
        net = get_model(arch=ARCH, pretrained=False)
    return PasstBasicWrapper(mel=mel, net=net).eval()


def frito_checkpoint(release_state: dict, path: Path) -> Path:
    """A frito checkpoint of PaSST-S at 10 s, 32 kHz with the weights of ``release_state`` (PaSST's release format)."""
    spec = ModelSpec.of(ARCH, clip_length=10.0, n_classes=N_CLASSES, sample_rate=RATE)
    network = spec.build().net
    load_pretrained(network, ARCH, release_state, "hear21passt's network")
    state = {NETWORK_PREFIXES["plain"] + key: value for key, value in network.state_dict().items()}
    classes = [f"class_{index}" for index in range(N_CLASSES)]
    torch.save({"state_dict": state, "frito": checkpoint_entry(spec, classes, ["a"], ["a"], "audioset")}, path)
    return path


def call(api, model, workload: str, audio: torch.Tensor) -> Callable[[], torch.Tensor]:
    """One call of the workload's HEAR function on ``audio``; returns the embeddings."""
    if workload == "timestamps":
        return lambda: api.get_timestamp_embeddings(audio, model)[0]
    return lambda: api.get_scene_embeddings(audio, model)


def agreement(theirs, their_model, our_model, audio: dict[str, torch.Tensor]) -> str:
    """How far apart the two are where they compute the same: a 10 s scene, timestamps whose windows lie inside."""
    with contextlib.redirect_stdout(io.StringIO()):  # hear21passt's network prints shapes on its first call
        their_scene = theirs.get_scene_embeddings(audio["scene"], their_model)
    scene = (their_scene - frito_hear.get_scene_embeddings(audio["scene"], our_model)).abs().max()
    their_times, _ = theirs.get_timestamp_embeddings(audio["timestamps"], their_model)
    our_times, _ = frito_hear.get_timestamp_embeddings(audio["timestamps"], our_model)
    inside = slice(2, their_times.shape[1] - 2)  # windows of 80 ms either side of timestamps 100 ms from the ends
    timestamps = (their_times[:, inside] - our_times[:, inside]).abs().max()
    return (f"same weights: largest difference of the embeddings, 10 s scene {scene:.1e}, inner timestamps "
            f"{timestamps:.1e} (shapes {tuple(their_times.shape)} and {tuple(our_times.shape)})")


def measure(runs: dict, rounds: int) -> tuple[dict, dict]:
    """Seconds per call of every run, one entry per timed round (the order rotating), and the embeddings each call
    returns (sounds x timestamps, or sounds)."""
    names = list(runs)
    times, counts = {name: [] for name in names}, {}
    for round_ in range(rounds):
        for name in names[round_ % len(names):] + names[:round_ % len(names)]:
            start = time.perf_counter()
            embeddings = runs[name]()
            times[name].append(time.perf_counter() - start)
            counts[name] = int(torch.tensor(embeddings.shape[:-1]).prod())
        print(f"round {round_ + 1}: " + ", ".join(f"{workload} {who} {times[workload, who][-1]:.2f} s"
                                                  for workload, who in names), flush=True)
    return times, counts


def speedup(theirs: list[float], ours: list[float]) -> tuple[float, float, float]:
    """(median, lowest, highest) over rounds of hear21passt's time over frito's in the same round."""
    ratios = [their / our for their, our in zip(theirs, ours, strict=True)]
    return statistics.median(ratios), min(ratios), max(ratios)


if __name__ == "__main__":
    main()
