"""TAU Urban Acoustic Scenes 2022 Mobile (DCASE 2022-2024 task 1): 10 scenes in 1 s clips, domain = recording
device; the DCASE 2024 Task 1 training subsets through basedataset.split_csv.

See README.md in this folder for downloading, the expected layout, the subsets and preparation.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets.base import SHARED_DEFAULTS, Layout
from datasets.dcase22 import demo, layout
from datasets.tau_mobile import SPLIT_DEFAULTS, TauMobileData, read_layout
from errors import ConfigurationError

DEFAULTS = {
    **SHARED_DEFAULTS,
    "base_dir": None,  # folder holding TAU-urban-acoustic-scenes-2022-mobile-development/ (or that folder); None: demo
    "clip_length": None,  # seconds per item; None: 1.0, the length of the real and the demo clips
    "train_domains": None,  # devices to train and validate on, e.g. ["a"]; None: every device of the train split
    **SPLIT_DEFAULTS,
    "split_csv": None,  # training subset, e.g. split_setup/split25.csv (DCASE 2024; relative to the dataset folder)
}


class Data(TauMobileData):
    """TAU Urban Acoustic Scenes 2022 Mobile development set, cached as HDF5 (roles and items: see
    datasets.tau_mobile.TauMobileData); with split_csv, train and validation are drawn from its files only."""

    name = "dcase22"
    release = layout.RELEASE
    native_clip_length = 1.0
    demo_clip_length = demo.CLIP_LENGTH
    demo_folder = f"dcase22-demo-v{demo.VERSION}"

    def __init__(self, *, split_csv: str | os.PathLike | None = DEFAULTS["split_csv"], **settings):
        """split_csv: a file listing the training subset's files (a DCASE 2024 Task 1 split, or any list of files
        of train_split), relative to the dataset folder or absolute; None: all of train_split. settings: the
        rest of DEFAULTS, and mel."""
        if split_csv is not None and (not isinstance(split_csv, str | os.PathLike) or not str(split_csv)):
            raise ConfigurationError(
                f"basedataset.split_csv={split_csv!r}: expected the path of a training subset's CSV, e.g. "
                f"{layout.SUBSETS_FOLDER}/split25.csv, or None for the whole training split"
            )
        self.split_csv = split_csv
        super().__init__(**settings)

    def _read_layout(self, base_dir: Path) -> Layout:
        return read_layout(base_dir, self.release, self.train_split, self.test_split, self.validation_fraction,
                           self.split_seed, subset_csv=self.split_csv)

    def _build_demo(self, folder: Path) -> None:
        demo.build(folder)
