"""Your own dataset: a folder of audio files and a CSV listing filename, label, and optionally domain and split.

See README.md in this folder for the CSV format and a walk-through of fine-tuning from the PaSST AudioSet
weights. There is no demo data: basedataset.base_dir is required.
"""

from __future__ import annotations

import os
from pathlib import Path

from datasets.base import SHARED_DEFAULTS, CachedData, Layout
from datasets.folder import layout

DEFAULTS = {
    **SHARED_DEFAULTS,
    "base_dir": None,  # the folder holding your audio files (required: this dataset has no demo data)
    "csv": None,  # the CSV listing them; None: <base_dir>/metadata.csv; a relative path is relative to base_dir
    "clip_length": None,  # seconds per item (longer files cropped, shorter padded); None: 10.0
    "train_domains": None,  # domains to train on, e.g. ["phone"]; None: every domain of the training files
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
    group_names = ("seen", "unseen")  # the domains trained on, and the others
    native_clip_length = 10.0

    def __init__(
        self,
        *,
        csv: str | None = DEFAULTS["csv"],
        eval_fraction: float = DEFAULTS["eval_fraction"],
        split_seed: int = DEFAULTS["split_seed"],
        **settings,
    ):
        """csv: the CSV listing the files; eval_fraction, split_seed: the split without a split column (see
        layout.stratified_split); settings: the rest of DEFAULTS, and mel."""
        layout.check_split_settings(eval_fraction, split_seed)
        self.csv = csv
        self.eval_fraction = eval_fraction
        self.split_seed = split_seed
        super().__init__(train_split=layout.TRAIN, eval_split=layout.EVAL, **settings)

    def _read_layout(self, base_dir: Path) -> Layout:
        return layout.read_layout(base_dir, self.csv, self.eval_fraction, self.split_seed)
