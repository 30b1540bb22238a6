"""A small synthetic stand-in for ESC-50 in its released layout (ESC-50-master/audio/*.wav, meta/esc50.csv).

Five of ESC-50's classes, with their real target numbers and esc10 flags (dog, rooster and rain are ESC-10 clips),
each a recipe of synthetic events repeated through the clip: barks (short harmonic bursts gliding down), crows
(harmonic sweeps up and down), rain (hissing noise with drops), knocks on wood (damped low resonances in groups)
and bells (inharmonic partials with long decays). Every source recording (src_file) has its own variant of the
recipe and its own background noise, and gives one to three takes (A, B, C), in one fold, as in the release; so
fragments of one recording resemble each other more than other recordings of the class. Five folds of 8 clips
per class, 2 s of 44.1 kHz 16-bit mono (the real clips are 5 s).
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile

from datasets.esc50.layout import AUDIO_FOLDER, COLUMNS, META_CSV, RELEASE_FOLDER
from datasets.synthesis import colored_noise, filtered

VERSION = 1  # bump when the generated data changes, so existing demo folders are not reused
SEED = 50
SAMPLE_RATE = 44100
CLIP_LENGTH = 2.0
FOLDS = (1, 2, 3, 4, 5)
TAKES_PER_SOURCE = (3, 2, 2, 1)  # per class and fold: four source recordings, eight clips
TAKES = "ABC"


def build(folder: Path) -> None:
    """Write the demo release into ``folder``/ESC-50-master/."""
    root = folder / RELEASE_FOLDER
    (root / AUDIO_FOLDER).mkdir(parents=True)
    (root / META_CSV).parent.mkdir()
    rows = []
    for target, (category, (esc10, sound)) in sorted(CLASSES.items(), key=lambda item: item[1][0]):
        for fold in FOLDS:
            for index, takes in enumerate(TAKES_PER_SOURCE):
                source = 10000 * (target + 1) + 100 * fold + index
                background = _background(np.random.default_rng([SEED, source, 0]))
                for take in TAKES[:takes]:
                    rng = np.random.default_rng([SEED, source, ord(take)])
                    voice = np.random.default_rng([SEED, source, 1])  # the source's variant: the same for every take
                    audio = _mix(sound(rng, voice), background(rng), rng.uniform(0.4, 0.8))
                    name = f"{fold}-{source}-{take}-{target}.wav"
                    soundfile.write(root / AUDIO_FOLDER / name, audio, SAMPLE_RATE, subtype="PCM_16")
                    rows.append((name, fold, target, category, str(esc10), source, take))
    with open(root / META_CSV, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(COLUMNS)
        writer.writerows(sorted(rows))


def _bark(rng: np.random.Generator, voice: np.random.Generator) -> np.ndarray:
    f0, length = voice.uniform(380, 700), voice.uniform(0.12, 0.22)
    out = _silence()
    for start in np.arange(rng.uniform(0.0, 0.2), CLIP_LENGTH, voice.uniform(0.3, 0.5)):
        t = np.arange(int(length * SAMPLE_RATE)) / SAMPLE_RATE
        pitch = f0 * (1.25 - 0.4 * t / length)
        phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
        tone = sum(np.sin(k * phase) / k for k in range(1, 8)) * np.exp(-t / (0.4 * length))
        _add(out, start, tone * rng.uniform(0.6, 1.0))
    return filtered(out, SAMPLE_RATE, (100, 800, 1500, 4000), (-20, 0, 3, -15))


def _crow(rng: np.random.Generator, voice: np.random.Generator) -> np.ndarray:
    low, high, length = voice.uniform(450, 600), voice.uniform(850, 1100), voice.uniform(0.6, 0.9)
    t = np.arange(int(length * SAMPLE_RATE)) / SAMPLE_RATE
    pitch = low + (high - low) * np.sin(np.pi * t / length) ** 0.6
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    fades = np.minimum(1, 8 * t) * np.minimum(1, 4 * (length - t))
    tone = sum(np.sin(k * phase) * 0.8**k for k in range(1, 10)) * fades
    out = _silence()
    for start in np.arange(rng.uniform(-0.3, 0.0), CLIP_LENGTH, length + voice.uniform(0.05, 0.2)):
        _add(out, start, tone)
    return out


def _rain(rng: np.random.Generator, voice: np.random.Generator) -> np.ndarray:
    n = round(CLIP_LENGTH * SAMPLE_RATE)
    hiss = colored_noise(rng, n, SAMPLE_RATE, (100, 2000, voice.uniform(5000, 9000), 20000), (-30, -6, 0, -10))
    drops = np.zeros(n)
    count = int(voice.uniform(40, 120) * CLIP_LENGTH)
    drops[rng.integers(0, n, size=count)] = rng.uniform(5, 20, size=count)
    return hiss + filtered(drops, SAMPLE_RATE, (500, 3000, 8000), (-20, 0, -6))


def _knock(rng: np.random.Generator, voice: np.random.Generator) -> np.ndarray:
    resonance, spacing = voice.uniform(150, 320), voice.uniform(0.12, 0.22)
    out = _silence()
    t = np.arange(int(0.12 * SAMPLE_RATE)) / SAMPLE_RATE
    hit = np.sin(2 * np.pi * resonance * t) * np.exp(-t / 0.02) + 0.3 * rng.standard_normal(len(t)) * np.exp(-t / 0.003)
    start = rng.uniform(0.0, 0.2)
    while start < CLIP_LENGTH:
        for _ in range(rng.integers(2, 5)):
            _add(out, start, hit * rng.uniform(0.7, 1.0))
            start += spacing * rng.uniform(0.9, 1.1)
        start += rng.uniform(0.1, 0.3)
    return out


def _bell(rng: np.random.Generator, voice: np.random.Generator) -> np.ndarray:
    f0, period = voice.uniform(280, 520), voice.uniform(0.7, 1.1)
    t = np.arange(round(CLIP_LENGTH * SAMPLE_RATE)) / SAMPLE_RATE
    partials = [(0.5, 0.6), (1.0, 1.0), (1.19, 0.5), (1.5, 0.4), (2.0, 0.5), (2.66, 0.25)]
    out = _silence()
    for start in np.arange(rng.uniform(0.0, period / 2), CLIP_LENGTH, period):
        rest = t[: len(t) - int(start * SAMPLE_RATE)]
        strike = sum(gain * np.sin(2 * np.pi * f0 * ratio * rest) * np.exp(-rest * (0.8 + ratio))
                     for ratio, gain in partials)
        _add(out, start, strike)
    return out


# target -> (category, (esc10, recipe)): ESC-50's own target numbers and ESC-10 membership
CLASSES: dict[int, tuple[str, tuple[bool, Callable]]] = {
    0: ("dog", (True, _bark)),
    1: ("rooster", (True, _crow)),
    10: ("rain", (True, _rain)),
    30: ("door_wood_knock", (False, _knock)),
    46: ("church_bells", (False, _bell)),
}


def _background(variant: np.random.Generator) -> Callable[[np.random.Generator], np.ndarray]:
    """The source recording's background: noise of its own spectral tilt and level, drawn anew per take."""
    tilt, level = variant.uniform(-12, 6), variant.uniform(0.02, 0.08)
    n = round(CLIP_LENGTH * SAMPLE_RATE)
    return lambda rng: level * colored_noise(rng, n, SAMPLE_RATE, (50, 1000, 16000), (6, 0, tilt))


def _mix(sound: np.ndarray, background: np.ndarray, peak: float) -> np.ndarray:
    """The events scaled to ``peak`` over the background, kept within 16-bit full scale."""
    audio = sound * (peak / (np.max(np.abs(sound)) + 1e-9)) + background
    return np.clip(audio, -1.0, 1.0 - 2.0**-15)


def _silence() -> np.ndarray:
    return np.zeros(round(CLIP_LENGTH * SAMPLE_RATE))


def _add(out: np.ndarray, start: float, event: np.ndarray) -> None:
    """Add ``event`` into ``out`` from ``start`` seconds on (before 0 or past the end: the part inside the clip)."""
    first = int(start * SAMPLE_RATE)
    skipped = max(0, -first)
    length = min(len(event) - skipped, len(out) - max(0, first))
    if length > 0:
        out[max(0, first) : max(0, first) + length] += event[skipped : skipped + length]
