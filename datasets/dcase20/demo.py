"""A small synthetic stand-in for TAU Urban Acoustic Scenes 2020 Mobile, in the real on-disk layout.

Ten scenes are mixtures of textures (coloured background noise, engine hum, footsteps, rail clacks,
birds, babble, beeps, passing cars) with scene-specific levels and rates; every recording location
("<city>-<number>") keeps its own variant of the mix. Each segment is rendered through the frequency
response, noise floor and saturation of the devices that recorded it: device a is flat; b, c and
s1-s3 appear in training and evaluation; s4-s6 only in the evaluation fold and have the most extreme
responses, so unseen devices are harder, as in the real dataset. Clips are 2 s of 44.1 kHz 24-bit mono.

Each scene has six training locations, so that holding one out for validation (the default 15 % of the
training clips, see datasets/tau_mobile.py) leaves five to train on; every training segment is
recorded on all six seen devices, so a held-out location brings every training device into validation.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from datasets.dcase20.layout import DATASET_FOLDER
from datasets.synthesis import colored_noise, filtered, normalize_rms

VERSION = 2  # bump when the generated data changes, so existing demo folders are not reused
SEED = 2020
SAMPLE_RATE = 44100
CLIP_LENGTH = 2.0
CITIES = ("barcelona", "helsinki", "lisbon", "lyon", "prague")
SEEN_DEVICES = ("a", "b", "c", "s1", "s2", "s3")
UNSEEN_DEVICES = ("s4", "s5", "s6")
TRAIN_LOCATIONS_PER_SCENE = 6
EVAL_LOCATIONS_PER_SCENE = 2


@dataclass(frozen=True)
class Device:
    """A recording device: gains (dB) at DEVICE_FREQS, noise floor (dB re full scale), saturation drive."""

    gains_db: tuple[float, ...]
    noise_db: float
    drive: float


DEVICE_FREQS = (20, 100, 300, 1000, 3000, 6000, 10000, 16000, 22050)
DEVICES = {
    "a": Device((0, 0, 0, 0, 0, 0, 0, 0, 0), -90, 0.0),
    "b": Device((-30, -12, -2, 0, 2, 0, -6, -20, -40), -66, 0.0),
    "c": Device((-40, -20, -6, 0, 4, 6, 0, -10, -30), -62, 1.0),
    "s1": Device((-25, -8, 0, 2, 0, -3, -10, -25, -40), -70, 0.0),
    "s2": Device((-20, -4, 3, 0, -4, 0, 4, -8, -30), -64, 0.5),
    "s3": Device((-35, -15, -3, 0, 0, -2, -6, -15, -35), -68, 0.0),
    "s4": Device((-45, -25, -10, 0, 9, 12, 3, -20, -45), -58, 1.5),
    "s5": Device((-6, 4, 8, 3, -8, -15, -22, -35, -50), -60, 0.0),
    "s6": Device((-55, -35, -18, -6, 0, 6, 12, 8, -10), -56, 2.0),
}


@dataclass(frozen=True)
class Recording:
    """One segment as one device recorded it: its scene, location identifier ("<city>-<number>"), segment
    number, device, whether it belongs to the training fold, and the audio (float64 at SAMPLE_RATE)."""

    scene: str
    identifier: str
    segment: int
    device: str
    in_train: bool
    audio: np.ndarray


def build(folder: Path) -> None:
    """Write the demo dataset into `folder`/TAU-urban-acoustic-scenes-2020-mobile-development/."""
    root = folder / DATASET_FOLDER
    (root / "audio").mkdir(parents=True)
    train, evaluate = [], []
    for recording in recordings():
        name = f"audio/{recording.scene}-{recording.identifier}-{recording.segment}-{recording.device}.wav"
        soundfile.write(root / name, recording.audio, SAMPLE_RATE, subtype="PCM_24")
        row = (name, recording.scene, recording.identifier, recording.device)
        (train if recording.in_train else evaluate).append(row)
    write_tables(root, train, evaluate)


def recordings() -> Iterator[Recording]:
    """Every recording of the demo, scene by scene and location by location: each location has one segment,
    recorded on the seen devices (training locations) or on every device (evaluation locations)."""
    n_locations = TRAIN_LOCATIONS_PER_SCENE + EVAL_LOCATIONS_PER_SCENE
    for scene_index, scene in enumerate(SCENE_RECIPES):
        for location in range(n_locations):
            location_id = segment = scene_index * n_locations + location  # one segment per location
            identifier = f"{CITIES[location_id % len(CITIES)]}-{location_id}"
            in_train = location < TRAIN_LOCATIONS_PER_SCENE
            signal = scene_segment(scene, location_id, segment)
            for device in SEEN_DEVICES if in_train else SEEN_DEVICES + UNSEEN_DEVICES:
                yield Recording(scene, identifier, segment, device, in_train, record(signal, device, segment))


def write_tables(root: Path, train: list[tuple[str, ...]], evaluate: list[tuple[str, ...]]) -> None:
    """meta.csv and evaluation_setup/ as TAU ships them, from (filename, scene, identifier, device) rows of the
    training and the evaluation fold."""
    write_tsv(root / "meta.csv", ("filename", "scene_label", "identifier", "source_label"), sorted(train + evaluate))
    setup = root / "evaluation_setup"
    setup.mkdir()
    write_tsv(setup / "fold1_train.csv", ("filename", "scene_label"), [row[:2] for row in train])
    write_tsv(setup / "fold1_evaluate.csv", ("filename", "scene_label"), [row[:2] for row in evaluate])
    write_tsv(setup / "fold1_test.csv", ("filename",), [row[:1] for row in evaluate])


def write_tsv(path: Path, header: tuple[str, ...], rows) -> None:
    """A tab-separated table with a header line, as TAU ships its tables."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def scene_segment(scene: str, location_id: int, segment: int) -> np.ndarray:
    """The scene's sound at one location (float64, before any device)."""
    location_rng = np.random.default_rng([SEED, 1, location_id])
    rng = np.random.default_rng([SEED, 2, segment])
    n_samples = round(CLIP_LENGTH * SAMPLE_RATE)
    level_db, components = SCENE_RECIPES[scene]
    mix = np.zeros(n_samples)
    for component, component_db, ranges in components:
        params = {key: _draw(location_rng, rng, value) for key, value in ranges.items()}
        gain_db = component_db + rng.uniform(-3, 3)
        mix += 10 ** (gain_db / 20) * COMPONENTS[component](rng, n_samples, **params)
    return normalize_rms(mix, 10 ** ((level_db + rng.uniform(-4, 4)) / 20))


def record(signal: np.ndarray, device: str, segment: int) -> np.ndarray:
    """`signal` as recorded by `device`: its response, saturation and noise floor, clipped to full scale."""
    spec = DEVICES[device]
    rng = np.random.default_rng([SEED, 3, segment, list(DEVICES).index(device)])
    out = filtered(signal, SAMPLE_RATE, DEVICE_FREQS, spec.gains_db)
    if spec.drive:
        out = np.tanh(out * (1 + 4 * spec.drive)) / (1 + 4 * spec.drive) ** 0.5
    out += 10 ** (spec.noise_db / 20) * rng.standard_normal(len(out))
    return np.clip(out, -1.0, 1.0 - 2.0**-23)


def _draw(location_rng: np.random.Generator, rng: np.random.Generator, value):
    """Parameter ranges: ("loc", lo, hi) is fixed per location, (lo, hi) drawn per segment, else a constant."""
    if isinstance(value, tuple) and value[0] == "loc":
        return location_rng.uniform(value[1], value[2])
    if isinstance(value, tuple):
        return rng.uniform(*value)
    return value


def _background(rng, n, tilt, bump_hz, bump_db):
    """Broadband noise falling by `tilt` dB per octave, with a bump of bump_db around bump_hz."""
    freqs = (20, bump_hz / 2, bump_hz, bump_hz * 2, 22050)
    octaves = np.log2(np.asarray(freqs) / 20)
    gains = tilt * octaves + np.asarray((0, 0, bump_db, 0, 0))
    return colored_noise(rng, n, SAMPLE_RATE, freqs, gains)


def _hum(rng, n, f0, n_harmonics, rolloff, am_rate, am_depth):
    """A motor or engine: harmonics of f0 falling by `rolloff` dB each, amplitude-modulated at am_rate Hz."""
    t = np.arange(n) / SAMPLE_RATE
    drift = 1 + 0.02 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.3))
    phase = 2 * np.pi * f0 * np.cumsum(drift) / SAMPLE_RATE
    tone = sum(
        10 ** (-rolloff * k / 20) * np.sin((k + 1) * phase + rng.uniform(0, 6.3)) for k in range(int(n_harmonics))
    )
    am = 1 + am_depth * np.sin(2 * np.pi * am_rate * t + rng.uniform(0, 6.3))
    return normalize_rms(tone * am, 1.0)


def _clicks(rng, n, rate, jitter, center_hz, decay_ms, pair_gap_ms=0.0):
    """Impulsive events (footsteps, rail joints) at `rate` per second, each a decaying band of noise."""
    out = np.zeros(n)
    times = np.arange(rng.uniform(0, 1 / rate), n / SAMPLE_RATE, 1 / rate)
    times = times + rng.normal(0, jitter / rate, len(times))
    if pair_gap_ms:
        times = np.concatenate([times, times + pair_gap_ms / 1000])
    length = int(SAMPLE_RATE * decay_ms / 1000 * 5)
    decay = np.exp(-np.arange(length) / (SAMPLE_RATE * decay_ms / 1000))
    for start in (times * SAMPLE_RATE).astype(int):
        if 0 <= start < n - length:
            out[start : start + length] += decay * rng.standard_normal(length) * rng.uniform(0.5, 1.0)
    band = (20, center_hz / 3, center_hz, center_hz * 3, 22050)
    return normalize_rms(filtered(out, SAMPLE_RATE, band, (-40, -12, 0, -12, -40)) + 1e-6 * rng.standard_normal(n), 1.0)


def _chirps(rng, n, rate, f_low, f_high):
    """Bird-like frequency sweeps between f_low and f_high Hz, `rate` per second."""
    out = np.zeros(n)
    for _ in range(rng.poisson(rate * n / SAMPLE_RATE) + 1):
        length = int(SAMPLE_RATE * rng.uniform(0.04, 0.15))
        start = rng.integers(0, n - length)
        f_start, f_end = rng.uniform(f_low, f_high, 2)
        freq = np.linspace(f_start, f_end, length)
        out[start : start + length] += np.sin(2 * np.pi * np.cumsum(freq) / SAMPLE_RATE) * np.hanning(length)
    return normalize_rms(out + 1e-6 * rng.standard_normal(n), 1.0)


def _babble(rng, n, voices, syllable_rate):
    """Several talkers: buzzy harmonic sources at 90-260 Hz, gated at syllable rate, shaped like speech."""
    t = np.arange(n) / SAMPLE_RATE
    out = np.zeros(n)
    for _ in range(int(voices)):
        f0 = rng.uniform(90, 260) * (1 + 0.08 * np.sin(2 * np.pi * rng.uniform(1, 4) * t))
        phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE + rng.uniform(0, 6.3)
        buzz = np.sign(np.sin(phase)) * 0.3 + np.sin(phase)
        gate = np.clip(np.sin(2 * np.pi * syllable_rate * rng.uniform(0.7, 1.3) * t + rng.uniform(0, 6.3)), 0, 1) ** 2
        out += buzz * gate
    return normalize_rms(filtered(out, SAMPLE_RATE, (20, 150, 500, 1500, 3500, 22050), (-30, 0, 4, 0, -15, -40)), 1.0)


def _tones(rng, n, freq, rate, duration):
    """Beeps or chimes: `rate` per second tone bursts at freq Hz (and its fifth) lasting `duration` s."""
    t = np.arange(n) / SAMPLE_RATE
    gate = ((t * rate + rng.uniform(0, 1)) % 1.0) < duration * rate
    tone = np.sin(2 * np.pi * freq * t) + 0.5 * np.sin(2 * np.pi * 1.5 * freq * t)
    return normalize_rms(tone * gate + 1e-6 * rng.standard_normal(n), 1.0)


def _swells(rng, n, rate, center_hz):
    """Passing vehicles: noise around center_hz swelling and fading over about a second."""
    t = np.arange(n) / SAMPLE_RATE
    envelope = np.full(n, 0.05)
    for _ in range(rng.poisson(rate * n / SAMPLE_RATE) + 1):
        envelope += np.exp(-0.5 * ((t - rng.uniform(-0.3, t[-1] + 0.3)) / rng.uniform(0.2, 0.5)) ** 2)
    band = (20, center_hz / 4, center_hz, center_hz * 4, 22050)
    noise = colored_noise(rng, n, SAMPLE_RATE, band, (-30, -6, 0, -10, -40))
    return normalize_rms(noise * envelope, 1.0)


COMPONENTS: dict[str, Callable[..., np.ndarray]] = {
    "background": _background,
    "hum": _hum,
    "clicks": _clicks,
    "chirps": _chirps,
    "babble": _babble,
    "tones": _tones,
    "swells": _swells,
}

# scene -> (overall level in dB re full scale, [(component, relative level dB, parameters)]).
SCENE_RECIPES: dict[str, tuple[float, list[tuple[str, float, dict]]]] = {
    "airport": (
        -26,
        [
            ("background", 0, {"tilt": ("loc", -4, -2), "bump_hz": ("loc", 200, 400), "bump_db": 6}),
            ("babble", -4, {"voices": 6, "syllable_rate": (3, 5)}),
            ("tones", -10, {"freq": ("loc", 500, 700), "rate": 0.6, "duration": 0.5}),
        ],
    ),
    "bus": (
        -22,
        [
            (
                "hum",
                0,
                {"f0": ("loc", 28, 40), "n_harmonics": 12, "rolloff": 2.0, "am_rate": (0.3, 0.8), "am_depth": 0.3},
            ),
            ("background", -6, {"tilt": -6, "bump_hz": ("loc", 80, 150), "bump_db": 10}),
            ("babble", -14, {"voices": 2, "syllable_rate": 4}),
        ],
    ),
    "metro": (
        -16,
        [
            ("background", 0, {"tilt": ("loc", -7, -5), "bump_hz": ("loc", 60, 120), "bump_db": 12}),
            ("clicks", -4, {"rate": ("loc", 3.5, 5), "jitter": 0.02, "center_hz": 400, "decay_ms": 15}),
            ("chirps", -8, {"rate": 2, "f_low": 3000, "f_high": 5000}),
        ],
    ),
    "metro_station": (
        -24,
        [
            ("background", 0, {"tilt": ("loc", -6, -4), "bump_hz": ("loc", 100, 200), "bump_db": 8}),
            ("tones", -6, {"freq": ("loc", 1800, 2400), "rate": 1.5, "duration": 0.15}),
            ("babble", -10, {"voices": 3, "syllable_rate": 4}),
        ],
    ),
    "park": (
        -36,
        [
            ("background", 0, {"tilt": ("loc", -3, -1), "bump_hz": ("loc", 40, 80), "bump_db": 10}),
            ("chirps", 2, {"rate": ("loc", 3, 7), "f_low": 2500, "f_high": 6500}),
        ],
    ),
    "public_square": (
        -28,
        [
            ("background", 0, {"tilt": ("loc", -2, 0), "bump_hz": ("loc", 2500, 4000), "bump_db": 6}),
            ("babble", -2, {"voices": 4, "syllable_rate": (3, 5)}),
            ("chirps", -8, {"rate": 2, "f_low": 3000, "f_high": 6000}),
        ],
    ),
    "shopping_mall": (
        -27,
        [
            ("babble", 0, {"voices": 10, "syllable_rate": (3, 5)}),
            ("hum", -6, {"f0": ("loc", 180, 300), "n_harmonics": 4, "rolloff": 8.0, "am_rate": 0.5, "am_depth": 0.5}),
            ("background", -8, {"tilt": -3, "bump_hz": 1000, "bump_db": 3}),
        ],
    ),
    "street_pedestrian": (
        -30,
        [
            ("clicks", 0, {"rate": ("loc", 1.6, 2.4), "jitter": 0.05, "center_hz": ("loc", 1500, 3000), "decay_ms": 8}),
            ("babble", -4, {"voices": 2, "syllable_rate": 4}),
            ("background", -4, {"tilt": -3, "bump_hz": 600, "bump_db": 4}),
        ],
    ),
    "street_traffic": (
        -20,
        [
            ("swells", 0, {"rate": ("loc", 0.8, 1.6), "center_hz": ("loc", 500, 900)}),
            (
                "hum",
                -6,
                {"f0": ("loc", 45, 70), "n_harmonics": 8, "rolloff": 3.0, "am_rate": (0.5, 1.5), "am_depth": 0.6},
            ),
            ("background", -8, {"tilt": -4, "bump_hz": 300, "bump_db": 4}),
        ],
    ),
    "tram": (
        -23,
        [
            ("hum", 0, {"f0": ("loc", 350, 600), "n_harmonics": 3, "rolloff": 6.0, "am_rate": 0.2, "am_depth": 0.2}),
            (
                "clicks",
                -2,
                {"rate": ("loc", 1.0, 1.5), "jitter": 0.01, "center_hz": 800, "decay_ms": 25, "pair_gap_ms": 150},
            ),
            ("background", -6, {"tilt": -5, "bump_hz": 250, "bump_db": 6}),
        ],
    ),
}
