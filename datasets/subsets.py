"""Seeded choices of clips: the order held-out splits take files in, whole groups of clips held out for
validation, and the training fraction.

Group hold-out (``hold_out_groups``): clips that share a group (TAU's recording location, ESC-50's Freesound
source file) are validated on or trained on together, so that validation is not leaked by recordings of the
training clips' own group. Per class, the groups are ranked by a seeded hash of their names; a class with two
or more groups holds out the first group, and then the next ones while that brings the class's held-out share of
clips closer to the fraction, always keeping one group for training. A group of clips of several classes counts
for the first of them (alphabetically). Adding groups moves few others.

The training fraction (``basedataset.train_fraction``) trains on a part of the training role, as the DCASE 2024
Task 1 splits do: each (label, domain) stratum of training clips is ranked once by a seeded hash of the file
names, and a fraction f keeps the first ceil(f x n) clips of each stratum of n. The ranking does not depend on f,
so the subsets are nested (the 5 % subset lies inside the 10 % one), and every non-empty stratum keeps a clip.
Its seed (``basedataset.subset_seed``) is a setting of its own, not the run's seed, so that the seeds of a
study vary the training of one subset rather than the subset.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from datasets.cache import Clip
from errors import ConfigurationError

# f x n is rounded to this many decimals before ceil, so that 0.07 x 100 (7.000000000000001 in floating point) is 7
FRACTION_DECIMALS = 9


def seeded_order(names: Sequence[str], seed: int) -> list[str]:
    """``names`` ranked by sha1("<seed>/<name>"): the order held-out splits take files or locations in. It does
    not depend on the input order, and adding names moves few others."""
    return sorted(names, key=lambda name: hashlib.sha1(f"{seed}/{name}".encode()).hexdigest())


def hold_out_groups(clips: Sequence[Clip], group_of: Mapping[str, str], fraction: float, seed: int) -> set[str]:
    """The names of the groups held out for validation (see the module docstring).

    clips: the clips to choose from; group_of: each clip's group, by path; fraction: the share of each class's
    clips aimed at; seed: the seed of the ranking (seeded_order).
    """
    classes: dict[str, set[str]] = defaultdict(set)
    for clip in clips:
        classes[group_of[clip.path]].add(clip.label)
    sizes = Counter(group_of[clip.path] for clip in clips)
    per_class: dict[str, list[str]] = defaultdict(list)
    for group, labels in classes.items():
        per_class[min(labels)].append(group)
    held_out = set()
    for members in per_class.values():
        ranked = seeded_order(members, seed)
        target = fraction * sum(sizes[group] for group in members)
        count = 0
        for group in ranked[:-1]:
            if count and abs(count + sizes[group] - target) >= abs(count - target):
                break
            held_out.add(group)
            count += sizes[group]
    return held_out


def check_subset_settings(train_fraction: float, subset_seed: int) -> None:
    """Raise ConfigurationError unless train_fraction is a share in (0, 1] and subset_seed an integer."""
    if isinstance(train_fraction, bool) or not isinstance(train_fraction, int | float) or not 0 < train_fraction <= 1:
        raise ConfigurationError(
            f"basedataset.train_fraction={train_fraction!r}: expected the share of each (label, domain) group of "
            "training clips to train on, above 0 and at most 1, e.g. 0.1 (1.0: every training clip)"
        )
    if isinstance(subset_seed, bool) or not isinstance(subset_seed, int):
        raise ConfigurationError(
            f"basedataset.subset_seed={subset_seed!r}: expected an integer seed of the training subset, e.g. 0"
        )


def kept_per_stratum(n_clips: int, fraction: float) -> int:
    """How many of a stratum's n_clips the fraction keeps: ceil(fraction x n_clips), f x n rounded to
    FRACTION_DECIMALS decimals first; at least one of a non-empty stratum, all of them at fraction 1."""
    return math.ceil(round(fraction * n_clips, FRACTION_DECIMALS))


def training_subset(clips: Sequence[Clip], fraction: float, seed: int) -> list[Clip]:
    """The clips a training fraction keeps, in the given order: of each (label, domain) stratum, the first
    kept_per_stratum(n, fraction) in the order seeded_order(paths, seed)."""
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for clip in clips:
        strata[clip.label, clip.domain].append(clip.path)
    kept = set()
    for paths in strata.values():
        kept.update(seeded_order(paths, seed)[: kept_per_stratum(len(paths), fraction)])
    return [clip for clip in clips if clip.path in kept]
