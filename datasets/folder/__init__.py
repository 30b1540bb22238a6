"""Your own dataset: a folder of audio files and a CSV listing filename, label, and optionally domain, split and fold.

See README.md in this folder for the CSV format and a walk-through of fine-tuning from the PaSST AudioSet
weights. There is no demo data: basedataset.base_dir is required.
"""

from __future__ import annotations

from pathlib import Path

from datasets.base import SHARED_DEFAULTS, CachedData, Layout
from datasets.folder import layout

DEFAULTS = {
    **SHARED_DEFAULTS,
    "base_dir": None,  # the folder holding your audio files (required: this dataset has no demo data)
    "csv": None,  # the CSV listing them; None: <base_dir>/metadata.csv; a relative path is relative to base_dir
    "clip_length": None,  # seconds per item (longer files cropped, shorter padded); None: 10.0
    "train_domains": None,  # domains to train and validate on, e.g. ["phone"]; None: every domain of the training files
    "validation_fraction": 0.1,  # CSV without validation rows: share of each label and domain's rows validated on
    "test_fraction": 0.2,  # CSV without test rows: share of each label and domain's rows held out for test
    "split_seed": 0,  # seed of the choice of held-out validation and test files
    "fold": None,  # CSV with a fold column: the fold tested on (validation held out of the others); None: split column
}


class Data(CachedData):
    """A folder of audio files listed in a CSV, cached as HDF5.

    Roles: the CSV's split column (train, validation, test; eval means test); roles without rows are held out
    of the training rows (see layout). With fold=k, the CSV's fold column instead: fold k is tested on, validation
    is held out of the other folds, which are trained on (see layout.fold_roles). Validation serves the
    train_domains domains only, test every domain.
    Items: waveform (or spectrogram), file_name (as in the CSV), label (the CSV's label), domain (the CSV's
    domain, or "all" without a domain column), subdomain (always "-").
    """

    name = "folder"
    domain_kind = "domain"
    group_names = ("seen domains", "unseen domains")
    native_clip_length = 10.0
    class_choice = "add training rows of these labels to the CSV (or remove their rows)"

    def __init__(
        self,
        *,
        csv: str | None = DEFAULTS["csv"],
        validation_fraction: float = DEFAULTS["validation_fraction"],
        test_fraction: float = DEFAULTS["test_fraction"],
        split_seed: int = DEFAULTS["split_seed"],
        fold: int | None = DEFAULTS["fold"],
        **settings,
    ):
        """csv: the CSV listing the files; validation_fraction, test_fraction, split_seed: the files held out of
        the training rows for roles the CSV does not assign (see layout.stratified_split); fold: the fold of the
        CSV's fold column tested on, or None for the split column; settings: the rest of DEFAULTS, and mel."""
        layout.check_split_settings(validation_fraction, test_fraction, split_seed)
        layout.check_fold(fold)
        self.fold = fold
        self.csv = csv
        self.validation_fraction = validation_fraction
        self.test_fraction = test_fraction
        self.split_seed = split_seed
        super().__init__(**settings)

    def _read_layout(self, base_dir: Path) -> Layout:
        return layout.read_layout(
            base_dir, self.csv, self.validation_fraction, self.test_fraction, self.split_seed, self.fold
        )
