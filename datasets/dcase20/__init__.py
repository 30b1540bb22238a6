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
    "train_domains": None,  # devices to train on, e.g. ["a"]; None: every device of the train split
    "train_split": "fold1_train",  # evaluation_setup/<name>.csv listing the training files
    "eval_split": "fold1_evaluate",  # evaluation_setup/<name>.csv listing the evaluation files
}


class Data(CachedData):
    """TAU Urban Acoustic Scenes 2020 Mobile development set, cached as HDF5.

    Items: waveform (or spectrogram), file_name (as in meta.csv), label (scene), domain (device),
    subdomain (city).
    """

    name = "dcase20"
    domain_kind = "device"
    group_names = ("seen devices", "unseen devices")  # the domains trained on, and the others
    native_clip_length = 10.0
    demo_clip_length = demo.CLIP_LENGTH
    demo_folder = f"dcase20-demo-v{demo.VERSION}"

    def __init__(
        self, *, train_split: str = DEFAULTS["train_split"], eval_split: str = DEFAULTS["eval_split"], **settings
    ):
        """train_split, eval_split: evaluation_setup files (without .csv); settings: the rest of DEFAULTS, and mel."""
        super().__init__(train_split=train_split, eval_split=eval_split, **settings)

    def _read_layout(self, base_dir: Path) -> Layout:
        return layout.read_layout(base_dir, self.train_split, self.eval_split)

    def _build_demo(self, folder: Path) -> None:
        demo.build(folder)
