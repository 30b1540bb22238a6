"""Training-step speed of an audio model: waveform, front-end, network, loss, backward, AdamW step.

Shared by the experiments' ``model_speed_test`` command and ``benchmarks/loader.py`` (which sets it beside
the data loader's rate).
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import Tensor

from models.audio_model import AudioModel


def training_step_seconds(
    model: AudioModel,
    waveform: Tensor,
    labels: Tensor,
    steps: int,
    repeats: int = 1,
    autocast_dtype: torch.dtype | None = None,
    warm_up_steps: int = 2,
) -> float:
    """Seconds per training step of ``model`` on one batch, the fastest of ``repeats`` runs of ``steps``
    steps after ``warm_up_steps`` untimed ones; every step runs the front-end (in training mode, with its
    augmentation), the network, cross-entropy, the backward pass and an AdamW step. autocast_dtype:
    mixed precision (torch.float16 or torch.bfloat16) as Lightning's 16-mixed / bf16-mixed run it."""
    device = waveform.device
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)

    def step() -> None:
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits, _ = model(waveform)
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warm_up_steps):
        step()
    timings = []
    for _ in range(repeats):
        _synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        _synchronize(device)
        timings.append((time.perf_counter() - start) / steps)
    return min(timings)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
