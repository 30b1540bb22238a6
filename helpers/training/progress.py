"""What a training shows while it runs: Lightning's progress bar on a terminal, plain lines in a file.

On a terminal (the console's standard output is one) the run shows :class:`ProgressBar`, Lightning's tqdm
bar with the epoch numbered as every other output numbers it ("epoch 3/20", helpers.results.selection).
When the output goes to a file or a pipe (a log, a study's launch log, a batch job) bar updates would fill
it, so :class:`ProgressLines` writes a plain log line every ``progress_every_batches`` batches or
``progress_every_seconds`` seconds, whichever comes first, with the rate and the time left of the epoch,
and :class:`EpochLine` one line per epoch with its headline figures and the training's time left.

Sacred's output capture (with an observer: ``-F runs/``, the default run folder) points the process's
standard output at a pipe for the whole run, so the console is judged before the capture starts:
:func:`remember_console` records it in the environment (processes Lightning starts for DDP inherit it),
and :func:`console_is_terminal` reads it back.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import Callback, TQDMProgressBar
from pytorch_lightning.callbacks.progress.tqdm_progress import convert_inf

from errors import ConfigurationError
from helpers.results.selection import epoch_number

logger = logging.getLogger(__name__)

CONSOLE_VARIABLE = "FRITO_CONSOLE"  # "terminal" or "file": the console as it was before Sacred's capture
FALLBACK_COLUMNS = 100  # the bar's width when a terminal reports no width (a bare pseudo-terminal)
EPOCH_LINE_FIGURES = ("train/loss", "val/acc", "val/acc_unseen", "test/acc", "test/acc_unseen")


def remember_console() -> None:
    """Record whether standard output is a terminal now, before Sacred's capture replaces it with a pipe."""
    os.environ[CONSOLE_VARIABLE] = "terminal" if sys.stdout.isatty() else "file"


def console_is_terminal() -> bool:
    """Whether the run's output goes to a terminal: as :func:`remember_console` recorded it, else (no Sacred
    run: the Python API) as standard output is now."""
    recorded = os.environ.get(CONSOLE_VARIABLE)
    return recorded == "terminal" if recorded else sys.stdout.isatty()


def progress_every(config: Mapping[str, Any]) -> tuple[int, float]:
    """(batches, seconds) between two progress lines, from the config's progress_every_batches and
    progress_every_seconds; ConfigurationError naming a value that is not a positive number."""
    batches, seconds = config["progress_every_batches"], config["progress_every_seconds"]
    if not isinstance(batches, int) or isinstance(batches, bool) or batches < 1:
        raise ConfigurationError(f"progress_every_batches={batches!r}: expected a whole number of batches >= 1")
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds <= 0:
        raise ConfigurationError(f"progress_every_seconds={seconds!r}: expected a number of seconds > 0")
    return batches, float(seconds)


def epoch_label(trainer: pl.Trainer) -> str:
    """"epoch 3/20" (numbered from 1, as every output numbers epochs); "epoch 3" without an epoch limit."""
    number = epoch_number(trainer.current_epoch)
    limit = trainer.max_epochs
    return f"epoch {number}/{limit}" if limit is not None and limit > 0 else f"epoch {number}"


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, its epoch numbered from 1 ("epoch 3/20") and without the logger's version."""

    def init_train_tqdm(self):
        return _with_a_width(super().init_train_tqdm())

    def init_validation_tqdm(self):
        return _with_a_width(super().init_validation_tqdm())

    def on_train_epoch_start(self, trainer: pl.Trainer, *args) -> None:
        """As Lightning's, with the epoch's label set before the bar is first drawn."""
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        self.train_progress_bar.set_description(epoch_label(trainer), refresh=False)
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0

    def get_metrics(self, trainer: pl.Trainer, module: pl.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, module)
        metrics.pop("v_num", None)  # the run folder's name: the summary names it
        return metrics


class ProgressLines(Callback):
    """A log line every ``every_batches`` batches or ``every_seconds`` seconds of training or evaluation,
    whichever comes first: the batch, the rate and the time left of the epoch's training or evaluation, e.g.
    "epoch 3/20: training batch 40/125, 2.10 batches/s, 0:00:41 left"."""

    def __init__(self, every_batches: int, every_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.every_batches = every_batches
        self.every_seconds = every_seconds
        self.clock = clock
        self._started = self._last_line = 0.0
        self._done = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start()

    def on_validation_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._start()

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch, batch_idx: int):
        self._batch_done(trainer, "training", trainer.num_training_batches)

    def on_validation_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, outputs, batch,
                                batch_idx: int, dataloader_idx: int = 0) -> None:
        if not trainer.sanity_checking:
            self._batch_done(trainer, "evaluation", sum(trainer.num_val_batches))

    def _start(self) -> None:
        self._started = self._last_line = self.clock()
        self._done = 0

    def _batch_done(self, trainer: pl.Trainer, stage: str, total: float) -> None:
        self._done += 1
        now = self.clock()
        due = self._done % self.every_batches == 0 or now - self._last_line >= self.every_seconds
        if not trainer.is_global_zero or not due or self._done >= total:
            return
        self._last_line = now
        rate = self._done / max(now - self._started, 1e-9)
        of_total = f"/{int(total)}" if total != float("inf") else ""
        left = f", {_duration((total - self._done) / rate)} left" if total != float("inf") else ""
        where = f"{epoch_label(trainer)}: {stage}" if trainer.state.fn == "fit" else stage  # evaluate_only: no epoch
        logger.info("%s batch %d%s, %.2f batches/s%s", where, self._done, of_total, rate, left)


class EpochLine(Callback):
    """One log line per epoch with the headline figures, how long the epoch took and the training's time left
    (the mean epoch so far times the epochs to go), e.g. "epoch 3/20 (0:01:05, about 0:18:25 left): ..."."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._fit_started = self._epoch_started = 0.0
        self._first_epoch = 0

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._fit_started = self.clock()
        self._first_epoch = trainer.current_epoch  # a resumed training starts later

    def on_train_epoch_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        self._epoch_started = self.clock()

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        now = self.clock()
        timing = _duration(now - self._epoch_started)
        if trainer.max_epochs is not None and trainer.max_epochs > 0:
            epochs_done = trainer.current_epoch + 1 - self._first_epoch
            per_epoch = (now - self._fit_started) / epochs_done
            timing += f", about {_duration(per_epoch * (trainer.max_epochs - trainer.current_epoch - 1))} left"
        metrics = trainer.callback_metrics
        figures = ", ".join(f"{name} {float(metrics[name]):.4f}" for name in EPOCH_LINE_FIGURES if name in metrics)
        logger.info("%s (%s): %s", epoch_label(trainer), timing, figures)


def _with_a_width(bar):
    """A bar on a terminal that reports no width (0 columns) would draw nothing: give it a fixed width."""
    if bar.dynamic_ncols and (bar.ncols is None or bar.ncols <= 0):
        bar.dynamic_ncols = False
        bar.ncols = FALLBACK_COLUMNS
    return bar


def _duration(seconds: float) -> str:
    return str(timedelta(seconds=round(seconds)))
