"""Your own dataset: a folder of audio files and a CSV listing filename, label, and optionally domain and split.

See README.md in this folder for the CSV format and a walk-through of fine-tuning from the PaSST AudioSet
weights. There is no demo data: basedataset.base_dir is required.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from datasets.base import CachedData, Layout
from datasets.folder import layout

DEFAULTS = {
    "base_dir": None,  # the folder holding your audio files (required: this dataset has no demo data)
    "csv": None,  # the CSV listing them; None: <base_dir>/metadata.csv; a relative path is relative to base_dir
    "cache_dir": None,  # where HDF5 caches go; None: $FRITO_CACHE_DIR or ~/.cache/frito
    "sample_rate": 32000,  # Hz the audio is resampled to
    "clip_length": None,  # seconds per item (longer files cropped, shorter padded); None: 10.0
    "cache_format": "waveform",  # "waveform", or "spectrogram" for cached eval-mode log-mel frames
    "audio_dtype": "int16",  # storage of cached waveforms: "int16" or "float16"
    "resample_quality": "HQ",  # soxr quality: "HQ" or "VHQ"
    "skip_bad_files": False,  # leave out missing/unreadable/empty files instead of stopping
    "train_domains": None,  # domains to train on, e.g. ["phone"]; None: every domain of the training files
    "prepare_workers": 2,  # decoding processes while preparing caches (0: in the main process)
    "eval_fraction": 0.2,  # without a split column: share of each label and domain held out for evaluation
    "split_seed": 0,  # without a split column: seed of the choice of held-out files
}


def read_class_names(base_dir: str | os.PathLike, csv: str | None = DEFAULTS["csv"]) -> list[str]:
    """The classes of the folder's CSV (sorted labels), as Data.class_names will name them."""
    return layout.read_listing(Path(base_dir).expanduser().resolve(), csv).class_names


class Data(CachedData):
    """A folder of audio files listed in a CSV, cached as HDF5.

    Items: waveform (or spectrogram), file_name (as in the CSV), label (the CSV's label), domain (the CSV's
    domain, or "all" without a domain column), subdomain (always "-").
    """

    name = "folder"
    domain_kind = "domain"
    native_clip_length = 10.0

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike | None = DEFAULTS["base_dir"],
        csv: str | None = DEFAULTS["csv"],
        cache_dir: str | os.PathLike | None = DEFAULTS["cache_dir"],
        sample_rate: int = DEFAULTS["sample_rate"],
        clip_length: float | None = DEFAULTS["clip_length"],
        cache_format: str = DEFAULTS["cache_format"],
        audio_dtype: str = DEFAULTS["audio_dtype"],
        resample_quality: str = DEFAULTS["resample_quality"],
        skip_bad_files: bool = DEFAULTS["skip_bad_files"],
        train_domains: Sequence[str] | None = DEFAULTS["train_domains"],
        prepare_workers: int = DEFAULTS["prepare_workers"],
        eval_fraction: float = DEFAULTS["eval_fraction"],
        split_seed: int = DEFAULTS["split_seed"],
        mel: dict | None = None,
    ):
        """Settings as in DEFAULTS; mel: the mel front-end's settings (needed for cache_format="spectrogram")."""
        if base_dir is None:
            raise ValueError(
                "basedataset.base_dir is required for the folder dataset (it has no demo data): set it to the "
                f"folder holding your audio files and their CSV ({layout.DEFAULT_CSV}); see datasets/folder/README.md"
            )
        layout.check_split_settings(eval_fraction, split_seed)
        self.csv = csv
        self.eval_fraction = eval_fraction
        self.split_seed = split_seed
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
            train_split=layout.TRAIN,
            eval_split=layout.EVAL,
            mel=mel,
        )

    def _read_layout(self, base_dir: Path) -> Layout:
        return layout.read_layout(base_dir, self.csv, self.eval_fraction, self.split_seed)
