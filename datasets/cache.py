"""HDF5 caches: one file per dataset split holding decoded clips with their labels and domains.

A cache file is named after its split and a short hash of everything that determines its contents
(source folder, the split's file list and labels, sample rate, storage format and dtype, mel settings
for spectrogram caches, and PREP_VERSION), so a run with different settings builds a new file instead
of reading a stale one. Files are written to a temporary name in the same folder and renamed when
complete; every open re-validates the file. A missing file is built under a lock beside it (build_lock,
datasets.locking), so that of several processes wanting it one builds it and the others wait for it.
Decoding worker processes end with the process that started them, even when it is killed.

Layout of a cache file:
    audio        (total_samples,) int16 or float16   [cache_format="waveform"], clips concatenated
    spectrogram  (total_frames, n_mels) float16      [cache_format="spectrogram"]
    offsets      (n_clips + 1,) int64   clip i is rows offsets[i]:offsets[i + 1] of audio/spectrogram
    labels, domains, subdomains  (n_clips,) int32   indices into the JSON name lists in the attrs
    file_names   (n_clips,) str
    attrs: record (JSON: what made the cache, skipped files), label_names, domain_names,
           subdomain_names (JSON lists), pad_value (what padding means in the stored unit)
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from tqdm import tqdm

from datasets import audio, locking
from errors import UserError

logger = logging.getLogger(__name__)

PREP_VERSION = 1
CACHE_FORMATS = ("waveform", "spectrogram")
AUDIO_DTYPES = {"int16": np.int16, "float16": np.float16}
INT16_SCALE = 32768.0
DATA_NAMES = {"waveform": "audio", "spectrogram": "spectrogram"}
WAVEFORM_CHUNK = 1 << 16
SPECTROGRAM_CHUNK_FRAMES = 256
SHOWN_BAD_FILES = 5
RESTORE_DOWNLOAD = "Restore these files (re-extract the download)"  # how to restore a dataset's unusable files
PR_SET_PDEATHSIG = 1  # prctl option (linux/prctl.h): the signal a process receives when its parent ends
PARENT_POLL_SECONDS = 0.5  # where prctl is not available: how often a worker checks that its parent runs


class CacheError(UserError):
    """A cache file that exists but cannot be used (truncated, corrupt or incomplete)."""


class BadFilesError(UserError):
    """Files listed in a dataset's metadata that are missing, unreadable or empty."""


@dataclass(frozen=True)
class Clip:
    """One audio file of a split as the dataset's metadata describes it.

    path: location of the file relative to the dataset root, also the file name reported with each
    item; label: class name; domain: primary domain (recording device, instrument source);
    subdomain: secondary domain (city, instrument).
    """

    path: str
    label: str
    domain: str
    subdomain: str


@dataclass(frozen=True)
class CacheSpec:
    """The settings that determine what a cache file contains.

    source: absolute path of the dataset folder the audio is read from; mel: the complete mel
    front-end settings for spectrogram caches (None for waveform caches).
    """

    dataset: str
    split: str
    source: str
    sample_rate: int
    cache_format: str
    audio_dtype: str
    resample_quality: str
    mel: dict | None = None

    def record(self) -> dict:
        return {**asdict(self), "prep_version": PREP_VERSION}

    def path(self, cache_dir: Path, clips: Sequence[Clip]) -> Path:
        """Where the cache for these settings and this list of clips lives."""
        digest = hashlib.sha1(json.dumps(self.record(), sort_keys=True).encode())
        for clip in clips:
            digest.update(f"{clip.path}\t{clip.label}\t{clip.domain}\t{clip.subdomain}\n".encode())
        return Path(cache_dir) / self.dataset / f"{self.split}-{digest.hexdigest()[:10]}.h5"


@dataclass(frozen=True)
class CacheIndex:
    """The small per-clip arrays of a validated cache file (the audio stays on disk).

    pad_value: the stored value that stands for silence (0 for waveforms, the log-mel of digital
    silence for spectrograms); scale: what stored values are multiplied by to give float audio.
    """

    path: Path
    cache_format: str
    offsets: np.ndarray
    labels: np.ndarray
    domains: np.ndarray
    subdomains: np.ndarray
    label_names: list[str]
    domain_names: list[str]
    subdomain_names: list[str]
    record: dict
    pad_value: float
    scale: float

    @property
    def data_name(self) -> str:
        return DATA_NAMES[self.cache_format]

    def __len__(self) -> int:
        return len(self.labels)


def build_cache(
    path: Path,
    spec: CacheSpec,
    clips: Sequence[Clip],
    root: Path,
    workers: int = 2,
    skip_bad_files: bool = False,
    features: Callable[[np.ndarray], np.ndarray] | None = None,
    listed_at: Mapping[str, str] | None = None,
    restore: str = RESTORE_DOWNLOAD,
) -> None:
    """Decode `clips` (paths relative to `root`) into the cache file `path`.

    workers: decoding processes (0 decodes in this process). features: for spectrogram caches, maps a
    float32 waveform to a (frames, n_mels) array. Files that are missing, unreadable or empty raise
    BadFilesError listing them (with where each is listed, ``listed_at``: clip path -> e.g. "metadata.csv line
    14") and how to ``restore`` them, unless skip_bad_files, in which case they are left out and recorded.
    The file appears at `path` only when complete; an interrupted build leaves nothing behind.
    """
    if (features is None) != (spec.cache_format == "waveform"):
        raise ValueError(f"cache_format {spec.cache_format!r}: features must be given exactly for spectrograms")
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(path)
    report = (len(clips), skip_bad_files, spec, listed_at or {}, restore)
    bad = _files_missing_or_empty(clips, root)
    _report_bad_files(bad, *report)
    bad_paths = {clip_path for clip_path, _ in bad}
    todo = [clip for clip in clips if clip.path not in bad_paths]
    partial = partial_path(path)
    try:
        decode_failures, kept = _write_partial(partial, spec, todo, root, workers, features)
        bad += decode_failures
        _report_bad_files(decode_failures, *report)
        _write_index(partial, spec, kept, bad)
        with open(partial, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    logger.info("Cache %s: %d clips, %.1f MB", path, len(kept), path.stat().st_size / 1e6)


def open_cache(path: Path, rebuild_hint: str = "") -> CacheIndex:
    """Validate the cache file `path` and return its per-clip index.

    Raises CacheError naming the file and how to rebuild it when datasets are missing, lengths
    disagree, or the file is truncated or corrupt.
    """
    fix = f"Delete {path} and prepare again{rebuild_hint}; it is rebuilt from the dataset."
    try:
        with h5py.File(path, "r") as file:
            return _read_index(path, file)
    except CacheError as error:
        raise CacheError(f"Cache file {path} is not usable: {error}. {fix}") from None
    except (OSError, KeyError, ValueError, TypeError) as error:
        raise CacheError(f"Cache file {path} is truncated or corrupt ({error}). {fix}") from error


def build_lock(path: Path, what: str):
    """A context holding the lock on building `path` (a file or folder), waiting while another process holds it.

    what: what the holder does, for the message a waiting process logs. The lock file is `path` + ".lock".
    """
    return locking.exclusive(path.with_name(f"{path.name}.lock"), what)


def read_file_names(path: Path) -> np.ndarray:
    """The file name of every clip of the cache file `path` (validated by open_cache), as an array of str."""
    with h5py.File(path, "r") as file:
        return file["file_names"].asstr()[:]


def partial_path(path: Path) -> Path:
    """Where this process builds `path` (a file or folder) before renaming it into place."""
    return path.with_name(f"{path.name}.{socket.gethostname()}-{os.getpid()}.partial")


def remove_stale_partials(path: Path) -> None:
    """Delete partial builds of `path` left by processes of this host that no longer run."""
    host = socket.gethostname()
    for partial in path.parent.glob(f"{path.name}.*.partial"):
        owner_host, _, pid = partial.name[len(path.name) + 1 : -len(".partial")].rpartition("-")
        if owner_host == host and pid.isdigit() and not _process_alive(int(pid)):
            logger.info("Removing %s left by an interrupted preparation", partial)
            if partial.is_dir():
                shutil.rmtree(partial, ignore_errors=True)
            else:
                partial.unlink(missing_ok=True)


def to_storage(waveform: np.ndarray, audio_dtype: str) -> np.ndarray:
    """Convert a float waveform (nominal range [-1, 1]) to the cache's storage dtype."""
    if audio_dtype == "int16":
        return np.clip(np.round(waveform * INT16_SCALE), -INT16_SCALE, INT16_SCALE - 1).astype(np.int16)
    return waveform.astype(AUDIO_DTYPES[audio_dtype])


def storage_scale(audio_dtype: str) -> float:
    """Factor that turns stored samples back into float audio."""
    return 1.0 / INT16_SCALE if audio_dtype == "int16" else 1.0


def _decode(task: tuple[int, str, int, str, str | None]) -> tuple[int, np.ndarray | None, str | None]:
    """Worker: decode one file; failures come back as a message instead of an exception."""
    index, file_path, sample_rate, quality, audio_dtype = task
    try:
        waveform = audio.load_audio(file_path, sample_rate, quality)
    except audio.AudioError as error:
        return index, None, str(error)
    return index, waveform if audio_dtype is None else to_storage(waveform, audio_dtype), None


def _write_partial(
    partial: Path,
    spec: CacheSpec,
    clips: Sequence[Clip],
    root: Path,
    workers: int,
    features: Callable[[np.ndarray], np.ndarray] | None,
) -> tuple[list[tuple[str, str]], list[Clip]]:
    """Decode clips in worker processes and append them to the partial file in metadata order."""
    store_dtype = spec.audio_dtype if features is None else None
    tasks = [
        (i, str(root / clip.path), spec.sample_rate, spec.resample_quality, store_dtype) for i, clip in enumerate(clips)
    ]
    failures: list[tuple[str, str]] = []
    kept: list[Clip] = []
    offsets = [0]
    executor = (
        ProcessPoolExecutor(max_workers=workers, initializer=_end_with_parent, initargs=(os.getpid(),))
        if workers > 0
        else None
    )
    try:
        results: Iterable = executor.map(_decode, tasks, chunksize=4) if executor else map(_decode, tasks)
        with h5py.File(partial, "w") as file:
            data = None
            progress = tqdm(results, total=len(tasks), desc=f"{spec.dataset} {spec.split}", unit="clip", disable=None)
            for index, array, error in progress:
                if error is not None:
                    failures.append((clips[index].path, error))
                    continue
                if features is not None:
                    array = np.asarray(features(array), dtype=np.float16)
                if data is None:
                    data = _create_data(file, spec, features)
                data.resize(offsets[-1] + len(array), axis=0)
                data[offsets[-1] :] = array
                offsets.append(offsets[-1] + len(array))
                kept.append(clips[index])
            if data is None:
                _create_data(file, spec, features)
            file.create_dataset("offsets", data=np.asarray(offsets, dtype=np.int64))
    finally:
        if executor:
            executor.shutdown(wait=True, cancel_futures=True)
    return failures, kept


def _end_with_parent(parent_pid: int) -> None:
    """Worker initializer: make this worker end when the process that started it ends, however it ends.

    On Linux the kernel sends SIGKILL when the parent dies (prctl PR_SET_PDEATHSIG, tied to the parent's
    thread that started the pool, which is the thread building the cache and outlives the pool; a parent
    that died before the call is caught by the check after it). Elsewhere, or where the worker's parent is not that
    process (a fork server), a daemon thread ends the worker once `parent_pid` no longer runs.
    """
    if os.getppid() == parent_pid and _kill_when_parent_dies():
        if os.getppid() != parent_pid:
            os._exit(1)
        return
    threading.Thread(target=_exit_after, args=(parent_pid,), name="end-with-parent", daemon=True).start()


def _kill_when_parent_dies() -> bool:
    """Ask the Linux kernel to SIGKILL this process when its parent ends; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _exit_after(parent_pid: int) -> None:
    """End this process once `parent_pid` no longer runs or this process's own parent changes."""
    own_parent = os.getppid()
    while _process_alive(parent_pid) and os.getppid() == own_parent:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def _create_data(file: h5py.File, spec: CacheSpec, features: Callable | None) -> h5py.Dataset:
    if features is None:
        dtype = AUDIO_DTYPES[spec.audio_dtype]
        data = file.create_dataset("audio", shape=(0,), maxshape=(None,), dtype=dtype, chunks=(WAVEFORM_CHUNK,))
        data.attrs["pad_value"] = 0.0
        return data
    probe = np.asarray(features(np.zeros(spec.sample_rate // 10, dtype=np.float32)))
    n_mels = probe.shape[1]
    data = file.create_dataset(
        "spectrogram",
        shape=(0, n_mels),
        maxshape=(None, n_mels),
        dtype=np.float16,
        chunks=(SPECTROGRAM_CHUNK_FRAMES, n_mels),
    )
    data.attrs["pad_value"] = float(probe.min())
    return data


def _write_index(partial: Path, spec: CacheSpec, kept: Sequence[Clip], bad: Sequence[tuple[str, str]]) -> None:
    names = {key: sorted({getattr(clip, key) for clip in kept}) for key in ("label", "domain", "subdomain")}
    with h5py.File(partial, "a") as file:
        for key, dataset_name in (("label", "labels"), ("domain", "domains"), ("subdomain", "subdomains")):
            lookup = {name: i for i, name in enumerate(names[key])}
            codes = np.asarray([lookup[getattr(clip, key)] for clip in kept], dtype=np.int32)
            file.create_dataset(dataset_name, data=codes)
            file.attrs[f"{key}_names"] = json.dumps(names[key])
        file.create_dataset("file_names", data=[clip.path for clip in kept], dtype=h5py.string_dtype())
        record = {
            **spec.record(),
            "n_clips": len(kept),
            "n_skipped": len(bad),
            "skipped": [{"file": file_path, "reason": reason} for file_path, reason in bad],
        }
        file.attrs["record"] = json.dumps(record)


def _read_index(path: Path, file: h5py.File) -> CacheIndex:
    for attr in ("record", "label_names", "domain_names", "subdomain_names"):
        if attr not in file.attrs:
            raise CacheError(f"attribute {attr!r} is missing")
    record = json.loads(file.attrs["record"])
    cache_format = record.get("cache_format")
    if cache_format not in DATA_NAMES:
        raise CacheError(f"unknown cache_format {cache_format!r} in its record")
    required = (DATA_NAMES[cache_format], "offsets", "labels", "domains", "subdomains", "file_names")
    missing = [name for name in required if name not in file]
    if missing:
        raise CacheError(f"datasets {missing} are missing")
    n_clips = record.get("n_clips")
    lengths = {name: len(file[name]) for name in required[2:]}
    wrong = {name: length for name, length in lengths.items() if length != n_clips}
    if wrong:
        raise CacheError(f"the record says {n_clips} clips but {wrong} have other lengths")
    offsets = file["offsets"][:]
    data = file[DATA_NAMES[cache_format]]
    if len(offsets) != n_clips + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0) or offsets[-1] != len(data):
        raise CacheError(f"offsets do not describe the {len(data)} stored rows of {n_clips} clips")
    _read_last_row(data)
    return CacheIndex(
        path=Path(path),
        cache_format=cache_format,
        offsets=offsets,
        labels=file["labels"][:],
        domains=file["domains"][:],
        subdomains=file["subdomains"][:],
        label_names=json.loads(file.attrs["label_names"]),
        domain_names=json.loads(file.attrs["domain_names"]),
        subdomain_names=json.loads(file.attrs["subdomain_names"]),
        record=record,
        pad_value=float(data.attrs["pad_value"]),
        scale=storage_scale(record["audio_dtype"]) if cache_format == "waveform" else 1.0,
    )


def _read_last_row(data: h5py.Dataset) -> None:
    """Reading the final row fails on a file truncated after its metadata was written."""
    if len(data):
        np.asarray(data[len(data) - 1])


def _files_missing_or_empty(clips: Sequence[Clip], root: Path) -> list[tuple[str, str]]:
    bad = []
    for clip in clips:
        try:
            size = (root / clip.path).stat().st_size
        except OSError:
            bad.append((clip.path, "file not found"))
            continue
        if size == 0:
            bad.append((clip.path, "empty file (0 bytes)"))
    return bad


def _report_bad_files(bad: Sequence[tuple[str, str]], n_clips: int, skip: bool, spec: CacheSpec,
                      listed_at: Mapping[str, str], restore: str) -> None:
    if not bad:
        return
    summary = bad_files_summary(bad, n_clips, f"files of {spec.dataset} split {spec.split!r} (in {spec.source})",
                                listed_at)
    if skip:
        logger.warning("%s\nThey are left out (skip_bad_files=True) and listed in the cache's record.", summary)
        return
    raise BadFilesError(f"{summary}\n{restore}, or set basedataset.skip_bad_files=True to leave them out.")


def bad_files_summary(bad: Sequence[tuple[str, str]], n_files: int, what: str,
                      listed_at: Mapping[str, str] | None = None) -> str:
    """"<n> of <n_files> <what> are unusable:" and the first SHOWN_BAD_FILES (file, reason) pairs, one a line, each
    file with where it is listed (``listed_at``) when known."""
    listed_at = listed_at or {}
    shown = "\n".join(f"  {name}{f' ({listed_at[name]})' if name in listed_at else ''}: {reason}"
                      for name, reason in bad[:SHOWN_BAD_FILES])
    more = f"\n  ... and {len(bad) - SHOWN_BAD_FILES} more" if len(bad) > SHOWN_BAD_FILES else ""
    return f"{len(bad)} of {n_files} {what} are unusable:\n{shown}{more}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
