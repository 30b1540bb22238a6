"""TAU Urban Acoustic Scenes 2020 Mobile (DCASE 2020 task 1A): 10 scenes, domain = recording device.

See README.md in this folder for downloading, the expected layout and preparation.
"""

from __future__ import annotations

from pathlib import Path

from datasets.base import SHARED_DEFAULTS, CachedData, Layout
from datasets.dcase20 import demo, layout

DEFAULTS = {
    **SHARED_DEFAULTS,
    "base_dir": None,  # folder holding TAU-urban-acoustic-scenes-2020-mobile-development/ (or that folder); None: demo
    "clip_length": None,  # seconds per item; None: 10.0 for the real data, 2.0 for the demo data
    "train_domains": None,  # devices to train and validate on, e.g. ["a"]; None: every device of the train split
    "train_split": "fold1_train",  # evaluation_setup/<name>.csv: the training files (train and validation roles)
    "test_split": "fold1_evaluate",  # evaluation_setup/<name>.csv: the test files, every device (reported only)
    "validation_fraction": 0.15,  # about this share of train_split's clips, whole recording locations, validates
    "split_seed": 0,  # seed of the choice of validation locations
}


class Data(CachedData):
    """TAU Urban Acoustic Scenes 2020 Mobile development set, cached as HDF5.

    Roles: train (train_split less the validation locations, train_domains devices), validation (held-out
    recording locations of train_split, train_domains devices), test (test_split, every device). Items:
    waveform (or spectrogram), file_name (as in meta.csv), label (scene), domain (device), subdomain (city).
    """

    name = "dcase20"
    domain_kind = "device"
    group_names = ("seen devices", "unseen devices")
    native_clip_length = 10.0
    demo_clip_length = demo.CLIP_LENGTH
    demo_folder = f"dcase20-demo-v{demo.VERSION}"

    def __init__(
        self,
        *,
        train_split: str = DEFAULTS["train_split"],
        test_split: str = DEFAULTS["test_split"],
        validation_fraction: float = DEFAULTS["validation_fraction"],
        split_seed: int = DEFAULTS["split_seed"],
        **settings,
    ):
        """train_split, test_split: evaluation_setup files (without .csv); validation_fraction, split_seed: the
        validation locations (see layout.hold_out_locations); settings: the rest of DEFAULTS, and mel."""
        self.train_split = train_split
        self.test_split = test_split
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed
        super().__init__(**settings)

    def _read_layout(self, base_dir: Path) -> Layout:
        return layout.read_layout(
            base_dir, self.train_split, self.test_split, self.validation_fraction, self.split_seed
        )

    def _build_demo(self, folder: Path) -> None:
        demo.build(folder)
