"""Training and evaluating: the work behind the experiments' main and evaluate_only commands.

Both build the audio model, the data module and a Lightning Trainer writing into the run folder, run it,
then write the results (helpers.results.run_files) and the reports of the test split
(helpers.results.reports.finish): at the selected and the last epoch of a training, for the checkpoint of an
evaluation.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.exceptions import SIGTERMException

from datasets.impulse_responses import ImpulseResponseAugment
from errors import ConfigurationError
from helpers.augment.freq_mixstyle import FreqMixStyle
from helpers.checkpoint import CheckpointError, checkpoint_entry, read_checkpoint
from helpers.model_spec import build_audio_model, derived_settings, mel_settings, net_settings
from helpers.results.reports import finish
from helpers.results.run_files import write_results, write_splits
from helpers.training.classifier import AudioClassifier
from helpers.training.data import AudioDataModule
from helpers.training.run_folder import evaluation_folder, resume_checkpoint, run_folder, shared_with_child_processes
from helpers.training.schedule import lr_schedule
from helpers.training.swa import SwaSchedule
from helpers.training.trainer import (
    BEST_CHECKPOINT,
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    build_trainer,
    process_rank,
    wait_for_child_processes,
)
from models.audio_model import AudioModel

logger = logging.getLogger(__name__)


def train(dataset: ModuleType, run, config: dict, resume: str | None = None) -> dict[str, float]:
    """The main command: fit (continuing from ``resume``), then write the results and reports and print the
    summary of the test split at the selected and at the last epoch.

    resume: None for a new training; "last" (the newest checkpoints/last.ckpt of the runs folder), a run
    folder, or a .ckpt path to continue from with weights, SWA average, optimizer, schedule, epoch, model
    selection and random number generators restored.
    """
    pl.seed_everything(config["seed"], workers=True)
    run_dir = run_folder(run)
    resume_path = resume_checkpoint(resume, run, run_dir)
    resumed = read_checkpoint(resume_path) if resume_path is not None else None
    data = data_module(dataset, config)  # reads the dataset's file lists; no audio is decoded before fit
    config = with_class_count(config, data)
    model = build_audio_model(config)  # before any cache is built: pretrained weights fail fast
    logger.info("derived from the config: %s, models.net.n_classes=%d",
                ", ".join(f"{key}={value}" for key, value in derived_settings(config).items()),
                config["models"]["net"]["n_classes"])
    module = training_module(config, data, model)
    if resumed is not None:
        check_resumable(resumed, module)
        run.info["resumed_from"] = str(resume_path)
        logger.info("resuming the training of %s in %s", resume_path, run_dir)
    trainer = build_trainer(config["trainer"], run_dir, run, callbacks=(RunFiles(run_dir),), resumed=resumed)
    with shared_with_child_processes(run_dir, resume_path):
        try:
            trainer.fit(module, datamodule=data, ckpt_path=str(resume_path) if resume_path else None)
        except SIGTERMException as stop:  # Lightning's SystemExit would end the process with status 0
            logger.error("stopped by SIGTERM; continue with resume=%s", run_dir)
            raise SystemExit(128 + signal.SIGTERM) from stop
    wait_for_child_processes(trainer)
    selection = module.selection
    if selection.selected is None:  # no epoch was evaluated (e.g. limit_val_batches=0)
        return {}
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    files = [path for name in (BEST_CHECKPOINT, LAST_CHECKPOINT) if (path := checkpoint_dir / f"{name}.ckpt").exists()]
    if process_rank() == 0:
        files += write_results(run_dir, selection, data, data.test_file_names())
    moments = [(selection.label, selection.selected), ("last", selection.last)]
    return finish(run, run_dir, data, f"{run.experiment_info['name']}: training finished", moments, files)


def evaluate(dataset: ModuleType, run, config: dict, checkpoint_path: str | None) -> dict[str, float]:
    """The evaluate_only command: the checkpoint's network on the validation and test splits of the
    configured data; the test split is reported.

    The network, front-end, sample rate and clip length are those the checkpoint was trained with (its
    "frito" entry); the config's models.* do not apply. Domains are reported as seen or unseen by what the
    checkpoint was trained on (see :func:`trained_seen_domains`). Without a FileStorageObserver (-F) the
    reports go beside the checkpoint, into its run folder's evaluations/.
    """
    if not checkpoint_path:
        raise ConfigurationError("evaluate_only needs a checkpoint: add checkpoint=runs/<id>/checkpoints/best.ckpt")
    checkpoint = read_checkpoint(checkpoint_path)
    entry = checkpoint.entry
    logger.info("evaluate_only: network %s (rf_norm_t=%r) and front-end as trained; %s s clips at %s Hz",
                entry["net"]["arch"], entry["net"].get("rf_norm_t", ""), entry["clip_length"], entry["sample_rate"])
    config = {**config, "swa": checkpoint.has_swa, "basedataset": {
        **config["basedataset"], "sample_rate": entry["sample_rate"], "clip_length": entry["clip_length"]}}
    pl.seed_everything(config["seed"], workers=True)
    run_dir = evaluation_folder(run, checkpoint.path)
    data = AudioDataModule(dataset, config["basedataset"], entry["mel"], config["batch_size"], config["num_workers"])
    if list(data.class_names) != list(entry["class_names"]):
        raise ConfigurationError(
            f"checkpoint {checkpoint.path} was trained on the classes {entry['class_names']}, the configured data "
            f"has {list(data.class_names)}; evaluate it on the dataset (and families) it was trained on."
        )
    seen = trained_seen_domains(entry, data, checkpoint.path)
    module = training_module(config, data, checkpoint.untrained_model(), seen_domains=seen, entry=entry)
    checkpoint.load_into(module)
    trainer = build_trainer(config["trainer"], run_dir, run, checkpoints=False)
    with shared_with_child_processes(run_dir):
        trainer.validate(module, datamodule=data)
    wait_for_child_processes(trainer)
    if module.selection.last is None:
        return {}
    return finish(run, run_dir, data, f"{run.experiment_info['name']}: evaluation of {checkpoint.path}",
                  [("checkpoint", module.selection.last)])


def data_module(dataset: ModuleType, config: Mapping[str, Any]) -> AudioDataModule:
    """The configured data of ``dataset`` with the run's batch size, loader processes and (dir_p > 0) device
    impulse response augmentation of the training waveforms, its files read and checked before any cache."""
    data = AudioDataModule(dataset, config["basedataset"], mel_settings(config), config["batch_size"],
                           config["num_workers"])
    if config["dir_p"] > 0:
        settings = config["basedataset"]
        try:  # unusable files raise BadFilesError (shown as a message too); settings raise ValueError
            augment = ImpulseResponseAugment(config["dir_folder"], settings["sample_rate"], config["dir_p"],
                                             config["dir_domains"], settings["skip_bad_files"],
                                             settings["resample_quality"])
            augment.check_domains(data.seen_domains, data.domain_kind)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None
        data.waveform_augment = augment
    return data


def training_module(config: Mapping[str, Any], data: AudioDataModule, model: AudioModel,
                    seen_domains: Sequence[str] | None = None, entry: Mapping | None = None) -> AudioClassifier:
    """The training module for ``config``, ``model`` and the classes and domains of ``data``.

    seen_domains: the domains reported as seen (by default those ``data`` trains on); entry: the checkpoints'
    "frito" entry (by default the one that describes this config's model and data).
    """
    seen = list(data.seen_domains if seen_domains is None else seen_domains)
    if entry is None:
        entry = checkpoint_entry(net_settings(config), mel_settings(config), data.class_names, data.domain_names,
                                 seen, config["basedataset"]["sample_rate"], config["basedataset"]["clip_length"])
    return AudioClassifier(
        model=model,
        class_names=data.class_names,
        domain_names=data.domain_names,
        seen_domains=seen,
        lr=config["lr"],
        weight_decay=config["weight_decay"],
        lr_factor=lr_schedule(config["schedule_mode"], config["warm_up_len"], config["ramp_down_start"],
                              config["ramp_down_len"], config["last_lr_value"]),
        mixup_alpha=config["mixup_alpha"] if config["use_mixup"] else None,
        freq_mixstyle=FreqMixStyle(config["freq_mixstyle_p"], config["freq_mixstyle_alpha"])
        if config["freq_mixstyle_p"] > 0 else None,
        swa=SwaSchedule(config["swa_epoch_start"], config["swa_freq"]) if config["swa"] else None,
        checkpoint_entry=entry,
        model_selection=config["model_selection"],
    )


def with_class_count(config: Mapping[str, Any], data: AudioDataModule) -> dict[str, Any]:
    """``config`` with models.net.n_classes the data's number of classes: filled in when None, else checked
    (before any cache is built)."""
    n_classes, found = config["models"]["net"]["n_classes"], len(data.class_names)
    if n_classes is not None and n_classes != found:
        raise ConfigurationError(
            f"models.net.n_classes={n_classes} but the data has {found} classes ({', '.join(data.class_names)}); "
            f"drop models.net.n_classes (it follows the data) or set it to {found}."
        )
    models = config["models"]
    return {**config, "models": {**models, "net": {**models["net"], "n_classes": found}}}


class RunFiles(pl.Callback):
    """Writes splits.json (role -> file names, helpers.results.run_files) into the run folder when a training starts,
    once the data is prepared; global rank 0 only."""

    def __init__(self, run_dir: Path):
        self.run_dir = run_dir

    def on_fit_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            write_splits(self.run_dir, trainer.datamodule.roles())


def check_resumable(checkpoint, module: AudioClassifier) -> None:
    """Refuse a checkpoint that is not a training checkpoint, or from a different model or data."""
    if not checkpoint.can_resume:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} holds weights only (no optimizer or loop state) and cannot continue a "
            f"training; resume from the run's {CHECKPOINT_DIR}/{LAST_CHECKPOINT}.ckpt."
        )
    differences = checkpoint.resume_differences(module.checkpoint_entry, module, keeps_swa=module.swa is not None)
    if differences:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} comes from a different configuration: " + "; ".join(differences)
            + ". Resume with the settings it was trained with, or start a new training."
        )


def trained_seen_domains(entry: Mapping[str, Any], data, path: Path) -> list[str]:
    """The domains a checkpoint was trained on (its "frito" entry's seen_domains), for reporting seen against
    unseen; configured training domains that differ from the checkpoint's are logged."""
    configured = list(data.seen_domains)
    saved = list(entry["seen_domains"])
    kind = data.domain_kind
    unknown = [domain for domain in saved if domain not in data.domain_names]
    if unknown:
        raise ConfigurationError(
            f"checkpoint {path} was trained on the {kind}s {saved}, but the configured data has no "
            f"{unknown} (it has {list(data.domain_names)}); evaluate it on the dataset it was trained on."
        )
    if saved != configured:
        logger.warning(
            "checkpoint %s was trained on the %ss %s, the configured basedataset.train_domains give %s: seen and "
            "unseen are reported by the checkpoint's", path, kind, saved, configured,
        )
    else:
        logger.info("seen %ss (as trained): %s", kind, saved)
    return saved
