"""What every dataset shares: settings, demo data, the three roles of data, cache preparation, and the torch
Dataset over a cache.

Every dataset serves three roles: train (the clips trained on), validation (clips of the training domains,
for choosing a checkpoint or settings) and test (clips of every domain, reported and never used to choose
anything). A role is a selection from one cached split (a file list of the dataset: NSynth's split folders,
TAU's evaluation_setup files, the folder dataset's CSV), so several roles may share one cache file.

A dataset package (datasets/dcase20, datasets/nsynth, datasets/folder) subclasses CachedData, stating only
what differs: its DEFAULTS (SHARED_DEFAULTS plus its own settings), the keyword arguments of its own
settings, and two hooks: reading its on-disk layout into a Layout (which says which clips each role
serves), and generating its demo data (a dataset without demo data leaves demo_folder None).
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from datasets.audio import RESAMPLE_QUALITIES
from datasets.cache import (
    AUDIO_DTYPES,
    CACHE_FORMATS,
    RESTORE_DOWNLOAD,
    CacheIndex,
    CacheSpec,
    Clip,
    build_cache,
    build_lock,
    open_cache,
    partial_path,
    read_file_names,
    remove_stale_partials,
)
from datasets.subsets import check_subset_settings, training_subset
from errors import ConfigurationError

logger = logging.getLogger(__name__)

TRAIN, VALIDATION, TEST = "train", "validation", "test"
ROLES = (TRAIN, VALIDATION, TEST)
NO_DOMAIN = "all"  # the one domain of every clip of a dataset without domains (domain_kind None)
SHOWN = 5

# Settings every dataset has, with the same default (a dataset's DEFAULTS add its own and its comments).
SHARED_DEFAULTS = {
    "base_dir": None,  # the dataset folder; None: the generated demo data, where the dataset has one
    "cache_dir": None,  # where HDF5 caches (and the demo data) go; None: $FRITO_CACHE_DIR or ~/.cache/frito
    "sample_rate": 32000,  # Hz the audio is resampled to
    "clip_length": None,  # seconds per item (longer clips cropped, shorter padded); None: the dataset's own length
    "cache_format": "waveform",  # "waveform", or "spectrogram" for cached eval-mode log-mel frames
    "audio_dtype": "int16",  # storage of cached waveforms: "int16" or "float16"
    "resample_quality": "HQ",  # soxr quality: "HQ" or "VHQ"
    "skip_bad_files": False,  # leave out missing/unreadable/empty files instead of stopping
    "train_domains": None,  # domains to train on (and validate on); None: every domain of the training clips
    "drop_untrained_classes": False,  # True: leave classes without a training clip out of every role; False: stop
    "train_fraction": 1.0,  # share of each (label, domain) group of training clips trained on (nested subsets)
    "subset_seed": 0,  # seed of the training subset's choice (not the run's seed: a study's seeds share the subset)
    "prepare_workers": 2,  # decoding processes while preparing caches (0: in the main process)
}


@dataclass(frozen=True)
class Role:
    """The clips one role serves: those of the cached split `split`, all of them (files None) or those whose
    path is in `files`. Domains and classes narrow the choice further when items are read."""

    split: str
    files: frozenset[str] | None = None


@dataclass(frozen=True)
class Layout:
    """A dataset as read from its folder. root: the dataset folder; splits: the clips of each cached split;
    roles: which clips the train, validation and test roles serve; class_names, domain_names, subdomain_names:
    the vocabularies items are indexed into; listed_at (clip path -> "metadata.csv line 14"), restore: where an
    unusable file is listed and how to restore it, for the message naming it."""

    root: Path
    splits: dict[str, list[Clip]]
    roles: dict[str, Role]
    class_names: list[str]
    domain_names: list[str]
    subdomain_names: list[str]
    listed_at: dict[str, str] = field(default_factory=dict)
    restore: str = RESTORE_DOWNLOAD


def default_cache_dir() -> Path:
    """$FRITO_CACHE_DIR, else $XDG_CACHE_HOME/frito, else ~/.cache/frito."""
    if os.environ.get("FRITO_CACHE_DIR"):
        return Path(os.environ["FRITO_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "frito"


def check_fraction(key: str, value: float, meaning: str, example: float) -> None:
    """Raise ConfigurationError unless `value` is a share strictly between 0 and 1; meaning: what it is a share of."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1:
        raise ConfigurationError(f"{key}={value!r}: expected {meaning}, between 0 and 1 (exclusive), e.g. {example}")


def check_seed(split_seed: int) -> None:
    if isinstance(split_seed, bool) or not isinstance(split_seed, int):
        raise ConfigurationError(f"split_seed={split_seed!r}: expected an integer, e.g. 0")


class CachedData:
    """A dataset read from its real layout into HDF5 caches, with train, validation and test torch Datasets.

    Subclasses set the class attributes and implement `_read_layout` and `_build_demo`.
    """

    name: ClassVar[str]
    domain_kind: ClassVar[str | None]  # what a domain is: "device", ...; None: no domains (every clip NO_DOMAIN)
    group_names: ClassVar[tuple[str, str] | tuple[()]]  # how reports name the domains trained on, and the others
    native_clip_length: ClassVar[float]
    demo_clip_length: ClassVar[float | None] = None
    demo_folder: ClassVar[str | None] = None  # folder of the generated demo data; None: the dataset has none
    class_choice: ClassVar[str] = ""  # how a user chooses the classes, for messages (e.g. "set families=[...]")

    def __init__(
        self,
        *,
        base_dir: str | os.PathLike | None = SHARED_DEFAULTS["base_dir"],
        cache_dir: str | os.PathLike | None = SHARED_DEFAULTS["cache_dir"],
        sample_rate: int = SHARED_DEFAULTS["sample_rate"],
        clip_length: float | None = SHARED_DEFAULTS["clip_length"],
        cache_format: str = SHARED_DEFAULTS["cache_format"],
        audio_dtype: str = SHARED_DEFAULTS["audio_dtype"],
        resample_quality: str = SHARED_DEFAULTS["resample_quality"],
        skip_bad_files: bool = SHARED_DEFAULTS["skip_bad_files"],
        train_domains: Sequence[str] | None = SHARED_DEFAULTS["train_domains"],
        drop_untrained_classes: bool = SHARED_DEFAULTS["drop_untrained_classes"],
        train_fraction: float = SHARED_DEFAULTS["train_fraction"],
        subset_seed: int = SHARED_DEFAULTS["subset_seed"],
        prepare_workers: int = SHARED_DEFAULTS["prepare_workers"],
        mel: dict | None = None,
    ):
        """
        base_dir ... prepare_workers: as in SHARED_DEFAULTS (and the dataset's DEFAULTS).
        mel: the mel front-end's settings (needed for cache_format="spectrogram").
        """
        _check_settings(sample_rate, clip_length, cache_format, audio_dtype, resample_quality, prepare_workers, mel)
        check_subset_settings(train_fraction, subset_seed)
        self.sample_rate = int(sample_rate)
        self.cache_format = cache_format
        self.audio_dtype = audio_dtype
        self.resample_quality = resample_quality
        self.skip_bad_files = bool(skip_bad_files)
        self.prepare_workers = int(prepare_workers)
        self.mel = None if mel is None else dict(mel)
        self.cache_dir = (Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()).resolve()
        self.is_demo = base_dir is None
        if self.is_demo and not self.has_demo():
            raise ConfigurationError(
                f"basedataset.base_dir is required for the {self.name} dataset (it has no demo data): set it to the "
                f"dataset's folder; see datasets/{self.name}/README.md"
            )
        self.clip_length = self.resolved_clip_length(clip_length, base_dir)
        self.layout = self._read_layout(self._demo_dir() if self.is_demo else Path(base_dir).expanduser().resolve())
        if self.cache_dir.is_relative_to(self.layout.root):
            raise ConfigurationError(
                f"cache_dir {self.cache_dir} lies inside the dataset folder {self.layout.root}, which is never "
                "written to; choose a cache_dir outside it (or leave it None for ~/.cache/frito)."
            )
        self.class_names = list(self.layout.class_names)
        self.domain_names = list(self.layout.domain_names)
        self.subdomain_names = list(self.layout.subdomain_names)
        self.seen_domains = self._seen_domains(train_domains)
        self.class_names = self._trained_classes(bool(drop_untrained_classes))
        self.train_fraction, self.subset_seed = float(train_fraction), subset_seed
        self._keep_training_subset()
        self._check_roles()

    @classmethod
    def resolved_clip_length(cls, clip_length: float | None, base_dir: str | os.PathLike | None) -> float:
        """Seconds per item: ``clip_length``, or (None) the dataset's own length, its demo data's without a
        base_dir."""
        if clip_length is not None:
            return float(clip_length)
        return float(cls.demo_clip_length if base_dir is None and cls.has_demo() else cls.native_clip_length)

    @classmethod
    def has_demo(cls) -> bool:
        """Whether the dataset generates demo data to train on when base_dir is None."""
        return cls.demo_folder is not None

    @property
    def domain_noun(self) -> str:
        """How messages name a domain: the domain kind, or "domain" for a dataset without domains."""
        return self.domain_kind or "domain"

    @property
    def clip_samples(self) -> int:
        """Samples per waveform item."""
        return round(self.clip_length * self.sample_rate)

    def prepare(self) -> None:
        """Build the caches of every role's split that are missing; validate the ones that exist."""
        for split in self._splits():
            self._cache(split)

    def cache_files(self) -> dict[str, Path]:
        """The cache file of each split the roles use (built by prepare), keyed by split."""
        return {split: self._spec(split).path(self.cache_dir, self.layout.splits[split]) for split in self._splits()}

    def train_set(self) -> ClipDataset:
        """Training clips of the training domains (seen_domains), randomly cropped to clip_length."""
        return self._dataset(TRAIN)

    def validation_set(self) -> ClipDataset:
        """Validation clips, of the training domains only, cropped deterministically (from the start)."""
        return self._dataset(VALIDATION)

    def test_set(self) -> ClipDataset:
        """Test clips of every domain, cropped deterministically (from the start) to clip_length."""
        return self._dataset(TEST)

    def roles(self) -> dict[str, list[str]]:
        """{role: file names of the items it serves} for train, validation and test (from the caches, so files
        left out by skip_bad_files are not listed); the roles of a run, e.g. for a splits.json."""
        return {role: self._dataset(role).file_names() for role in ROLES}

    def _splits(self) -> list[str]:
        return list(dict.fromkeys(self.layout.roles[role].split for role in ROLES))

    def _role_domains(self, role: str) -> list[str]:
        """The domains a role serves: the training domains for train and validation, every domain for test."""
        return self.domain_names if role == TEST else self.seen_domains

    def _role_clips(self, role: str, domains: Sequence[str] | None = None) -> list[Clip]:
        """The clips of a role as the layout lists them, of the classes and of `domains` (None: the role's)."""
        selection = self.layout.roles[role]
        domains = set(self._role_domains(role) if domains is None else domains)
        classes = set(self.class_names)
        return [
            clip
            for clip in self.layout.splits[selection.split]
            if (selection.files is None or clip.path in selection.files)
            and clip.domain in domains
            and clip.label in classes
        ]

    def _read_layout(self, base_dir: Path) -> Layout:
        raise NotImplementedError

    def _build_demo(self, folder: Path) -> None:
        raise NotImplementedError

    def _demo_dir(self) -> Path:
        """The demo dataset's folder under cache_dir/demo, generated on first use (by one process at a time)."""
        folder = self.cache_dir / "demo" / self.demo_folder
        if folder.exists():
            return folder
        with build_lock(folder, f"generating the {self.name} demo data in {folder}"):
            if folder.exists():
                logger.info("Another process generated the demo dataset; using %s", folder)
                return folder
            remove_stale_partials(folder)
            partial = partial_path(folder)
            shutil.rmtree(partial, ignore_errors=True)
            logger.info("Generating the %s demo dataset in %s", self.name, folder)
            try:
                self._build_demo(partial)
                os.rename(partial, folder)
            finally:
                shutil.rmtree(partial, ignore_errors=True)
        return folder

    def _seen_domains(self, train_domains: Sequence[str] | None) -> list[str]:
        """The domains the training set holds: train_domains, checked against the training clips, or all of them."""
        split = self.layout.roles[TRAIN].split
        train_clips = self._role_clips(TRAIN, domains=self.domain_names)
        present = [domain for domain in self.domain_names if domain in {clip.domain for clip in train_clips}]
        if train_domains is None:
            return present
        if self.domain_kind is None:
            raise ConfigurationError(f"train_domains={train_domains!r}: {self.name} has no domains (every clip is "
                                     f"in one, {NO_DOMAIN!r}); leave basedataset.train_domains None")
        if isinstance(train_domains, str) or not all(isinstance(d, str) for d in train_domains):
            raise ConfigurationError(f"train_domains={train_domains!r}: expected a list of {self.domain_kind} names, "
                                     f"e.g. [{self.domain_names[0]!r}], or None for all")
        unknown = [domain for domain in train_domains if domain not in self.domain_names]
        if unknown or not train_domains:
            raise ConfigurationError(f"train_domains={list(train_domains)!r}: {unknown or 'empty list'} not among "
                                     f"the {self.domain_kind}s of {self.name}: {self.domain_names}")
        absent = [domain for domain in train_domains if domain not in present]
        if absent:
            raise ConfigurationError(
                f"train_domains={list(train_domains)!r}: {absent} have no clips in the training split {split!r}, "
                f"which holds {present}"
            )
        return [domain for domain in self.domain_names if domain in train_domains]

    def _trained_classes(self, drop_untrained: bool) -> list[str]:
        """The classes with a training clip in the training domains; the others stop here, or are left out of
        every role when drop_untrained."""
        trained = {clip.label for clip in self._role_clips(TRAIN)}
        untrained = [name for name in self.class_names if name not in trained]
        if not untrained:
            return self.class_names
        kind = self.domain_noun
        elsewhere = {name: set() for name in untrained}
        for clip in self._role_clips(TRAIN, domains=self.domain_names):
            if clip.label in elsewhere:
                elsewhere[clip.label].add(clip.domain)
        details = "; ".join(
            f"{name!r}: "
            + (
                f"training clips only of the {kind}s {sorted(elsewhere[name])}"
                if elsewhere[name]
                else "no training clip at all"
            )
            for name in untrained
        )
        where = f"the training {kind}s {self.seen_domains}"
        if not drop_untrained:
            choice = f", {self.class_choice}" if self.class_choice else ""
            raise ConfigurationError(
                f"{self.name}: the classes {untrained} have no training clip of {where}, so the model could never "
                f"learn them ({details}). Train on {kind}s that have them (basedataset.train_domains){choice}, or "
                "set basedataset.drop_untrained_classes=True to leave them out of training, validation and test."
            )
        kept = [name for name in self.class_names if name in trained]
        logger.warning(
            "Leaving out the classes %s, which have no training clip of %s (%s): drop_untrained_classes=True; "
            "%d classes remain",
            untrained,
            where,
            details,
            len(kept),
        )
        return kept

    def _keep_training_subset(self) -> None:
        """Restrict the train role to the clips train_fraction keeps (datasets.subsets), and log how many."""
        clips = self._role_clips(TRAIN)
        kept = frozenset(clip.path for clip in training_subset(clips, self.train_fraction, self.subset_seed))
        train = Role(self.layout.roles[TRAIN].split, kept)
        self.layout = replace(self.layout, roles={**self.layout.roles, TRAIN: train})
        logger.info("%s: train_fraction=%s (subset_seed=%d): %d of %d training clips kept, per label and %s",
                    self.name, self.train_fraction, self.subset_seed, len(kept), len(clips), self.domain_noun)

    def _check_roles(self) -> None:
        """Refuse an empty role; report what validation leaves out or lacks, and files that roles share."""
        clips = {role: self._role_clips(role) for role in ROLES}
        for role in ROLES:
            if not clips[role]:
                raise ConfigurationError(f"{self.name}: the {role} set is empty: {self._why_empty(role)}")
        every_domain = self._role_clips(VALIDATION, domains=self.domain_names)
        left_out = sorted({clip.domain for clip in every_domain} - set(self.seen_domains))
        if left_out:
            logger.info("%d validation clips of the %ss %s are left out: validation holds the training %ss %s only",
                        len(every_domain) - len(clips[VALIDATION]), self.domain_kind, left_out, self.domain_kind,
                        self.seen_domains)
        for kind, names, present in (
            (self.domain_kind, self.seen_domains, {clip.domain for clip in clips[VALIDATION]}),
            ("class", self.class_names, {clip.label for clip in clips[VALIDATION]}),
        ):
            lacking = [name for name in names if name not in present]
            if lacking:
                logger.warning("The validation set has no clip of the training %ss %s", kind, lacking)
        files = {role: {clip.path for clip in clips[role]} for role in ROLES}
        for first, second, meaning in (
            (VALIDATION, TEST, "choosing by validation chooses on test files: oracle selection"),
            (TRAIN, TEST, "test files are trained on"),
            (TRAIN, VALIDATION, "validation files are trained on"),
        ):
            shared = sorted(files[first] & files[second])
            if shared:
                logger.warning("The %s and %s sets share %d files, e.g. %s: %s",
                               first, second, len(shared), shared[:SHOWN], meaning)

    def _why_empty(self, role: str) -> str:
        split = self.layout.roles[role].split
        of_classes = self._role_clips(role, domains=self.domain_names)
        if of_classes:
            domains = sorted({clip.domain for clip in of_classes})
            return (
                f"its clips (split {split!r}) are of the {self.domain_kind}s {domains}, none of the training "
                f"{self.domain_kind}s {self.seen_domains}; train on some of them (basedataset.train_domains) or "
                "choose the validation clips differently (see the dataset's README)"
            )
        return f"its clips (split {split!r}) hold none of the classes {self.class_names}"

    def _spec(self, split: str) -> CacheSpec:
        return CacheSpec(
            dataset=self.name,
            split=split,
            source=str(self.layout.root),
            sample_rate=self.sample_rate,
            cache_format=self.cache_format,
            audio_dtype=self.audio_dtype if self.cache_format == "waveform" else "float16",
            resample_quality=self.resample_quality,
            mel=_full_mel_settings(self.mel) if self.cache_format == "spectrogram" else None,
        )

    def _cache(self, split: str) -> CacheIndex:
        spec = self._spec(split)
        clips = self.layout.splits[split]
        path = spec.path(self.cache_dir, clips)
        hint = f" (`python -m datasets.prepare {self.name} ...` or the experiment's prepare command)"
        if not path.exists():
            with build_lock(path, f"preparing {self.name} split {split!r} into {path}"):
                if not path.exists():
                    self._build(path, spec, split, clips)
        return open_cache(path, rebuild_hint=hint)

    def _build(self, path: Path, spec: CacheSpec, split: str, clips: Sequence[Clip]) -> None:
        others = sorted(p.name for p in path.parent.glob(f"{split}-*.h5"))
        if others:
            logger.info(
                "Caches of %s %s made with other settings exist in %s: %s", self.name, split, path.parent, others
            )
        logger.info("Preparing %s split %r (%d files) into %s", self.name, split, len(clips), path)
        build_cache(
            path,
            spec,
            clips,
            self.layout.root,
            workers=self.prepare_workers,
            skip_bad_files=self.skip_bad_files,
            features=self._mel_features() if self.cache_format == "spectrogram" else None,
            listed_at=self.layout.listed_at, restore=self.layout.restore,
        )

    def _frontend(self):
        from models.preprocess import AugmentMelSTFT

        return AugmentMelSTFT(**self.mel).eval()

    def _mel_features(self):
        frontend = self._frontend()

        def features(waveform: np.ndarray) -> np.ndarray:
            """(frames, n_mels) eval-mode log-mel; clips shorter than one FFT are padded with silence."""
            waveform = np.pad(waveform, (0, max(0, frontend.n_fft - len(waveform))))
            with torch.no_grad():
                return frontend(torch.from_numpy(waveform)[None])[0].T.numpy()

        return features

    def _item_length(self) -> int:
        """Samples (waveform) or frames (spectrogram) per item."""
        if self.cache_format == "waveform":
            return self.clip_samples
        return self._frontend().frames_for(self.clip_samples)

    def _dataset(self, role: str) -> ClipDataset:
        selection = self.layout.roles[role]
        index = self._cache(selection.split)
        labels = _remap(index.labels, index.label_names, self.class_names)
        domain_codes = _remap(index.domains, index.domain_names, self.domain_names)
        subdomains = _remap(index.subdomains, index.subdomain_names, self.subdomain_names)
        allowed = np.isin(domain_codes, [self.domain_names.index(domain) for domain in self._role_domains(role)])
        keep = (labels >= 0) & allowed & (subdomains >= 0)
        if selection.files is not None:
            names = read_file_names(index.path)
            keep &= np.fromiter((name in selection.files for name in names), dtype=bool, count=len(names))
        rows = np.flatnonzero(keep)
        return ClipDataset(index, rows, labels, domain_codes, subdomains, self._item_length(), role == TRAIN)


class ClipDataset(Dataset):
    """Clips of one cache file as dicts of audio (or log-mel), file name, label and domain indices.

    rows: the cache rows this dataset serves; labels, domains, subdomains: per cache row, already
    indexed into the Data object's name lists; length: samples (waveform) or frames (spectrogram) per
    item; random_crop: training crops at a random offset, evaluation from the start. Shorter clips are
    padded at the end with silence. The HDF5 file is opened lazily in each loader worker.
    """

    def __init__(
        self,
        index: CacheIndex,
        rows: np.ndarray,
        labels: np.ndarray,
        domains: np.ndarray,
        subdomains: np.ndarray,
        length: int,
        random_crop: bool,
    ):
        self.path = index.path
        self.data_name = index.data_name
        self.item_key = index.cache_format
        self.rows = rows
        self.starts = index.offsets[rows]
        self.stops = index.offsets[rows + 1]
        self.labels = labels[rows]
        self.domains = domains[rows]
        self.subdomains = subdomains[rows]
        self.length = int(length)
        self.random_crop = random_crop
        self.scale = index.scale
        self.pad_value = index.pad_value
        self._datasets = None
        self._file_pid = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        start, stop = int(self.starts[i]), int(self.stops[i])
        if stop - start > self.length:
            shift = int(torch.randint(stop - start - self.length + 1, ())) if self.random_crop else 0
            start += shift
            stop = start + self.length
        data, names = self._h5()
        audio = data[start:stop].astype(np.float32)
        if self.scale != 1.0:
            audio *= np.float32(self.scale)
        if self.item_key == "spectrogram":
            audio = audio.T
        if audio.shape[-1] < self.length:
            padding = [(0, 0)] * (audio.ndim - 1) + [(0, self.length - audio.shape[-1])]
            audio = np.pad(audio, padding, constant_values=self.pad_value)
        return {
            self.item_key: torch.from_numpy(np.ascontiguousarray(audio)),
            "file_name": names[int(self.rows[i])].decode(),
            "index": int(i),  # position in this dataset: multi-process validation drops sampler repeats by it
            "label": int(self.labels[i]),
            "domain": int(self.domains[i]),
            "subdomain": int(self.subdomains[i]),
        }

    def file_names(self) -> list[str]:
        """The file name of every item, in item order."""
        return read_file_names(self.path)[self.rows].tolist()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_datasets": None, "_file_pid": None}

    def _h5(self):
        """The audio (or spectrogram) and file-name datasets, opened once per process."""
        if self._datasets is None or self._file_pid != os.getpid():
            file = h5py.File(self.path, "r")
            self._datasets = (file[self.data_name], file["file_names"])
            self._file_pid = os.getpid()
        return self._datasets


def _remap(codes: np.ndarray, cache_names: list[str], names: list[str]) -> np.ndarray:
    """Turn a cache's per-clip codes into indices of `names` (-1 where the name is not there)."""
    lookup = {name: i for i, name in enumerate(names)}
    table = np.asarray([lookup.get(name, -1) for name in cache_names] + [-1], dtype=np.int64)
    return table[codes]


def _full_mel_settings(mel: dict) -> dict:
    """The mel front-end's settings with its defaults filled in, so a changed default changes the cache."""
    from models.preprocess import AugmentMelSTFT

    parameters = inspect.signature(AugmentMelSTFT).parameters.values()
    defaults = {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}
    return {**defaults, **mel}


def _check_settings(sample_rate, clip_length, cache_format, audio_dtype, resample_quality, prepare_workers, mel):
    if not isinstance(sample_rate, int) or sample_rate <= 0:
        raise ConfigurationError(
            f"sample_rate={sample_rate!r}: expected a positive number of samples per second, e.g. 32000"
        )
    if clip_length is not None and not (isinstance(clip_length, int | float) and clip_length > 0):
        raise ConfigurationError(
            f"clip_length={clip_length!r}: expected seconds > 0, or None for the dataset's own length"
        )
    choices = {
        "cache_format": (cache_format, CACHE_FORMATS),
        "audio_dtype": (audio_dtype, tuple(AUDIO_DTYPES)),
        "resample_quality": (resample_quality, RESAMPLE_QUALITIES),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigurationError(f"{key}={value!r}: expected one of {allowed}")
    if not isinstance(prepare_workers, int) or prepare_workers < 0:
        raise ConfigurationError(
            f"prepare_workers={prepare_workers!r}: expected a number of processes >= 0 (0: no workers)"
        )
    if cache_format == "spectrogram" and mel is None:
        raise ConfigurationError(
            "cache_format='spectrogram' stores log-mel frames and needs the mel settings: pass mel=<the "
            "models.preprocess.AugmentMelSTFT arguments>"
        )
    if mel is not None and mel.get("sr", sample_rate) != sample_rate:
        raise ConfigurationError(
            f"mel sr={mel['sr']} differs from basedataset sample_rate={sample_rate}; set both to the same rate"
        )
