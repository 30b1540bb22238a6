"""NSynth instrument-family classification; domain = instrument source (acoustic, electronic, synthetic).

See README.md in this folder for downloading, the expected layout, the family choice and preparation.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from datasets.base import CachedData, Layout
from datasets.nsynth import demo, layout

DEFAULTS = {
    "base_dir": None,  # folder holding nsynth-train/, nsynth-valid/, nsynth-test/ (or nsynth/ with them); None: demo
    "cache_dir": None,  # where HDF5 caches (and the demo data) go; None: $FRITO_CACHE_DIR or ~/.cache/frito
    "sample_rate": 32000,  # Hz the audio is resampled to
    "clip_length": None,  # seconds per item; None: 4.0 (NSynth notes and the demo's alike)
    "cache_format": "waveform",  # "waveform", or "spectrogram" for cached eval-mode log-mel frames
    "audio_dtype": "int16",  # storage of cached waveforms: "int16" or "float16"
    "resample_quality": "HQ",  # soxr quality: "HQ" or "VHQ"
    "skip_bad_files": False,  # leave out missing/unreadable/empty files instead of stopping
    "train_domains": None,  # instrument sources to train on, e.g. ["acoustic"]; None: all
    "prepare_workers": 2,  # decoding processes while preparing caches (0: in the main process)
    "train_split": "nsynth-train",  # split folder of the training notes
    "eval_split": "nsynth-test",  # split folder of the evaluation notes ("nsynth-valid" for validation)
    "families": None,  # instrument families (classes); None: the families present in every split on disk
}


class Data(CachedData):
    """NSynth, cached as HDF5.

    Items: waveform (or spectrogram), file_name (split/audio/<note_str>.wav), label (family), domain
    (instrument source), subdomain (instrument).
    """

    name = "nsynth"
    domain_kind = "instrument_source"
    native_clip_length = 4.0
    demo_clip_length = demo.CLIP_LENGTH
    demo_folder = f"nsynth-demo-v{demo.VERSION}"

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike | None = DEFAULTS["base_dir"],
        cache_dir: str | os.PathLike | None = DEFAULTS["cache_dir"],
        sample_rate: int = DEFAULTS["sample_rate"],
        clip_length: float | None = DEFAULTS["clip_length"],
        cache_format: str = DEFAULTS["cache_format"],
        audio_dtype: str = DEFAULTS["audio_dtype"],
        resample_quality: str = DEFAULTS["resample_quality"],
        skip_bad_files: bool = DEFAULTS["skip_bad_files"],
        train_domains: Sequence[str] | None = DEFAULTS["train_domains"],
        prepare_workers: int = DEFAULTS["prepare_workers"],
        train_split: str = DEFAULTS["train_split"],
        eval_split: str = DEFAULTS["eval_split"],
        families: Sequence[str] | None = DEFAULTS["families"],
        mel: dict | None = None,
    ):
        """Settings as in DEFAULTS; mel: the mel front-end's settings (needed for cache_format="spectrogram")."""
        self.families = families
        super().__init__(
            base_dir=base_dir,
            cache_dir=cache_dir,
            sample_rate=sample_rate,
            clip_length=clip_length,
            cache_format=cache_format,
            audio_dtype=audio_dtype,
            resample_quality=resample_quality,
            skip_bad_files=skip_bad_files,
            train_domains=train_domains,
            prepare_workers=prepare_workers,
            train_split=train_split,
            eval_split=eval_split,
            mel=mel,
        )

    def _read_layout(self, base_dir: Path) -> Layout:
        return layout.read_layout(base_dir, self.train_split, self.eval_split, self.families)

    def _build_demo(self, folder: Path) -> None:
        demo.build(folder)
