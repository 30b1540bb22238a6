"""TAU Urban Acoustic Scenes 2020 Mobile (DCASE 2020 task 1A): 10 scenes, domain = recording device.

See README.md in this folder for downloading, the expected layout and preparation.
"""

from __future__ import annotations

from pathlib import Path

from datasets.base import SHARED_DEFAULTS
from datasets.dcase20 import demo, layout
from datasets.tau_mobile import SPLIT_DEFAULTS, TauMobileData

DEFAULTS = {
    **SHARED_DEFAULTS,
    "base_dir": None,  # folder holding TAU-urban-acoustic-scenes-2020-mobile-development/ (or that folder); None: demo
    "clip_length": None,  # seconds per item; None: 10.0 for the real data, 2.0 for the demo data
    "train_domains": None,  # devices to train and validate on, e.g. ["a"]; None: every device of the train split
    **SPLIT_DEFAULTS,
}


class Data(TauMobileData):
    """TAU Urban Acoustic Scenes 2020 Mobile development set, cached as HDF5 (roles and items: see
    datasets.tau_mobile.TauMobileData)."""

    name = "dcase20"
    release = layout.RELEASE
    native_clip_length = 10.0
    demo_clip_length = demo.CLIP_LENGTH
    demo_folder = f"dcase20-demo-v{demo.VERSION}"

    def _build_demo(self, folder: Path) -> None:
        demo.build(folder)
