"""Running a trained frito model on audio: class probabilities and embeddings for clips and files.

    predictor = load_model("runs/<id>/checkpoints/best.ckpt")
    probabilities = predictor.predict(waveform, sample_rate)      # (n_classes,), sums to 1
    embedding = predictor.embed(waveform, sample_rate)            # (embed_dim,)
    report = predict_files(predictor, ["recordings/"], top_k=3, csv_path="predictions.csv")

Any channel count (averaged to mono) and sample rate (resampled with soxr to the checkpoint's) are
accepted. The model sees windows of the training clip length: a shorter clip is padded at the end with
silence (as the datasets pad), a longer one is scored in windows starting every ``hop_fraction`` of a
window (by default half a window), plus one ending at the clip's end when the hops miss it
(:func:`clip_window_starts`); the windows' probabilities (or embeddings) are averaged. Probabilities are
the softmax of the logits: the experiments are single-label classification.

:func:`cut_windows` is the one function that cuts windows out of audio, here and in the HEAR API
(helpers.hear), zero-padded wherever a window reaches beyond the audio. Windows are scored in batches:
those of consecutive clips share forward passes.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections import deque
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import soxr
import torch
from torch import Tensor

from datasets.audio import AudioError, load_audio
from errors import ConfigurationError, OutputExistsError
from helpers.checkpoint import read_checkpoint
from helpers.files import atomic_write
from models.audio_model import AudioModel
from models.passt import PATCH_SIZE

logger = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")
WINDOW_BATCH = 16  # windows per forward pass unless a batch size is given
SKIPPED_COLUMN = "skipped"  # the predict CSV's last column: why a file was skipped (empty for scored files)
Key = TypeVar("Key")  # what identifies a clip to predict_clips's caller, e.g. its path


def load_model(
    checkpoint: str | os.PathLike,
    device: str | torch.device | None = None,
    weights: str = "auto",
    hop_fraction: float = 0.5,
) -> Predictor:
    """Rebuild the network and front-end of a frito checkpoint for inference.

    Args:
        checkpoint: a .ckpt written by frito's training module (best.ckpt / last.ckpt of a run).
        device: where the model runs; None picks CUDA when available, else the CPU.
        weights: "swa", "plain", or "auto" (the SWA average when the checkpoint holds one).
        hop_fraction: step between the windows of a long clip, as a fraction of the window.
    """
    loaded = read_checkpoint(checkpoint)
    entry, spec = loaded.entry, loaded.spec
    model = loaded.build_model(weights)
    logger.info("Loaded %s (%s weights, %d classes)", loaded.path, loaded.choose_weights(weights),
                len(entry["class_names"]))
    return Predictor(model, entry["class_names"], spec.sample_rate, spec.clip_length, device, hop_fraction,
                     seen_domains=entry["seen_domains"], dataset=loaded.dataset)


class Predictor:
    """A trained network with its mel front-end, in eval mode, scoring whole clips window by window."""

    def __init__(
        self,
        model: AudioModel,
        class_names: Sequence[str],
        sample_rate: int,
        clip_length: float,
        device: str | torch.device | None = None,
        hop_fraction: float = 0.5,
        seen_domains: Sequence[str] | None = None,
        dataset: str | None = None,
    ):
        """
        Args:
            model: the front-end (models.preprocess.AugmentMelSTFT; its sr must be sample_rate) and the
                network (models.passt.PaSST) as trained.
            class_names: meaning of the network's outputs.
            sample_rate: rate in Hz the network was trained at; inputs are resampled to it.
            clip_length: seconds of audio per training clip: the window the network sees.
            device: where the model runs; None picks CUDA when available, else the CPU.
            hop_fraction: step between the windows of a long clip, as a fraction of the window (0, 1].
            seen_domains: the domains (devices, sources, ...) of the training data; None when not recorded.
            dataset: the name of the dataset trained on (datasets/<name>); None when not recorded.
        """
        mel, net = model.front_end, model.net
        if mel.sr != sample_rate:
            raise ValueError(f"the front-end expects {mel.sr} Hz but the checkpoint says sample_rate={sample_rate}")
        if len(class_names) != net.n_classes:
            raise ValueError(f"{len(class_names)} class names for a network with {net.n_classes} outputs")
        if not isinstance(hop_fraction, int | float) or isinstance(hop_fraction, bool) or not 0 < hop_fraction <= 1:
            raise ConfigurationError(
                f"hop_fraction={hop_fraction!r}: the step between the windows of a long clip must be a fraction of "
                "the window in (0, 1], e.g. hop_fraction=0.5 (windows overlapping by half) or 1 (no overlap)"
            )
        self.model = model.eval().to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
        self.class_names = list(class_names)
        self.seen_domains = None if seen_domains is None else list(seen_domains)
        self.dataset = dataset
        self.sample_rate = int(sample_rate)
        # the longest input the time encodings cover: n_cols patches of PATCH_SIZE frames at the time stride
        tstride = net.patch_embed.proj.stride[1]
        max_samples = (net.n_cols * tstride + PATCH_SIZE - 1) * mel.hopsize
        self.window_samples = min(round(clip_length * sample_rate), max_samples)
        if self.window_samples < round(clip_length * sample_rate):
            logger.warning("clip_length %.2f s exceeds the network's time encodings; windows of %.2f s are used",
                           clip_length, self.window_samples / sample_rate)
        self.hop_samples = max(1, round(self.window_samples * hop_fraction))

    @property
    def device(self) -> torch.device:
        """Where the model runs (it follows the model when the model is moved)."""
        return next(self.model.parameters()).device

    @property
    def shortest_window(self) -> int:
        """Samples of the shortest input the network takes: one patch of frames."""
        return self.model.front_end.hopsize * (PATCH_SIZE - 1) + 1

    def predict(self, waveform: np.ndarray | Tensor, sample_rate: int) -> np.ndarray:
        """Class probabilities (n_classes,) of one clip: (samples,) or (channels, samples) at sample_rate Hz."""
        ((_, probabilities),) = self.predict_clips([(None, waveform, sample_rate)])
        return probabilities

    def predict_clips(
        self, clips: Iterable[tuple[Key, np.ndarray | Tensor, int]], batch_size: int = WINDOW_BATCH
    ) -> Iterator[tuple[Key, np.ndarray]]:
        """(key, class probabilities) of each (key, waveform, sample_rate) clip, in order, as :meth:`predict`
        gives them; the windows of consecutive clips share forward passes of up to batch_size windows."""
        if batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1 window, got {batch_size}")
        waiting: deque[tuple[Key, int]] = deque()  # clips not handed out yet, with their number of windows
        queued = torch.zeros(0, self.window_samples)  # windows not scored yet
        scored = torch.zeros(0, len(self.class_names))  # window probabilities of the clips waiting, in order
        for key, waveform, sample_rate in clips:
            windows = self.windows(waveform, sample_rate)
            waiting.append((key, len(windows)))
            queued = torch.cat([queued, windows])
            while len(queued) >= batch_size:
                scored = torch.cat([scored, self._probabilities(queued[:batch_size])])
                queued = queued[batch_size:]
                scored = yield from _hand_out(waiting, scored)
        if len(queued):
            scored = torch.cat([scored, self._probabilities(queued)])
            yield from _hand_out(waiting, scored)

    def embed(self, waveform: np.ndarray | Tensor, sample_rate: int) -> np.ndarray:
        """The network's embedding (mean of its cls/dist tokens) of one clip, averaged over its windows."""
        _, embeddings = self.score(self.windows(waveform, sample_rate))
        return embeddings.mean(dim=0).numpy()

    def windows(self, waveform: np.ndarray | Tensor, sample_rate: int) -> Tensor:
        """The clip as mono at the model's rate, cut into (n_windows, window_samples) float32 windows."""
        mono = _mono_float(waveform)
        if int(sample_rate) != self.sample_rate:
            mono = soxr.resample(mono, int(sample_rate), self.sample_rate, quality="HQ").astype(np.float32)
        clip = torch.from_numpy(np.ascontiguousarray(mono))
        return cut_windows(clip, self.window_samples, clip_window_starts(len(clip), self.window_samples,
                                                                         self.hop_samples))

    @torch.no_grad()
    def score(self, windows: Tensor, batch_size: int = WINDOW_BATCH) -> tuple[Tensor, Tensor]:
        """(logits, embeddings) of each window of ``windows`` (n_windows, samples), float32 on the CPU, computed
        batch_size windows per forward pass."""
        logits, embeddings = [], []
        for batch in windows.split(batch_size):
            batch_logits, batch_embeddings = self.model(batch.to(self.device))
            logits.append(batch_logits.float().cpu())
            embeddings.append(batch_embeddings.float().cpu())
        return torch.cat(logits), torch.cat(embeddings)

    def _probabilities(self, windows: Tensor) -> Tensor:
        """Class probabilities of each window, all in one forward pass."""
        logits, _ = self.score(windows, batch_size=len(windows))
        return torch.softmax(logits, dim=-1)


def clip_window_starts(n_samples: int, window: int, hop: int) -> list[int]:
    """Where the windows of a clip of n_samples samples start: [0] when the clip fits one window (the window
    then runs past its end, into zero padding), else 0, hop, 2 hop, ... while a window fits, plus one window
    ending at the clip's end when those miss its last samples."""
    if n_samples <= window:
        return [0]
    starts = list(range(0, n_samples - window + 1, hop))
    if starts[-1] + window < n_samples:
        starts.append(n_samples - window)
    return starts


def cut_windows(audio: Tensor, window: int, starts: Sequence[int]) -> Tensor:
    """Windows of ``window`` samples of audio (..., samples) starting at each of ``starts``: (..., len(starts),
    window), on the audio's device. A start may lie before 0 and a window may run past the end: samples outside
    the audio are zeros (silence). Only the stretch of audio the windows cover is copied."""
    first, end = min(starts), max(starts) + window
    span = audio.new_zeros(*audio.shape[:-1], end - first)
    inside_from, inside_to = max(first, 0), min(end, audio.shape[-1])
    if inside_from < inside_to:
        span[..., inside_from - first : inside_to - first] = audio[..., inside_from:inside_to]
    offsets = torch.as_tensor(starts, device=audio.device) - first
    return span[..., offsets[:, None] + torch.arange(window, device=audio.device)]


@dataclass(frozen=True)
class FilePrediction:
    """One file's class probabilities and its top classes [(class name, probability)], best first."""

    path: str
    probabilities: np.ndarray
    top: list[tuple[str, float]]


@dataclass(frozen=True)
class PredictionReport:
    """The files scored, and the files skipped with the reason [(path, reason)]."""

    predictions: list[FilePrediction]
    skipped: list[tuple[str, str]]


def predict_files(
    predictor: Predictor,
    paths: Iterable[str | os.PathLike],
    top_k: int = 5,
    csv_path: str | os.PathLike | None = None,
    overwrite: bool = False,
    batch_size: int = WINDOW_BATCH,
) -> PredictionReport:
    """Classify audio files and folders (searched recursively for wav, flac, ogg and mp3).

    Files that cannot be decoded are skipped and listed in the report (nothing is logged per file: the
    caller reports them, e.g. the predict command prints each file once). With
    ``csv_path``, a CSV is written (atomically) with one row per scored file: file, top_1 ... top_k
    class names, then one probability column per class, and a last column "skipped", which holds the reason in
    the rows of the skipped files (listed after the scored ones). An existing CSV is only replaced with
    ``overwrite=True``. The windows of consecutive files are scored together, batch_size windows per
    forward pass (the probabilities are those of :meth:`Predictor.predict`, file by file).
    """
    if top_k < 1:
        raise ConfigurationError(f"top_k must be >= 1, got {top_k}")
    if csv_path is not None and Path(csv_path).exists() and not overwrite:
        raise OutputExistsError(f"{csv_path} exists; choose another CSV path (predictions_csv=...) or remove it "
                                "(predict_files(..., overwrite=True) replaces it)")
    files, skipped = _audio_files(paths)
    top_k = min(top_k, len(predictor.class_names))
    predictions = []
    clips = _readable_clips(files, predictor.sample_rate, skipped)
    for path, probabilities in predictor.predict_clips(clips, batch_size):
        best = np.argsort(-probabilities, kind="stable")[:top_k]
        top = [(predictor.class_names[index], float(probabilities[index])) for index in best]
        predictions.append(FilePrediction(str(path), probabilities, top))
    if csv_path is not None:
        text = _csv_text(predictions, skipped, predictor.class_names, top_k)
        atomic_write(Path(csv_path), lambda stream: stream.write(text))
    return PredictionReport(predictions, skipped)


def _readable_clips(
    files: Iterable[Path], sample_rate: int, skipped: list[tuple[str, str]]
) -> Iterator[tuple[Path, np.ndarray, int]]:
    """(path, waveform, sample_rate) of each file that decodes; the others are logged and added to skipped."""
    for path in files:
        try:
            yield path, load_audio(path, sample_rate), sample_rate
        except AudioError as error:
            skipped.append((str(path), str(error)))


def _hand_out(waiting: deque[tuple[Key, int]], scored: Tensor) -> Generator[tuple[Key, np.ndarray], None, Tensor]:
    """Yield (key, mean window probability) of the waiting clips whose windows are all scored; returns the
    probabilities of the windows of clips still waiting."""
    while waiting and waiting[0][1] <= len(scored):
        key, n_windows = waiting.popleft()
        yield key, scored[:n_windows].mean(dim=0).numpy()
        scored = scored[n_windows:]
    return scored


def _audio_files(paths: Iterable[str | os.PathLike]) -> tuple[list[Path], list[tuple[str, str]]]:
    """Files named directly (any extension) and audio files found in folders, sorted; missing paths skipped."""
    files, skipped = [], []
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    for entry in map(Path, paths):
        if entry.is_dir():
            found = sorted(p for p in entry.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
            if not found:
                logger.warning("No %s files in %s", "/".join(AUDIO_EXTENSIONS), entry)
            files.extend(found)
        elif entry.is_file():
            files.append(entry)
        else:
            skipped.append((str(entry), "no such file or folder"))
    if not files and not skipped:
        raise ConfigurationError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) found in {[str(p) for p in paths]}; "
                                 "give files= audio files or folders holding them")
    return files, skipped


def _csv_text(predictions: list[FilePrediction], skipped: list[tuple[str, str]], class_names: list[str],
              top_k: int) -> bytes:
    """One row per scored file (its top classes and probabilities), then one per skipped file with the reason
    in the last column, "skipped" (empty for the scored files)."""
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["file", *(f"top_{rank}" for rank in range(1, top_k + 1)), *class_names, SKIPPED_COLUMN])
    for prediction in predictions:
        labels = [name for name, _ in prediction.top]
        writer.writerow([prediction.path, *labels, *(f"{p:.6f}" for p in prediction.probabilities), ""])
    for path, reason in skipped:
        writer.writerow([path, *[""] * (top_k + len(class_names)), reason])
    return text.getvalue().encode()


def _mono_float(waveform: np.ndarray | Tensor) -> np.ndarray:
    """(samples,) or (channels, samples), float or integer PCM -> mono float32 (samples,)."""
    array = waveform.detach().cpu().numpy() if isinstance(waveform, Tensor) else np.asarray(waveform)
    if np.issubdtype(array.dtype, np.integer):
        array = array / float(np.iinfo(array.dtype).max + 1)
    elif not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"waveform must hold float or integer PCM samples, got dtype {array.dtype}")
    if array.ndim == 2:
        if array.shape[0] > array.shape[1]:
            raise ValueError(
                f"waveform of shape {array.shape} read as (channels, samples) has more channels than samples; "
                "pass (channels, samples), e.g. the transpose of soundfile's (frames, channels)"
            )
        array = array.mean(axis=0)
    elif array.ndim != 1:
        raise ValueError(f"waveform must be (samples,) or (channels, samples), got shape {array.shape}")
    if array.size == 0:
        raise ValueError("waveform has no samples")
    if not np.isfinite(array).all():
        raise ValueError("waveform contains NaN or infinite samples")
    return array.astype(np.float32)
