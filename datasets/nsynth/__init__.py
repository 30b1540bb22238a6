"""NSynth instrument-family classification; domain = instrument source (acoustic, electronic, synthetic).

See README.md in this folder for downloading, the expected layout, the family choice and preparation.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from datasets.base import SHARED_DEFAULTS, CachedData, Layout
from datasets.nsynth import demo, layout

DEFAULTS = {
    **SHARED_DEFAULTS,
    "base_dir": None,  # folder holding nsynth-train/, nsynth-valid/, nsynth-test/ (or nsynth/ with them); None: demo
    "clip_length": None,  # seconds per item; None: 4.0 (NSynth notes and the demo's alike)
    "train_domains": None,  # instrument sources to train on, e.g. ["acoustic"]; None: all
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
    group_names = ("in-domain sources", "out-of-domain sources")  # the domains trained on, and the others
    native_clip_length = 4.0
    demo_clip_length = demo.CLIP_LENGTH
    demo_folder = f"nsynth-demo-v{demo.VERSION}"

    def __init__(
        self,
        *,
        train_split: str = DEFAULTS["train_split"],
        eval_split: str = DEFAULTS["eval_split"],
        families: Sequence[str] | None = DEFAULTS["families"],
        **settings,
    ):
        """train_split, eval_split: split folders; families: the instrument families classified (None: those in
        every split); settings: the rest of DEFAULTS, and mel."""
        self.families = families
        super().__init__(train_split=train_split, eval_split=eval_split, **settings)

    def _read_layout(self, base_dir: Path) -> Layout:
        return layout.read_layout(base_dir, self.train_split, self.eval_split, self.families)

    def _build_demo(self, folder: Path) -> None:
        demo.build(folder)
