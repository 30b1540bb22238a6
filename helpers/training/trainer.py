"""Lightning Trainer construction from the experiment's ``trainer`` config.

The ``trainer`` config holds ``pl.Trainer`` keywords. Keys of the original code's Lightning 1.x (and its
``use_tensorboard_logger`` switch) are accepted and translated by the entries of
:data:`LEGACY_TRAINER_KEYS`, with one notice line each. Loggers, callbacks, plugins and the output folder
are the framework's: every file a run writes goes under its run folder.

The ``DDP=N`` environment variable (the original code's) trains with N processes on this node through
Lightning's DDP strategy (NCCL on GPUs, gloo on the CPU). Launchers Lightning detects itself (torchrun,
SLURM's srun) need no DDP variable. Only global rank 0 writes: Lightning's loggers and checkpoints are
rank-zero only, and :func:`process_rank` lets the experiments keep the other ranks unobserved and quiet.
"""

from __future__ import annotations

import inspect
import logging
import os
import shutil
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint, ModelSummary
from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only

from errors import ConfigurationError
from helpers.checkpoint import Checkpoint, CheckpointIO
from helpers.results.record import RecordLogger, RunRecord
from helpers.results.selection import epoch_number
from helpers.training.progress import EpochLine, ProgressBar, ProgressLines, console_is_terminal

logger = logging.getLogger(__name__)

# pl.Trainer keywords the framework sets itself (the run folder, the record and TensorBoard loggers, checkpoints).
MANAGED_TRAINER_KEYS = ("logger", "callbacks", "plugins", "default_root_dir")

DDP_VARIABLE = "DDP"  # DDP=N: N processes on this node (Lightning's DDP strategy)
CHECKPOINT_DIR = "checkpoints"
BEST_CHECKPOINT = "best"  # checkpoints/best.ckpt: the selected epoch (helpers.results.selection)
LAST_CHECKPOINT = "last"  # checkpoints/last.ckpt: the latest epoch, rewritten (atomically) after each


@dataclass
class TrainerSettings:
    """pl.Trainer keywords after translation, plus what the framework adds around them."""

    kwargs: dict[str, Any] = field(default_factory=dict)
    callbacks: list[Callback] = field(default_factory=list)
    tensorboard: bool = False
    notices: list[str] = field(default_factory=list)


def trainer_keys() -> set[str]:
    """Every key the ``trainer`` config accepts: pl.Trainer keywords and the translated 1.x keys."""
    signature = inspect.signature(pl.Trainer.__init__)
    lightning_keys = {name for name in signature.parameters if name != "self"}
    return (lightning_keys - set(MANAGED_TRAINER_KEYS)) | set(LEGACY_TRAINER_KEYS)


def process_rank() -> int:
    """This process's global rank as the launcher set it (0 in a single-process run).

    Lightning's DDP launcher (DDP=N) passes LOCAL_RANK to the processes it starts; torchrun sets RANK,
    SLURM's srun SLURM_PROCID. Known before any process group exists, so Sacred's options can use it.
    """
    return int(rank_zero_only.rank)


def ddp_processes(environ: Mapping[str, str] = os.environ) -> int:
    """The N of DDP=N (1 when unset); ConfigurationError naming the value when it is not a positive integer."""
    value = environ.get(DDP_VARIABLE, "").strip()
    if not value:
        return 1
    if not value.isdigit() or int(value) < 1:
        raise ConfigurationError(
            f"{DDP_VARIABLE}={value!r}: expected the number of training processes on this node, e.g. DDP=2 "
            f"(unset it for one process)."
        )
    return int(value)


def translate_trainer_config(
    trainer_config: Mapping[str, Any], cuda_available: bool, processes: int = 1
) -> TrainerSettings:
    """Split the ``trainer`` config into pl.Trainer keywords, translating Lightning 1.x keys.

    ``cuda_available`` decides how GPU requests (``gpus``, ``precision=16``) are met; ``processes`` > 1
    (DDP=N) asks for that many devices under Lightning's DDP strategy.
    """
    settings = TrainerSettings()
    if processes > 1:
        settings.kwargs.update(devices=processes, strategy="ddp")
        backend = "NCCL" if cuda_available else "gloo"
        settings.notices.append(
            f"{DDP_VARIABLE}={processes}: {processes} processes (Lightning DDP, {backend}); each takes batch_size "
            f"examples per step, so the effective batch size is {processes} x batch_size"
        )
    for key, value in trainer_config.items():
        if key in MANAGED_TRAINER_KEYS:
            raise ConfigurationError(
                f"trainer.{key} is set by the framework (run folder, record and TensorBoard loggers, "
                "checkpoints); remove it from the config (use trainer.use_tensorboard_logger=True for "
                "TensorBoard)."
            )
        if processes > 1 and key in ("devices", "strategy", "gpus"):
            settings.notices.append(f"trainer.{key}={value!r} is replaced by {DDP_VARIABLE}={processes}")
            continue
        translate = LEGACY_TRAINER_KEYS.get(key)
        if translate is None or not translate(value, cuda_available, settings):
            settings.kwargs[key] = value
    return settings


def build_trainer(
    trainer_config: Mapping[str, Any],
    run_dir: Path,
    record: RunRecord | None = None,
    checkpoints: bool = True,
    callbacks: tuple[Callback, ...] = (),
    resumed: Checkpoint | None = None,
    progress_every: tuple[int, float] | None = None,
) -> pl.Trainer:
    """A pl.Trainer writing everything under ``run_dir``.

    trainer_config: the experiment's ``trainer`` config (1.x keys translated, notices logged).
    record: the run's record, which receives every logged figure (helpers.training.record).
    checkpoints: keep checkpoints/last.ckpt (every epoch, to resume from) and checkpoints/best.ckpt (the
        epoch the training module selects).
    callbacks: further callbacks of the command.
    resumed: the checkpoint a training resumes from, read and validated already (it is not read again).
    progress_every: (batches, seconds): when the output goes to a file, a progress line every that many
        batches or seconds (helpers.training.progress); None: one line per epoch only.

    On a terminal the run shows a progress bar; when the output goes to a file or a pipe the bar, whose
    updates would fill the file, gives way to plain lines (helpers.training.progress).
    trainer.enable_progress_bar=True/False, when given, chooses the bar or the lines.
    """
    settings = translate_trainer_config(trainer_config, torch.cuda.is_available(), ddp_processes())
    for notice in settings.notices:
        logger.info(notice)
    loggers: list[Logger] = []
    if record is not None:
        loggers.append(RecordLogger(record, run_dir.name))
    if settings.tensorboard:
        loggers.append(EpochTensorBoardLogger(save_dir=str(run_dir), name="tensorboard", version=""))
        logger.info("TensorBoard logs: tensorboard --logdir %s", run_dir / "tensorboard")
    all_callbacks = [*settings.callbacks, *callbacks]
    if checkpoints and settings.kwargs.get("enable_checkpointing", True):
        # Lightning's save_last only refreshes last.ckpt when best.ckpt changes: a checkpoint of its own
        # writes it after every epoch's validation, for resuming
        all_callbacks += [
            SelectedCheckpoint(run_dir / CHECKPOINT_DIR / f"{BEST_CHECKPOINT}.ckpt", resumed),
            LatestCheckpoint(dirpath=run_dir / CHECKPOINT_DIR, filename=LAST_CHECKPOINT, monitor=None, save_top_k=1,
                             auto_insert_metric_name=False, enable_version_counter=False),
        ]
    bar = settings.kwargs.pop("enable_progress_bar", None)
    if console_is_terminal() if bar is None else bar:
        all_callbacks.append(ProgressBar())
    else:
        if progress_every is not None:
            all_callbacks.append(ProgressLines(*progress_every))
        all_callbacks.append(EpochLine())
    kwargs = {"accelerator": "auto", "devices": 1, **settings.kwargs}
    if not checkpoints:  # nor Lightning's own default checkpoint in the run folder
        kwargs.setdefault("enable_checkpointing", False)
    return pl.Trainer(
        **kwargs,
        logger=loggers or False,
        callbacks=all_callbacks,
        enable_progress_bar=any(isinstance(callback, ProgressBar) for callback in all_callbacks),
        plugins=[CheckpointIO(resumed)],
        default_root_dir=str(run_dir),
    )


def wait_for_child_processes(trainer: pl.Trainer) -> None:
    """Rank 0 of DDP=N: wait until the processes Lightning's launcher started have finished, so that the
    run (and Sacred's capture of the console, which they share) ends after them."""
    for process in getattr(trainer.strategy.launcher, "procs", []):
        process.wait()


def quiet_lightning() -> None:
    """Silence Lightning output that does not concern these experiments; called once at start-up (by the
    experiments' command set-up), never inside a call. No DDP performance warning is silenced."""
    # torch 2.14 deprecates a pytree helper Lightning 2.6 still calls; nothing a user can change
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    # the training module logs per epoch, so a step logging interval longer than an epoch is harmless
    warnings.filterwarnings("ignore", message=r"The number of training batches \(\d+\) is smaller than the logging")
    # validation figures are computed over the gathered evaluation split: the same value in every process
    warnings.filterwarnings("ignore", message=r"It is recommended to use `self.log\(.*sync_dist=True")
    # DDP: Lightning's all_gather calls a torch helper torch deprecates
    warnings.filterwarnings("ignore", message=r"torch.distributed.nn.functional.all_gather is deprecated")
    # the training module drops the distributed sampler's repeated evaluation examples itself
    warnings.filterwarnings("ignore", message=r"Using `DistributedSampler` with the dataloaders")
    rank_zero_logger = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    if not any(isinstance(existing, _NoAdvertisements) for existing in rank_zero_logger.filters):
        rank_zero_logger.addFilter(_NoAdvertisements())


class SelectedCheckpoint(Callback):
    """Writes checkpoints/best.ckpt at the epoch the training module's model selection selects.

    Not Lightning's ModelCheckpoint: that compares only the epochs it saw in this run folder, so a training
    resumed into a new folder would keep as best its first resumed epoch however the earlier ones scored.
    The selection here covers the whole history (helpers.results.selection, restored from the checkpoint), and a
    resumed training starts from a copy of the best.ckpt of the run it continues.
    """

    def __init__(self, path: Path, resumed: Checkpoint | None = None):
        self.path = path
        self.resumed = resumed

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        earlier = None if self.resumed is None else self.resumed.path.parent / self.path.name
        if trainer.is_global_zero and earlier is not None and earlier.is_file() and not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(earlier, self.path)

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.sanity_checking or module.selection.selected_epoch != epoch_number(trainer.current_epoch):
            return
        trainer.save_checkpoint(self.path, weights_only=False)  # a whole training state, as last.ckpt


class LatestCheckpoint(ModelCheckpoint):
    """Writes checkpoints/last.ckpt after every epoch, to resume from; keeps no state in the checkpoints.

    Lightning's ModelCheckpoint stores its folder and best paths in every checkpoint and restores them on
    resume; a resumed training writes into a new run folder, so that state would name the old folder (and
    Lightning warns that the dirpath has changed). This one always writes into its own run folder and has
    nothing to restore."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore (see the class docstring)."""


class EpochTensorBoardLogger(TensorBoardLogger):
    """TensorBoard with the epoch (numbered from 1, as every output numbers it) as the x-axis of the figures
    logged per epoch, instead of Lightning's global step."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        metrics = dict(metrics)
        epoch = metrics.pop("epoch", None)
        super().log_metrics(metrics, epoch_number(int(epoch)) if epoch is not None else step)


class _NoAdvertisements(logging.Filter):
    """Drops Lightning's tips recommending its cloud products."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("💡 Tip")


# --- Lightning 1.x keys -------------------------------------------------------------------------------
# Each translation reads the 1.x value, fills the settings and adds one notice; it returns False when the
# value needs no translation (then the key goes to pl.Trainer unchanged).

Translation = Callable[[Any, bool, TrainerSettings], bool]


def _gpus(value, cuda_available: bool, settings: TrainerSettings) -> bool:
    wants_gpu = value not in (None, 0, "0", "", [])
    if wants_gpu and cuda_available:
        settings.kwargs.update(accelerator="gpu", devices=value)
        settings.notices.append(f"trainer.gpus={value!r} (Lightning 1.x) -> accelerator='gpu', devices={value!r}")
    elif wants_gpu:
        settings.kwargs.update(accelerator="cpu", devices=1)
        settings.notices.append(f"trainer.gpus={value!r} (Lightning 1.x): no GPU is visible, training on the CPU")
    else:
        settings.kwargs.update(accelerator="cpu", devices=1)
        settings.notices.append(f"trainer.gpus={value!r} (Lightning 1.x) -> accelerator='cpu'")
    return True


def _precision(value, cuda_available: bool, settings: TrainerSettings) -> bool:
    if str(value) != "16":
        return False
    precision = "16-mixed" if cuda_available else "bf16-mixed"
    settings.kwargs["precision"] = precision
    reason = "" if cuda_available else " (no GPU: the CPU's mixed precision is bfloat16)"
    settings.notices.append(f"trainer.precision=16 (Lightning 1.x) -> precision='{precision}'{reason}")
    return True


def _weights_summary(value, cuda_available: bool, settings: TrainerSettings) -> bool:
    depths = {"top": 1, "full": -1}
    if value is None:
        settings.kwargs["enable_model_summary"] = False
        settings.notices.append("trainer.weights_summary=None (Lightning 1.x) -> enable_model_summary=False")
        return True
    if value not in depths:
        raise ConfigurationError(
            f"trainer.weights_summary must be 'top', 'full' or None (Lightning 1.x), got {value!r}."
        )
    settings.callbacks.append(ModelSummary(max_depth=depths[value]))
    settings.notices.append(
        f"trainer.weights_summary={value!r} (Lightning 1.x) -> ModelSummary(max_depth={depths[value]})"
    )
    return True


def _reload_dataloaders(value, cuda_available: bool, settings: TrainerSettings) -> bool:
    settings.kwargs["reload_dataloaders_every_n_epochs"] = 1 if value else 0
    settings.notices.append(
        f"trainer.reload_dataloaders_every_epoch={value!r} (Lightning 1.x) -> "
        f"reload_dataloaders_every_n_epochs={1 if value else 0}"
    )
    return True


def _tensorboard(value, cuda_available: bool, settings: TrainerSettings) -> bool:
    settings.tensorboard = bool(value)
    if value:  # False is the experiments' default: nothing to translate
        settings.notices.append(
            f"trainer.use_tensorboard_logger={value!r} (original config key) -> TensorBoardLogger in the run folder"
        )
    return True


def _benchmark(value, cuda_available: bool, settings: TrainerSettings) -> bool:
    settings.kwargs["benchmark"] = value
    if not value:  # False is the experiments' default: nothing to report
        return True
    effect = "cuDNN autotuner; GPU runs are then not bit-reproducible" if cuda_available else "no effect on the CPU"
    settings.notices.append(f"trainer.benchmark={value!r} (Lightning 1.x key, same in Lightning 2) -> kept: {effect}")
    return True


def _num_sanity_val_steps(value, cuda_available: bool, settings: TrainerSettings) -> bool:
    settings.kwargs["num_sanity_val_steps"] = value
    settings.notices.append(
        f"trainer.num_sanity_val_steps={value!r} (Lightning 1.x key, same in Lightning 2) -> kept: "
        f"{value} validation batches are checked before training starts"
    )
    return True


LEGACY_TRAINER_KEYS: dict[str, Translation] = {
    "gpus": _gpus,
    "precision": _precision,
    "weights_summary": _weights_summary,
    "reload_dataloaders_every_epoch": _reload_dataloaders,
    "use_tensorboard_logger": _tensorboard,
    "benchmark": _benchmark,
    "num_sanity_val_steps": _num_sanity_val_steps,
}

