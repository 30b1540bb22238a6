"""Reading NSynth as extracted from the magenta json/wav archives.

Each split folder (nsynth-train, nsynth-valid, nsynth-test) holds examples.json, a dict keyed by
note_str whose entries carry instrument_family_str (the class), instrument_source_str (acoustic,
electronic, synthetic: the domain) and instrument_str (the instrument: the subdomain), and
audio/<note_str>.wav (16 kHz, 4 s). Instruments do not overlap between the splits.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from datasets.base import ROLES, Layout, Role
from datasets.cache import Clip
from datasets.metadata import LayoutError
from errors import ConfigurationError

SPLITS = ("nsynth-train", "nsynth-valid", "nsynth-test")
FIELDS = ("instrument_family_str", "instrument_source_str", "instrument_str")
NESTED_FOLDER = "nsynth"

EXPECTED_TREE = """\
base_dir/                     (or base_dir/nsynth/ holding the same)
├── nsynth-train/
│   ├── examples.json         {"<note_str>": {"note_str", "instrument_family_str", "instrument_source_str",
│   │                                         "instrument_str", "pitch", "velocity", ...}, ...}
│   └── audio/<note_str>.wav  (16 kHz, 4 s)
├── nsynth-valid/             (same)
└── nsynth-test/              (same)"""


def find_root(base_dir: Path, needed: Sequence[str]) -> Path:
    """The folder holding the split folders `needed`: base_dir itself or base_dir/nsynth."""
    for candidate in (base_dir, base_dir / NESTED_FOLDER):
        if all((candidate / split / "examples.json").is_file() for split in needed):
            return candidate
    if not base_dir.exists():
        state = "does not exist"
    else:
        missing = [split for split in needed if not (base_dir / split / "examples.json").is_file()]
        state = f"lacks {[f'{split}/examples.json' for split in missing]}"
        if base_dir.name in SPLITS:
            state += f" (it is a split folder itself; point base_dir at its parent {base_dir.parent})"
    raise LayoutError(
        f"basedataset.base_dir={str(base_dir)!r} {state}. Expected NSynth as extracted from the json/wav "
        f"archives of https://magenta.tensorflow.org/datasets/nsynth:\n{EXPECTED_TREE}"
    )


def read_layout(base_dir: Path, role_splits: dict[str, str], families: Sequence[str] | None) -> Layout:
    """The clips of the split folders named by role_splits ({role: split folder} for train, validation and test);
    families: the classes (None: those present in every split on disk)."""
    used = list(dict.fromkeys(role_splits[role] for role in ROLES))
    root = find_root(base_dir, used)
    on_disk = [split for split in dict.fromkeys((*SPLITS, *used)) if (root / split / "examples.json").is_file()]
    examples = {split: _read_examples(root / split / "examples.json") for split in on_disk}
    class_names = _choose_families(examples, role_splits["train"], families)
    splits = {
        split: [
            Clip(
                path=f"{split}/audio/{note}.wav",
                label=entry["instrument_family_str"],
                domain=entry["instrument_source_str"],
                subdomain=entry["instrument_str"],
            )
            for note, entry in examples[split].items()
        ]
        for split in used
    }
    classified = [clip for clips in splits.values() for clip in clips if clip.label in class_names]
    return Layout(
        root=root,
        splits=splits,
        roles={role: Role(role_splits[role]) for role in ROLES},
        class_names=class_names,
        domain_names=sorted(
            {entry["instrument_source_str"] for split in examples.values() for entry in split.values()}
        ),
        subdomain_names=sorted({clip.subdomain for clip in classified}),
    )


def _read_examples(path: Path) -> dict[str, dict]:
    """examples.json as {note_str: entry}, checking the fields used."""
    try:
        with open(path, encoding="utf-8") as handle:
            examples = json.load(handle)
    except json.JSONDecodeError as error:
        raise LayoutError(f"{path} is not valid JSON ({error}); re-extract it from the download") from error
    if not isinstance(examples, dict):
        raise LayoutError(f"{path}: expected a JSON object keyed by note_str, found a {type(examples).__name__}")
    for note, entry in examples.items():
        missing = [field for field in FIELDS if field not in entry]
        if missing:
            raise LayoutError(f"{path}: entry {note!r} lacks the fields {missing}")
    return examples


def _choose_families(examples: dict[str, dict], train_split: str, families: Sequence[str] | None) -> list[str]:
    per_split = {
        split: {entry["instrument_family_str"] for entry in entries.values()} for split, entries in examples.items()
    }
    if families is None:
        return sorted(set.intersection(*per_split.values()))
    if isinstance(families, str):
        raise ConfigurationError(
            f"families={families!r}: expected a list of instrument families, e.g. ['bass', 'brass']"
        )
    unknown = [family for family in families if family not in per_split[train_split]]
    if unknown or not families:
        raise ConfigurationError(
            f"families={list(families)!r}: {unknown or 'empty list'} not among the families of {train_split}: "
            f"{sorted(per_split[train_split])}"
        )
    return list(families)
