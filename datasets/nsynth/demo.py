"""A small synthetic stand-in for NSynth in its real on-disk layout (examples.json + 16 kHz wavs).

Each instrument family has its own harmonic recipe (spectral slope, odd/even balance, formants or
inharmonic partials), amplitude envelope, vibrato and breath noise, and pitch range. Instruments
vary their family's recipe; the instrument source changes the timbre on top of it (acoustic: as
is, electronic: a resonant filter and mild saturation, synthetic: more harmonics and hard clipping).
Instruments are disjoint between splits, as in NSynth, and, as in NSynth, synth_lead appears in the
training split only. Notes are held for 3 s and released over the last second of 4 s.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from datasets.synthesis import envelope_adsr, filtered, normalize_rms

VERSION = 2  # bump when the generated data changes, so existing demo folders are not reused
SEED = 1234
SAMPLE_RATE = 16000
CLIP_LENGTH = 4.0
NOTE_OFF = 3.0
VELOCITIES = (25, 50, 75, 100, 127)
TABLE_SIZE = 2048
QUALITIES = (
    "bright",
    "dark",
    "distortion",
    "fast_decay",
    "long_release",
    "multiphonic",
    "nonlinear_env",
    "percussive",
    "reverb",
    "tempo-synced",
)
# NSynth's integer codes of the family and source names.
FAMILY_CODES = {
    "bass": 0,
    "brass": 1,
    "flute": 2,
    "guitar": 3,
    "keyboard": 4,
    "mallet": 5,
    "organ": 6,
    "reed": 7,
    "string": 8,
    "synth_lead": 9,
    "vocal": 10,
}
SOURCE_CODES = {"acoustic": 0, "electronic": 1, "synthetic": 2}


@dataclass(frozen=True)
class Family:
    """How a family sounds.

    pitch: MIDI range; slope: harmonic k has amplitude k**-slope; even: gain of even harmonics;
    formants: emphasised bands in Hz; adsr: attack s, decay s, sustain level, release s; vibrato:
    rate Hz and depth in semitones; breath: noise level; brighten: how much the slope flattens over
    the note; partials: inharmonic frequency ratios (replacing harmonics when given); drawbars: the
    only harmonic numbers sounding (all when empty).
    """

    pitch: tuple[int, int]
    slope: float
    even: float
    adsr: tuple[float, float, float, float]
    formants: tuple[float, ...] = ()
    vibrato: tuple[float, float] = (0.0, 0.0)
    breath: float = 0.0
    brighten: float = 0.0
    partials: tuple[float, ...] = ()
    drawbars: tuple[int, ...] = ()


FAMILIES = {
    "bass": Family((28, 52), 1.6, 1.0, (0.01, 0.6, 0.35, 0.2)),
    "brass": Family((46, 76), 1.4, 1.0, (0.09, 0.3, 0.85, 0.12), brighten=0.9),
    "flute": Family((60, 96), 3.0, 0.6, (0.12, 0.4, 0.9, 0.15), vibrato=(5.0, 0.15), breath=0.12),
    "guitar": Family((40, 76), 1.1, 1.0, (0.004, 0.9, 0.0, 0.1)),
    "keyboard": Family((36, 96), 1.4, 0.9, (0.004, 1.6, 0.15, 0.35)),
    "mallet": Family((60, 96), 0.0, 1.0, (0.002, 0.35, 0.0, 0.1), partials=(1.0, 2.76, 5.40, 8.93)),
    "organ": Family((36, 84), 0.4, 1.0, (0.02, 0.1, 1.0, 0.04), drawbars=(1, 2, 3, 4, 6, 8)),
    "reed": Family((50, 84), 0.9, 0.08, (0.05, 0.3, 0.85, 0.1), vibrato=(4.5, 0.05)),
    "string": Family((40, 88), 1.0, 1.0, (0.18, 0.5, 0.9, 0.3), vibrato=(6.0, 0.25)),
    "synth_lead": Family((48, 84), 1.0, 0.0, (0.01, 0.2, 0.95, 0.05)),
    "vocal": Family((48, 74), 0.7, 1.0, (0.1, 0.4, 0.85, 0.2), formants=(700.0, 1200.0, 2600.0), vibrato=(5.5, 0.3)),
}

# split -> (instruments per family and source, notes per instrument); synth_lead only in training.
SPLIT_SIZES = {"nsynth-train": (2, 10), "nsynth-valid": (1, 5), "nsynth-test": (1, 7)}
TRAIN_ONLY = {"synth_lead": ((("electronic", "synthetic")), 5)}


def build(folder: Path) -> None:
    """Write nsynth-train, nsynth-valid and nsynth-test into `folder`."""
    note_id = 0
    instrument_id = 0
    numbers = {}
    for split, (per_source, notes) in SPLIT_SIZES.items():
        (folder / split / "audio").mkdir(parents=True)
        examples = {}
        plan = [
            (family, source, per_source, notes)
            for family in FAMILIES
            if family not in TRAIN_ONLY
            for source in SOURCE_CODES
        ]
        if split == "nsynth-train":
            plan += [(family, source, 1, n) for family, (sources, n) in TRAIN_ONLY.items() for source in sources]
        for family, source, n_instruments, n_notes in plan:
            for _ in range(n_instruments):
                number = numbers.get((family, source), 0)
                numbers[family, source] = number + 1
                instrument = f"{family}_{source}_{number:03d}"
                for entry in _instrument_notes(instrument, instrument_id, family, source, n_notes, note_id):
                    audio = render(family, source, instrument_id, entry["pitch"], entry["velocity"])
                    soundfile.write(
                        folder / split / "audio" / f"{entry['note_str']}.wav", audio, SAMPLE_RATE, subtype="PCM_16"
                    )
                    examples[entry["note_str"]] = entry
                    note_id += 1
                instrument_id += 1
        with open(folder / split / "examples.json", "w") as handle:
            json.dump(examples, handle, indent=1)


def render(family: str, source: str, instrument_id: int, pitch: int, velocity: int) -> np.ndarray:
    """One 4 s note of an instrument, in [-1, 1)."""
    recipe = FAMILIES[family]
    voice = np.random.default_rng([SEED, 1, instrument_id])
    rng = np.random.default_rng([SEED, 2, instrument_id, pitch, velocity])
    n = round(CLIP_LENGTH * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    f0 = 440.0 * 2 ** ((pitch - 69) / 12)
    vib_rate, vib_depth = recipe.vibrato
    semitones = vib_depth * voice.uniform(0.6, 1.4) * np.sin(2 * np.pi * vib_rate * voice.uniform(0.9, 1.1) * t)
    freq = f0 * 2 ** (semitones / 12) * (1 + rng.normal(0, 0.002))
    phase = np.cumsum(freq) / SAMPLE_RATE + rng.uniform()
    slope = recipe.slope * voice.uniform(0.8, 1.2)
    if recipe.partials:
        tone = _partials(recipe.partials, phase, t, voice)
    else:
        dark = _read_table(_harmonic_table(recipe, slope, f0, source), phase)
        tone = dark
        if recipe.brighten:
            bright = _read_table(_harmonic_table(recipe, slope - recipe.brighten, f0, source), phase)
            ramp = np.clip(t / 0.6, 0, 1) * (velocity / 127)
            tone = (1 - ramp) * dark + ramp * bright
    attack, decay, sustain, release = (value * voice.uniform(0.75, 1.3) for value in recipe.adsr)
    envelope = envelope_adsr(n, SAMPLE_RATE, attack, decay, min(sustain, 1.0), release, NOTE_OFF)
    note = normalize_rms(tone, 1.0) * envelope
    if recipe.breath:
        breath = filtered(rng.standard_normal(n), SAMPLE_RATE, (20, 1000, 4000, 8000), (-40, -6, 0, -6))
        note += recipe.breath * normalize_rms(breath, 1.0) * envelope
    note = _source_colour(note, source, voice)
    peak = np.max(np.abs(note)) + 1e-9
    return np.clip(note / peak * 0.9 * (velocity / 127) ** 0.6, -1.0, 1.0 - 2.0**-15)


def _instrument_notes(instrument: str, instrument_id: int, family: str, source: str, n_notes: int, first_note: int):
    rng = np.random.default_rng([SEED, 0, instrument_id])
    low, high = FAMILIES[family].pitch
    pitches = rng.choice(np.arange(low, high + 1), size=n_notes, replace=n_notes > high - low + 1)
    for k, pitch in enumerate(sorted(pitches.tolist())):
        velocity = int(rng.choice(VELOCITIES))
        qualities = _qualities(family, source)
        yield {
            "note": first_note + k,
            "note_str": f"{instrument}-{pitch:03d}-{velocity:03d}",
            "instrument": instrument_id,
            "instrument_str": instrument,
            "pitch": int(pitch),
            "velocity": velocity,
            "sample_rate": SAMPLE_RATE,
            "qualities": [int(q in qualities) for q in QUALITIES],
            "qualities_str": [q for q in QUALITIES if q in qualities],
            "instrument_family": FAMILY_CODES[family],
            "instrument_family_str": family,
            "instrument_source": SOURCE_CODES[source],
            "instrument_source_str": source,
        }


def _qualities(family: str, source: str) -> set[str]:
    attack, decay, sustain, _ = FAMILIES[family].adsr
    labels = {"percussive"} if attack < 0.01 else set()
    if sustain == 0 and decay < 0.5:
        labels.add("fast_decay")
    if source == "synthetic":
        labels.add("distortion")
    return labels


def _harmonic_table(recipe: Family, slope: float, f0: float, source: str) -> np.ndarray:
    """One period of the family's harmonic spectrum, band-limited below the Nyquist frequency."""
    n_harmonics = int(min(TABLE_SIZE // 2 - 1, (SAMPLE_RATE / 2 - 200) // f0))
    k = np.arange(1, n_harmonics + 1, dtype=float)
    amps = k ** -max(slope, 0.0) * np.where(k % 2 == 0, recipe.even, 1.0)
    if recipe.drawbars:
        amps *= np.isin(k, recipe.drawbars)
    for formant in recipe.formants:
        amps *= 1 + 4 * np.exp(-0.5 * ((k * f0 - formant) / (0.15 * formant)) ** 2)
    if source == "synthetic":
        amps = np.maximum(amps, 0.05 * (k <= 30))
    spectrum = np.zeros(TABLE_SIZE // 2 + 1, dtype=complex)
    spectrum[1 : n_harmonics + 1] = amps * 1j
    return np.fft.irfft(spectrum, n=TABLE_SIZE)


def _read_table(table: np.ndarray, phase: np.ndarray) -> np.ndarray:
    position = (phase % 1.0) * TABLE_SIZE
    index = position.astype(int)
    fraction = position - index
    return table[index] * (1 - fraction) + table[(index + 1) % TABLE_SIZE] * fraction


def _partials(ratios: tuple[float, ...], phase: np.ndarray, t: np.ndarray, voice: np.random.Generator) -> np.ndarray:
    """Inharmonic partials (bars, bells), higher ones decaying faster."""
    out = np.zeros_like(t)
    for rank, ratio in enumerate(ratios):
        detuned = ratio * voice.uniform(0.98, 1.02)
        out += np.sin(2 * np.pi * detuned * phase) * np.exp(-t * (1 + 4 * rank)) / (1 + rank)
    return out


def _source_colour(note: np.ndarray, source: str, voice: np.random.Generator) -> np.ndarray:
    if source == "electronic":
        peak = voice.uniform(1200, 3000)
        coloured = filtered(note, SAMPLE_RATE, (20, peak / 2, peak, peak * 2, 8000), (-6, 0, 9, -6, -24))
        return np.tanh(1.5 * coloured / (np.max(np.abs(coloured)) + 1e-9))
    if source == "synthetic":
        return np.clip(note / (np.max(np.abs(note)) + 1e-9) * 2.5, -1, 1)
    return note
