"""Timing a training step of an audio model: waveform, front-end, network, loss, backward, AdamW step.

The experiments' ``model_speed_test`` command times the configured model with it; the benchmarks import it
from here: ``benchmarks/loader.py`` (which sets it beside the data loader's rate) and ``benchmarks/gpu_check.py``
(whose whole-model section times :func:`training_step`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

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
    step = training_step(model, waveform, labels, torch.optim.AdamW(model.parameters(), lr=1e-5), autocast_dtype)
    for _ in range(warm_up_steps):
        step()
    timings = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        timings.append((time.perf_counter() - start) / steps)
    return min(timings)


def training_step(
    model: nn.Module,
    inputs: Tensor,
    labels: Tensor,
    optimizer: torch.optim.Optimizer,
    autocast_dtype: torch.dtype | None = None,
) -> Callable[[], None]:
    """One training step of ``model`` (inputs -> (logits, embedding)) on one batch, as a closure: forward
    and cross-entropy under autocast_dtype's mixed precision (None: none), backward, optimizer step."""

    def step() -> None:
        autocast = torch.autocast(inputs.device.type, dtype=autocast_dtype or torch.float32,
                                  enabled=autocast_dtype is not None)
        with autocast:
            logits, _ = model(inputs)
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA), so that a timer read afterwards includes it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
