"""A small synthetic stand-in for TAU Urban Acoustic Scenes 2022 Mobile, in the real on-disk layout, with the
DCASE 2024 Task 1 subsets in their published format.

As the real TAU 2022 is TAU 2020 cut into 1 s files, this demo is the TAU 2020 demo (datasets/dcase20/demo.py:
ten scenes, six training and two evaluation locations per scene, one 2 s segment per location recorded on the
six seen devices, and on s4-s6 too at the evaluation locations) cut into 1 s files, parts 0 and 1 of each
segment: 720 training files, 360 evaluation files, 44.1 kHz 24-bit mono.

split_setup/split<p>.csv (p = 5, 10, 25, 50, 100) list training files like the published subsets: whole
recordings (both parts of a segment as one device recorded it), per scene about p % of its 36 recordings
(round(p / 100 x 36): 2, 4, 9, 18, 36), each subset inside the next larger one. A scene's recordings are taken
in pairs, one device at two locations, the scenes' first pairs rotating through the devices (see subset_order):
so holding a location out for validation (from the subset, see datasets/tau_mobile.py) leaves every scene clips
to train on, and every subset trains on all six seen devices, as the real subsets do.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np
import soundfile

from datasets.dcase20 import demo as tau2020
from datasets.dcase22.layout import DATASET_FOLDER, SUBSETS_FOLDER

VERSION = f"2.{tau2020.VERSION}"  # this file's version, then the TAU 2020 demo's: a change to either is new data
SEED = 2022
CLIP_LENGTH = 1.0
PARTS = round(tau2020.CLIP_LENGTH / CLIP_LENGTH)  # 1 s files per segment
SUBSET_PERCENTS = (5, 10, 25, 50, 100)  # the DCASE 2024 Task 1 subsets


def build(folder: Path) -> None:
    """Write the demo dataset into `folder`/TAU-urban-acoustic-scenes-2022-mobile-development/."""
    root = folder / DATASET_FOLDER
    (root / "audio").mkdir(parents=True)
    train, evaluate = [], []
    parts_of: dict[tuple[str, str, int, str], list[str]] = {}
    samples = round(CLIP_LENGTH * tau2020.SAMPLE_RATE)
    for recording in tau2020.recordings():
        stem = f"audio/{recording.scene}-{recording.identifier}-{recording.segment}"
        names = [f"{stem}-{part}-{recording.device}.wav" for part in range(PARTS)]
        for part, name in enumerate(names):
            audio = recording.audio[part * samples : (part + 1) * samples]
            soundfile.write(root / name, audio, tau2020.SAMPLE_RATE, subtype="PCM_24")
            row = (name, recording.scene, recording.identifier, recording.device)
            (train if recording.in_train else evaluate).append(row)
        if recording.in_train:
            parts_of[recording.scene, recording.identifier, recording.segment, recording.device] = names
    tau2020.write_tables(root, train, evaluate)
    write_subsets(root / SUBSETS_FOLDER, parts_of)


def write_subsets(folder: Path, parts_of: dict[tuple[str, str, int, str], list[str]]) -> None:
    """split<p>.csv for each of SUBSET_PERCENTS: filename and scene_label of the files of the recordings the
    subset takes (see the module docstring). parts_of: the files of each training recording, by (scene,
    location identifier, segment, device)."""
    per_scene: dict[str, list[tuple[str, str, int, str]]] = defaultdict(list)
    for key in parts_of:
        per_scene[key[0]].append(key)
    ordered = {scene: subset_order(scene_index, keys) for scene_index, (scene, keys) in enumerate(per_scene.items())}
    folder.mkdir()
    for percent in SUBSET_PERCENTS:
        rows = [
            (name, scene)
            for scene, keys in ordered.items()
            for key in keys[: max(1, round(percent / 100 * len(keys)))]
            for name in parts_of[key]
        ]
        tau2020.write_tsv(folder / f"split{percent}.csv", ("filename", "scene_label"), rows)


def subset_order(scene_index: int, keys: list[tuple[str, str, int, str]]) -> list[tuple[str, str, int, str]]:
    """One scene's training recordings in the order the subsets take them: in pairs, each pair one device at two
    locations. Pair j is device number (scene_index + j) mod n_devices at locations number 2t + d and 2t + d + 1
    (mod n_locations), t = j // n_devices its round and d the device's number, locations numbered in a seeded
    order. So a held-out validation location never takes a device's last recording of the smaller subsets, and
    the scenes' first pairs rotate through the devices."""
    rng = np.random.default_rng([SEED, scene_index])
    locations = [sorted({key[1] for key in keys})[i] for i in rng.permutation(len({key[1] for key in keys}))]
    devices = sorted({key[3] for key in keys})
    by_pair = {(key[1], key[3]): key for key in keys}
    order = []
    for j in range(len(keys) // 2):
        number = (scene_index + j) % len(devices)
        start = 2 * (j // len(devices)) + number
        for offset in (0, 1):
            order.append(by_pair[locations[(start + offset) % len(locations)], devices[number]])
    return order
