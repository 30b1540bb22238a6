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

from errors import ConfigurationError
from helpers.augment.method import Place, RunContext
from helpers.augment.places import TrainingMethods
from helpers.augment.registry import build_methods
from helpers.checkpoint import CheckpointError, checkpoint_entry, pretrained_start, read_checkpoint
from helpers.model_spec import ModelSpec
from helpers.results.record import RunRecord
from helpers.results.reports import finish
from helpers.results.run_files import write_results, write_splits
from helpers.training.classifier import AudioClassifier
from helpers.training.data import AudioDataModule
from helpers.training.progress import progress_every
from helpers.training.run_folder import RUNS_DIR, evaluation_folder, resume_checkpoint, shared_with_child_processes
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


def train(dataset: ModuleType, config: Mapping[str, Any], record: RunRecord, run_dir: Path,
          resume: str | None = None, runs: Path = RUNS_DIR) -> dict[str, float]:
    """The main command: fit (continuing from ``resume``), then write the results and reports and print the
    summary of the test split at the selected and at the last epoch.

    dataset: a package of datasets/; config: the experiment's whole config, checked already;
    record: the run's record (figures per epoch, files, facts); run_dir: the run folder (helpers.training.
    run_folder.run_folder chooses it);
    resume: None for a new training; "last" (the newest checkpoints/last.ckpt of the folder ``runs``), a run
    folder, or a .ckpt path to continue from with weights, SWA average, optimizer, schedule, epoch, model
    selection and random number generators restored.
    """
    pl.seed_everything(config["seed"], workers=True)
    every = progress_every(config)
    resume_path = resume_checkpoint(resume, run_dir, runs)
    resumed = read_checkpoint(resume_path) if resume_path is not None else None
    spec = model_spec(dataset, config)
    data = data_module(dataset, config, spec)  # reads the dataset's file lists; no audio is decoded before fit
    spec = spec.with_class_count(data.class_names)
    model = spec.build(pretrained_start(config["models"]["net"]))  # before any cache: pretrained weights fail fast
    logger.info("derived from the config: %s", ", ".join(f"{key}={value}" for key, value in spec.derived().items()))
    module = training_module(config, data, model, checkpoint_entry(spec, data.class_names, data.domain_names,
                                                                   data.seen_domains, dataset.Data.name))
    if resumed is not None:
        check_resumable(resumed, module)
        record.note("resumed_from", str(resume_path))
        logger.info("resuming the training of %s in %s", resume_path, run_dir)
    trainer = build_trainer(config["trainer"], run_dir, record, callbacks=(RunFiles(run_dir),), resumed=resumed,
                            progress_every=every)
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
    return finish(record, run_dir, data, f"{record.name}: training finished", moments, files)


def evaluate(dataset: ModuleType, config: Mapping[str, Any], record: RunRecord, checkpoint_path: str | None,
             out_dir: Path | None = None) -> dict[str, float]:
    """The evaluate_only command: the checkpoint's network on the validation and test splits of the
    configured data; the test split is reported.

    The network, front-end, sample rate and clip length are those the checkpoint was trained with (its model
    spec); the config's models.* do not apply. Domains are reported as seen or unseen by what the checkpoint
    was trained on (see :func:`trained_seen_domains`). The reports go into ``out_dir``, else beside the
    checkpoint, into its run folder's evaluations/.
    """
    if not checkpoint_path:
        raise ConfigurationError("evaluate_only needs a checkpoint: add checkpoint=runs/<id>/checkpoints/best.ckpt")
    every = progress_every(config)
    checkpoint = read_checkpoint(checkpoint_path)
    entry, spec = checkpoint.entry, checkpoint.spec
    logger.info("evaluate_only: network %s (rf_norm_t=%r) and front-end as trained; %s s clips at %s Hz",
                spec.net["arch"], spec.net.get("rf_norm_t", ""), spec.clip_length, spec.sample_rate)
    config = {**config, "swa": checkpoint.has_swa, "basedataset": {
        **config["basedataset"], "sample_rate": spec.sample_rate, "clip_length": spec.clip_length}}
    pl.seed_everything(config["seed"], workers=True)
    run_dir = evaluation_folder(checkpoint.path, out_dir)
    data = AudioDataModule(dataset, config["basedataset"], spec.mel, config["batch_size"], config["num_workers"])
    if list(data.class_names) != list(entry["class_names"]):
        raise ConfigurationError(
            f"checkpoint {checkpoint.path} was trained on the classes {entry['class_names']}, the configured data "
            f"has {list(data.class_names)}; evaluate it on the dataset (and families) it was trained on."
        )
    seen = trained_seen_domains(entry, data, checkpoint.path)
    module = training_module(config, data, checkpoint.untrained_model(), entry, seen_domains=seen, training=False)
    checkpoint.load_into(module)
    trainer = build_trainer(config["trainer"], run_dir, record, checkpoints=False, progress_every=every)
    with shared_with_child_processes(run_dir):
        trainer.validate(module, datamodule=data, verbose=False)  # the summary below shows the figures
    wait_for_child_processes(trainer)
    if module.selection.last is None:
        return {}
    return finish(record, run_dir, data, f"{record.name}: evaluation of {checkpoint.path}",
                  [("checkpoint", module.selection.last)])


def model_spec(dataset: ModuleType, config: Mapping[str, Any]) -> ModelSpec:
    """The model spec of an experiment's config, its clip length resolved by the dataset (None: the dataset's
    own); the number of classes follows once the data is read (ModelSpec.with_class_count)."""
    basedataset = config["basedataset"]
    return ModelSpec.from_config(
        config, clip_length=dataset.Data.resolved_clip_length(basedataset["clip_length"], basedataset["base_dir"]))


def data_module(dataset: ModuleType, config: Mapping[str, Any], spec: ModelSpec) -> AudioDataModule:
    """The configured data of ``dataset`` for the model ``spec`` with the run's batch size, loader processes
    and the active DG methods of the waveform place (e.g. device impulse responses, their files read and
    checked before any cache)."""
    data = AudioDataModule(dataset, {**config["basedataset"], "clip_length": spec.clip_length}, spec.mel,
                           config["batch_size"], config["num_workers"])
    data.waveform_methods = build_methods(spec.augment, run_context(config, data), [Place.WAVEFORM])[Place.WAVEFORM]
    return data


def run_context(config: Mapping[str, Any], data: AudioDataModule, model: AudioModel | None = None,
                seen_domains: Sequence[str] | None = None) -> RunContext:
    """What the DG methods may need to know of a run: its data, and (once built) its network's embedding size."""
    return RunContext(sample_rate=config["basedataset"]["sample_rate"], dataset=config["basedataset"],
                      domain_names=list(data.domain_names),
                      seen_domains=list(data.seen_domains if seen_domains is None else seen_domains),
                      domain_kind=data.domain_kind or "domain",
                      embedding_size=None if model is None else model.net.embed_dim)


def training_module(config: Mapping[str, Any], data: AudioDataModule, model: AudioModel, entry: Mapping,
                    seen_domains: Sequence[str] | None = None, training: bool = True) -> AudioClassifier:
    """The training module for ``config``, ``model`` and the classes and domains of ``data``.

    entry: the checkpoints' "frito" entry (helpers.checkpoint.checkpoint_entry: the model spec, classes and
    domains); seen_domains: the domains reported as seen (by default those ``data`` trains on); training:
    False for an evaluation of a trained model.
    """
    seen = list(data.seen_domains if seen_domains is None else seen_domains)
    # training: the DG methods of the training step; evaluation: the extra losses trained with, so their
    # weights load
    places = (Place.SPECTROGRAM, Place.BATCH, Place.LOSS) if training else (Place.LOSS,)
    methods = build_methods(entry["augment"], run_context(config, data, model, seen), places)
    return AudioClassifier(
        model=model,
        class_names=data.class_names,
        domain_names=data.domain_names,
        seen_domains=seen,
        lr=config["lr"],
        weight_decay=config["weight_decay"],
        lr_factor=lr_schedule(config["schedule_mode"], config["warm_up_len"], config["ramp_down_start"],
                              config["ramp_down_len"], config["last_lr_value"]),
        methods=TrainingMethods(methods.get(Place.SPECTROGRAM, ()), methods.get(Place.BATCH, ()),
                                methods[Place.LOSS]),
        swa=SwaSchedule(config["swa_epoch_start"], config["swa_freq"]) if config["swa"] else None,
        checkpoint_entry=entry,
        model_selection=config["model_selection"],
    )


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
    kind = data.domain_kind or "domain"
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
