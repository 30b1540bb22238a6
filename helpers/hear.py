"""The HEAR 2021 API (https://hearbenchmark.com/hear-api.html) for any frito checkpoint.

    import helpers.hear as hear
    model = hear.load_model("runs/<id>/checkpoints/best.ckpt")
    scene = hear.get_scene_embeddings(audio, model)                     # (n_sounds, model.scene_embedding_size)
    embeddings, timestamps = hear.get_timestamp_embeddings(audio, model)
    # embeddings (n_sounds, n_timestamps, model.timestamp_embedding_size), timestamps (n_sounds, n_timestamps) in ms

``audio`` is (n_sounds, n_samples) mono float audio in [-1, 1] at ``model.sample_rate`` (the checkpoint's),
on any device. Every embedding has the same layout, the one hear21passt's "all" mode uses: the trained
head's logits (n_classes values), then the network's embedding (embed_dim values: the mean of the cls and
distillation tokens after the final norm), both of one window of audio through the checkpoint's front-end,
input transform and network (helpers.inference.Predictor.score); ``scene_embedding_size`` =
``timestamp_embedding_size`` = n_classes + embed_dim.

- Scene embeddings: each sound is cut into windows of the training clip length as helpers.inference's
  predict and embed cut it (one window zero-padded at the end when shorter, else windows ``hop_fraction`` of a
  clip apart plus one ending at the sound's end); the embedding is the mean of its windows' embeddings.
- Timestamp embeddings: every ``timestamp_hop_ms`` (50 ms) from 0 up to the sound's length, the embedding of
  the ``timestamp_window_ms`` of audio centred on that time, zero-padded beyond the sound's ends. The window
  is by default one patch of frames (16 frame hops of the front-end: 160 ms at PaSST's 10 ms hop, the window
  of hear21passt), the shortest input the network takes. A timestamp's centre is its exact time rounded to
  the nearest sample (halves up), so the positions never drift.

The windows are cut by helpers.inference.cut_windows and scored in batches spanning sounds and times; a batch
holds as many samples as predict's batches of training clips, so the memory a forward pass takes does not
grow with the length of the audio. Embeddings are returned on the CPU.
"""

from __future__ import annotations

import math
import os
from fractions import Fraction

import torch
from torch import Tensor, nn

from errors import ConfigurationError
from helpers.inference import WINDOW_BATCH, Predictor, clip_window_starts, cut_windows
from helpers.inference import load_model as load_predictor
from models.passt import PATCH_SIZE

HEAR_SAMPLE_RATES = (16000, 22050, 32000, 44100, 48000)  # the rates HEAR's datasets come at
TIMESTAMP_HOP_MS = 50.0


def load_model(
    model_file_path: str | os.PathLike,
    timestamp_window_ms: float | None = None,
    timestamp_hop_ms: float = TIMESTAMP_HOP_MS,
    hop_fraction: float = 0.5,
    weights: str = "auto",
    device: str | torch.device | None = None,
) -> HearModel:
    """The frito checkpoint at ``model_file_path`` as a HEAR model (a torch module).

    Args:
        model_file_path: a .ckpt of a frito training (best.ckpt / last.ckpt of a run).
        timestamp_window_ms: the audio each timestamp embedding sees, centred on its timestamp; None: one patch of
            frames (160 ms at a 10 ms frame hop).
        timestamp_hop_ms: the time between consecutive timestamps.
        hop_fraction: step between the windows of a scene longer than the training clip, as a fraction of it.
        weights: "swa", "plain", or "auto" (the SWA average when the checkpoint holds one).
        device: where the model runs; None picks CUDA when available, else the CPU.
    """
    return HearModel(load_predictor(model_file_path, device, weights, hop_fraction), timestamp_window_ms,
                     timestamp_hop_ms)


def get_scene_embeddings(audio: Tensor, model: HearModel) -> Tensor:
    """One embedding per sound: (n_sounds, model.scene_embedding_size) float32, the mean over the sound's
    training-clip windows."""
    audio = model.check_audio(audio)
    predictor = model.predictor
    starts = clip_window_starts(audio.shape[-1], predictor.window_samples, predictor.hop_samples)
    return model.window_embeddings(audio, predictor.window_samples, starts).mean(dim=1)


def get_timestamp_embeddings(audio: Tensor, model: HearModel) -> tuple[Tensor, Tensor]:
    """Embeddings at regular times: ((n_sounds, n_timestamps, model.timestamp_embedding_size) float32, the
    timestamps (n_sounds, n_timestamps) in milliseconds, each the centre of its embedding's window)."""
    audio = model.check_audio(audio)
    times_ms, centres = model.timestamps(audio.shape[-1])
    window = model.timestamp_window
    embeddings = model.window_embeddings(audio, window, [centre - window // 2 for centre in centres])
    return embeddings, times_ms.repeat(len(audio), 1)


class HearModel(nn.Module):
    """A frito checkpoint's model with the attributes the HEAR API reads (``sample_rate``,
    ``scene_embedding_size``, ``timestamp_embedding_size``) and the timestamp settings; ``.to(device)`` moves
    the model the embeddings are computed with."""

    def __init__(self, predictor: Predictor, timestamp_window_ms: float | None = None,
                 timestamp_hop_ms: float = TIMESTAMP_HOP_MS):
        """
        Args:
            predictor: the checkpoint's model (helpers.inference.load_model).
            timestamp_window_ms: the audio each timestamp embedding sees, centred on its timestamp; None: one patch
                of frames (160 ms at a 10 ms frame hop).
            timestamp_hop_ms: the time between consecutive timestamps.
        """
        super().__init__()
        if predictor.sample_rate not in HEAR_SAMPLE_RATES:
            raise ConfigurationError(
                f"the checkpoint's model takes {predictor.sample_rate} Hz audio; the HEAR API serves audio at "
                f"{', '.join(map(str, HEAR_SAMPLE_RATES))} Hz only: train with basedataset.sample_rate set to one of "
                "those"
            )
        if not timestamp_hop_ms > 0:
            raise ConfigurationError(f"timestamp_hop_ms={timestamp_hop_ms!r}: the time between timestamps must be "
                                     "positive, e.g. 50")
        self.predictor = predictor
        self.audio_model = predictor.model  # a submodule: moved by .to(device), as the HEAR evaluation does
        self.sample_rate = predictor.sample_rate
        self.timestamp_hop_ms = float(timestamp_hop_ms)
        if timestamp_window_ms is None:
            self.timestamp_window = PATCH_SIZE * predictor.model.front_end.hopsize
        else:
            self.timestamp_window = round(timestamp_window_ms * self.sample_rate / 1000)
        if not predictor.shortest_window <= self.timestamp_window <= predictor.window_samples:
            raise ConfigurationError(
                f"timestamp_window_ms={timestamp_window_ms!r} gives {self.timestamp_window} samples; the network "
                f"takes {predictor.shortest_window} (one patch of frames) to {predictor.window_samples} samples "
                f"(the training clip): choose timestamp_window_ms from "
                f"{1000 * predictor.shortest_window / self.sample_rate:.1f} to "
                f"{1000 * predictor.window_samples / self.sample_rate:.1f}"
            )
        self.scene_embedding_size = len(predictor.class_names) + predictor.model.net.embed_dim
        self.timestamp_embedding_size = self.scene_embedding_size
        self.samples_per_pass = WINDOW_BATCH * predictor.window_samples  # as many as predict's batches hold

    def check_audio(self, audio: Tensor) -> Tensor:
        """``audio`` as float32 (n_sounds, n_samples), or a ValueError naming what is wrong with it."""
        if not isinstance(audio, Tensor):
            raise ValueError(f"audio must be a torch.Tensor (n_sounds, n_samples), got {type(audio).__name__}")
        if audio.dim() != 2 or audio.shape[0] == 0 or audio.shape[1] == 0:
            raise ValueError(f"audio must be (n_sounds, n_samples) with at least one sound and one sample, got shape "
                             f"{tuple(audio.shape)}; a single sound is audio[None]")
        if not audio.is_floating_point():
            raise ValueError(f"audio must hold float samples in [-1, 1], got dtype {audio.dtype}")
        return audio.float()

    def timestamps(self, n_samples: int) -> tuple[Tensor, list[int]]:
        """The timestamps of a sound of n_samples samples, every timestamp_hop_ms from 0 up to its length: (1,
        n_timestamps) float32 milliseconds, and the sample at the centre of each (its time rounded, halves up)."""
        hop = Fraction(self.timestamp_hop_ms)
        samples_per_ms = Fraction(self.sample_rate, 1000)
        count = int(Fraction(n_samples) / (hop * samples_per_ms)) + 1
        centres = [math.floor(index * hop * samples_per_ms + Fraction(1, 2)) for index in range(count)]
        times_ms = torch.arange(count, dtype=torch.float64) * self.timestamp_hop_ms
        return times_ms.float()[None], centres

    def window_embeddings(self, audio: Tensor, window: int, starts: list[int]) -> Tensor:
        """[logits | embedding] of the ``window``-sample window at each start in every sound of ``audio``:
        (n_sounds, len(starts), embedding size), float32 on the CPU."""
        self.audio_model.eval()
        n_sounds = len(audio)
        starts_per_pass = max(1, self.samples_per_pass // (window * n_sounds))
        pieces = []
        for first in range(0, len(starts), starts_per_pass):
            chunk = starts[first : first + starts_per_pass]
            windows = cut_windows(audio, window, chunk)  # (n_sounds, len(chunk), window)
            logits, embeddings = self.predictor.score(windows.flatten(0, 1), batch_size=len(chunk) * n_sounds)
            pieces.append(torch.cat([logits, embeddings], dim=-1).unflatten(0, (n_sounds, len(chunk))))
        return torch.cat(pieces, dim=1)
