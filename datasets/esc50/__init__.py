"""ESC-50 environmental sound classification: 50 classes of 5 s clips in five folds; no domains.

See README.md in this folder for downloading, the expected layout, the roles of a fold and the ESC-10 subset.
"""

from __future__ import annotations

from pathlib import Path

from datasets.base import SHARED_DEFAULTS, CachedData, Layout
from datasets.esc50 import demo, layout

DEFAULTS = {
    **SHARED_DEFAULTS,
    "base_dir": None,  # folder holding audio/ and meta/esc50.csv (or ESC-50-master/ with them); None: demo data
    "clip_length": None,  # seconds per item; None: 5.0 for the real data (its clips' length), 2.0 for the demo data
    "train_domains": None,  # ESC-50 has no domains: leave None
    "fold": 1,  # the fold tested on (1-5); validation is held out of the other four folds, which are trained on
    "esc10": False,  # True: the ESC-10 subset only (the clips meta/esc50.csv marks esc10: 10 classes)
    "validation_fraction": 0.1,  # share of each class's clips outside the test fold validated on (whole src_files)
    "split_seed": 0,  # seed of the choice of validation source recordings
}


class Data(CachedData):
    """ESC-50 (or ESC-10), cached as HDF5.

    Roles: test (fold k), validation (whole source recordings of the other folds, per class), train (the rest of
    the other folds); see layout. Items: waveform (or spectrogram), file_name (audio/<filename>), label (category),
    domain (always "all": no domains), subdomain (always "-").
    """

    name = "esc50"
    domain_kind = None
    group_names = ()
    native_clip_length = 5.0
    demo_clip_length = demo.CLIP_LENGTH
    demo_folder = f"esc50-demo-v{demo.VERSION}"

    def __init__(
        self,
        *,
        fold: int = DEFAULTS["fold"],
        esc10: bool = DEFAULTS["esc10"],
        validation_fraction: float = DEFAULTS["validation_fraction"],
        split_seed: int = DEFAULTS["split_seed"],
        **settings,
    ):
        """fold: the fold tested on; esc10: the ESC-10 subset only; validation_fraction, split_seed: the source
        recordings validated on (see layout.fold_roles); settings: the rest of DEFAULTS, and mel."""
        layout.check_split_settings(fold, validation_fraction, split_seed)
        self.fold = fold
        self.esc10 = bool(esc10)
        self.validation_fraction = validation_fraction
        self.split_seed = split_seed
        super().__init__(**settings)

    def _read_layout(self, base_dir: Path) -> Layout:
        return layout.read_layout(base_dir, self.fold, self.esc10, self.validation_fraction, self.split_seed)

    def _build_demo(self, folder: Path) -> None:
        demo.build(folder)
