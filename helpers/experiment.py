"""What every experiment shares: config checks, command options and the commands.

An experiment file (``ex_<dataset>.py``) creates the Sacred ``Experiment``, states its own config (chained
with the shared one by :func:`helpers.defaults.add_config`) and calls :func:`add_commands` with its dataset
package, which adds

  main                 train on the training split, validating on the evaluation split every epoch
  evaluate_only        evaluate ``checkpoint`` on the evaluation split
  test_loaders         summarise one batch of each data loader
  model_speed_test     forward+backward spectrograms per second of the configured model
  plot_attention_mask  PNG of the configured attention pattern over the configured patch grid
  prepare              build the dataset caches
  predict              classify audio files with a trained checkpoint, writing a CSV
  export               write a trained checkpoint (with its front-end) as TorchScript and ONNX

and a config hook that rejects unknown keys and bad values before any work (and, for a dataset without
demo data, a missing basedataset.base_dir). Files a run writes go into
its run folder: the FileStorageObserver's folder (``-F runs/``), else ``runs/<timestamp>``.

Multi-process runs (DDP=N, torchrun, SLURM; see the README): Lightning's DDP launcher starts the
other processes by running the same command line again. Only global rank 0 is observed, logs at INFO and
writes into the run folder; the processes it starts receive its run folder and resume checkpoint through
the environment. Dataset caches are prepared under a file lock, so only one process builds them.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import signal
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.utilities import rank_zero_only
from pytorch_lightning.utilities.exceptions import SIGTERMException
from sacred import Experiment
from sacred.config import chain_evaluate_config_scopes
from sacred.observers import FileStorageObserver
from sacred.utils import apply_backspaces_and_linefeeds
from torch.utils.data import DataLoader

from datasets.base import default_cache_dir
from helpers.command_options import command_options
from helpers.config_check import ConfigurationError, Section, check_keys, check_values, keywords_of
from helpers.export import export as export_model
from helpers.inference import load_model, predict_files
from helpers.plots import write_attention_mask_plot
from helpers.reports import console_summary, write_reports
from helpers.schedule import lr_schedule
from helpers.swa import SwaSchedule
from helpers.trainer import (
    CHECKPOINT_DIR,
    LAST_CHECKPOINT,
    MONITOR,
    build_trainer,
    process_rank,
    trainer_keys,
    translate_trainer_config,
    wait_for_child_processes,
)
from helpers.training_module import AudioClassifier
from models.network import get_model
from models.preprocess import AugmentMelSTFT
from helpers.checkpoint import FRITO_VERSION, build_network, rebuild_network

logger = logging.getLogger(__name__)

RUNS_DIR = Path("runs")
LAST_CHECKPOINT_FILE = f"{LAST_CHECKPOINT}.ckpt"  # checkpoints/last.ckpt, rewritten after every epoch
# Rank 0 hands these to the processes Lightning's DDP launcher starts (they run the same command line):
RUN_DIR_VARIABLE = "FRITO_RUN_DIR"
RESUME_VARIABLE = "FRITO_RESUME_FROM"
PREPARE_LOCK = ".prepare.lock"  # in the cache folder: one process at a time builds caches
HEADLINE = ("loss", "acc", "macro_acc", "acc_seen", "acc_unseen")
DEMO_NOTICE = (
    "basedataset.base_dir is None: training on the bundled demo data with the CPU demo preset "
    "(small model, short clips, few epochs); set basedataset.base_dir=... for the dataset and the paper's defaults"
)
# Commands that read no data: they take their settings from a checkpoint, or show Sacred's information.
FROM_CHECKPOINT = ("predict", "export")
WITHOUT_DATASET = (*FROM_CHECKPOINT, "print_config", "print_dependencies", "save_config", "print_named_configs")


def add_commands(ex: Experiment, dataset: ModuleType) -> None:
    """Give ``ex`` the shared command options, config checks and commands for ``dataset``.

    dataset: a package of ``datasets/`` exporting DEFAULTS (the ``basedataset`` config) and Data.
    """
    ex.captured_out_filter = apply_backspaces_and_linefeeds
    for package, version in (("torch", torch.__version__), ("pytorch-lightning", pl.__version__)):
        # recorded with each run beside what Sacred detects; Sacred rejects local versions such as +cu130
        ex.add_package_dependency(package, version.split("+")[0])
    ex.config(command_options)

    def check_config(config, command_name, logger):
        check_keys(config, config_sections(ex, dataset))
        check_values(config)
        if config["basedataset"]["base_dir"] is None:
            check_demo(dataset, command_name, logger)

    ex.config_hook(check_config)

    def other_ranks_unobserved(options):
        """Processes other than global rank 0 have no observers, print no config and log warnings only."""
        if process_rank() != 0:
            options.update({"--unobserved": True, "--loglevel": "WARNING", "--print-config": False})

    ex.option_hook(other_ranks_unobserved)

    @ex.capture
    def settings(_config, models, basedataset, trainer):
        """The run's config as plain dicts. Naming the sections lets Sacred accept the keys a user adds
        inside them (e.g. trainer.limit_train_batches); check_config has vetted every key already."""
        return plain(_config)

    @ex.main
    def main(_run, resume):
        """Train on the training split, validating on the evaluation split every epoch."""
        return train(dataset, _run, settings(), resume)

    @ex.command
    def evaluate_only(_run, checkpoint):
        """Evaluate the checkpoint given by checkpoint=PATH on the evaluation split."""
        return evaluate(dataset, _run, settings(), checkpoint)

    @ex.command(unobserved=True)
    def test_loaders():
        """Summarise one batch of the training and of the evaluation loader."""
        summarise_loaders(dataset, settings())

    @ex.command(unobserved=True)
    def model_speed_test(speed_test_batch_size, speed_test_steps):
        """Forward+backward spectrograms per second of the configured model (GPU when present)."""
        return speed_test(settings(), speed_test_batch_size, speed_test_steps)

    @ex.command
    def plot_attention_mask(_run, plot_path):
        """PNG of the configured rf_norm_t pattern over the configured patch grid."""
        path = Path(plot_path) if plot_path else run_folder(_run) / "attention_mask.png"
        return str(attention_mask_plot(settings()["models"]["net"], path))

    @ex.command(unobserved=True)
    def prepare():
        """Build the dataset caches (the demo data first when basedataset.base_dir is None)."""
        prepared_data(dataset, settings())

    @ex.command
    def predict(_run, checkpoint, files, top_k, weights, predictions_csv, batch_size):
        """Classify files=PATH_OR_FOLDER with checkpoint=PATH: top-k per file and a CSV of all probabilities."""
        return predict_command(_run, checkpoint, files, top_k, weights, predictions_csv, batch_size)

    @ex.command
    def export(_run, checkpoint, weights, export_dir, export_formats, export_seconds):
        """Write checkpoint=PATH with its mel front-end as TorchScript and ONNX, checked against PyTorch."""
        if not checkpoint:
            raise ConfigurationError("export needs a checkpoint: add checkpoint=runs/<id>/checkpoints/best.ckpt")
        out_dir = Path(export_dir) if export_dir else run_folder(_run) / "export"
        written = export_model(checkpoint, out_dir, export_formats, export_seconds, weights)
        for fmt, path in written.items():
            print(f"{fmt}: {path}")
        return {fmt: str(path) for fmt, path in written.items()}


def predict_command(run, checkpoint: str | None, files, top_k: int, weights: str,
                    predictions_csv: str | None, batch_size: int) -> dict[str, Any]:
    """The predict command: top-k classes per file on the console, all probabilities in a CSV; the windows
    of consecutive files are scored batch_size at a time."""
    if not checkpoint or not files:
        raise ConfigurationError(
            "predict needs a checkpoint and files: add checkpoint=runs/<id>/checkpoints/best.ckpt files=DIR_OR_FILE"
        )
    paths = [files] if isinstance(files, str) else list(files)
    csv_path = Path(predictions_csv) if predictions_csv else run_folder(run) / "predictions.csv"
    predictor = load_model(checkpoint, weights=weights)
    report = predict_files(predictor, paths, top_k=top_k, csv_path=csv_path, batch_size=batch_size)
    for prediction in report.predictions:
        ranked = ", ".join(f"{label} {probability:.2f}" for label, probability in prediction.top)
        print(f"{prediction.path}: {ranked}")
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")
    print(f"{len(report.predictions)} files classified, {len(report.skipped)} skipped; probabilities in {csv_path}")
    return {"classified": len(report.predictions), "skipped": len(report.skipped), "csv": str(csv_path)}


def check_demo(dataset: ModuleType, command_name: str, run_logger: logging.Logger) -> None:
    """Without basedataset.base_dir: the demo notice where the dataset has demo data and the command uses the
    configured data or model; else, for a command that reads the data, an error asking for base_dir."""
    if dataset.Data.has_demo():
        if command_name not in FROM_CHECKPOINT:
            run_logger.info(DEMO_NOTICE)
    elif command_name not in WITHOUT_DATASET:
        raise ConfigurationError(
            f"{command_name}: basedataset.base_dir is required, the {dataset.Data.name} dataset has no demo data; "
            f"add basedataset.base_dir=/path/to/your/data (see datasets/{dataset.Data.name}/README.md)"
        )


def config_sections(ex: Experiment, dataset: ModuleType) -> Section:
    """The keys the experiment's config accepts, section by section."""
    defaults, _ = chain_evaluate_config_scopes(ex.configurations)
    top: dict[str, Section | None] = dict.fromkeys(defaults)
    top["models"] = Section(
        {"net": Section({**keywords_of(get_model), "pretrained_weights": None},
                        "keywords of models.network.get_model, and pretrained_weights"),
         "mel": Section(keywords_of(AugmentMelSTFT), "keywords of models.preprocess.AugmentMelSTFT")},
        "the network and its mel front-end",
    )
    top["basedataset"] = Section(dict.fromkeys(dataset.DEFAULTS), f"the keys of {dataset.__name__}.DEFAULTS")
    top["trainer"] = Section(dict.fromkeys(trainer_keys()),
                             "pl.Trainer keywords and the translated Lightning 1.x keys")
    return Section(top, "see print_config")


def train(dataset: ModuleType, run, config: dict, resume: str | None = None) -> dict[str, float]:
    """The main command: fit (continuing from ``resume``), then write the reports and print the summary.

    resume: None for a new training; "last" (the newest checkpoints/last.ckpt of the runs folder), a run
    folder, or a .ckpt path to continue from with weights, SWA average, optimizer, schedule, epoch and
    random number generators restored.
    """
    pl.seed_everything(config["seed"], workers=True)
    run_dir = run_folder(run)
    resume_path = resume_checkpoint(resume, run, run_dir)
    net = build_network(config["models"]["net"])  # before any data is read: pretrained weights fail fast
    data = prepared_data(dataset, config)
    module = build_module(config, data, net)
    if resume_path is not None:
        check_resumable(resume_path, module)
        run.info["resumed_from"] = str(resume_path)
        logger.info("resuming the training of %s in %s", resume_path, run_dir)
    train_loader, eval_loader = make_loaders(data, config)
    trainer = build_trainer(config["trainer"], run_dir, run)
    with shared_with_child_processes(run_dir, resume_path):
        try:
            trainer.fit(module, train_loader, eval_loader, ckpt_path=str(resume_path) if resume_path else None)
        except SIGTERMException as stop:  # Lightning's SystemExit would end the process with status 0
            logger.error("stopped by SIGTERM; continue with resume=%s", run_dir)
            raise SystemExit(128 + signal.SIGTERM) from stop
    wait_for_child_processes(trainer)
    checkpoint_dir = run_dir / CHECKPOINT_DIR
    checkpoints = [path for path in (checkpoint_dir / "best.ckpt", checkpoint_dir / "last.ckpt") if path.exists()]
    return finish(run, run_dir, module, data.domain_kind, f"{run.experiment_info['name']}: training finished",
                  checkpoints, best=_best_epoch(module.history))


def evaluate(dataset: ModuleType, run, config: dict, checkpoint: str | None) -> dict[str, float]:
    """The evaluate_only command: the checkpoint's network on the evaluation split of the configured data.

    The network, front-end, sample rate and clip length are those the checkpoint was trained with (its
    "frito" entry); the config's models.* do not apply. Domains are reported as seen or unseen by what the
    checkpoint was trained on (see :func:`trained_seen_domains`).
    """
    if not checkpoint:
        raise ConfigurationError("evaluate_only needs a checkpoint: add checkpoint=runs/<id>/checkpoints/best.ckpt")
    path = Path(checkpoint)
    state, meta = read_checkpoint(path)
    config = trained_config(config, meta, has_swa=any(key.startswith("net_swa.") for key in state))
    pl.seed_everything(config["seed"], workers=True)
    run_dir = run_folder(run)
    data = prepared_data(dataset, config)
    if list(data.class_names) != list(meta["class_names"]):
        raise ConfigurationError(
            f"checkpoint {path} was trained on the classes {meta['class_names']}, the configured data has "
            f"{list(data.class_names)}; evaluate it on the dataset (and families) it was trained on."
        )
    module = build_module(config, data, seen_domains=trained_seen_domains(meta, data, path))
    load_weights(module, state, path)
    _, eval_loader = make_loaders(data, config)
    trainer = build_trainer(config["trainer"], run_dir, run, checkpoints=False)
    with shared_with_child_processes(run_dir):
        trainer.validate(module, eval_loader)
    wait_for_child_processes(trainer)
    return finish(run, run_dir, module, data.domain_kind, f"{run.experiment_info['name']}: evaluation of {path}")


def read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    """The state dict and the "frito" entry of a checkpoint written by the training module."""
    checkpoint = _load_checkpoint(path)
    return checkpoint["state_dict"], dict(checkpoint["frito"])


def _load_checkpoint(path: Path) -> dict:
    """A checkpoint of frito's training module, read whole; ConfigurationError naming the file otherwise."""
    if not path.is_file():
        raise ConfigurationError(f"checkpoint={str(path)!r} does not exist; give the path of a .ckpt file.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ConfigurationError(f"checkpoint {path} is not a readable checkpoint (truncated?): {error}") from error
    meta = checkpoint.get("frito") if isinstance(checkpoint, Mapping) else None
    if not isinstance(meta, Mapping) or meta.get("version") != FRITO_VERSION or "state_dict" not in checkpoint:
        raise ConfigurationError(
            f"checkpoint {path} was not written by this version of frito's training module (no 'frito' entry of "
            f"version {FRITO_VERSION}); give checkpoints/best.ckpt or last.ckpt of a frito run."
        )
    return checkpoint


def resume_checkpoint(resume: str | None, run, run_dir: Path) -> Path | None:
    """The checkpoint ``resume`` names: None, "last", a run folder or a .ckpt file (see :func:`train`).

    Processes started by Lightning's DDP launcher take rank 0's choice from the environment."""
    if os.environ.get(RESUME_VARIABLE) and process_rank() != 0:
        return Path(os.environ[RESUME_VARIABLE])
    if resume is None or resume == "":
        return None
    if resume == "last":
        runs = next((Path(o.basedir) for o in run.observers if isinstance(o, FileStorageObserver)), RUNS_DIR)
        candidates = [path for path in runs.glob(f"*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT_FILE}")
                      if path.parent.parent.resolve() != run_dir.resolve()]
        if not candidates:
            raise ConfigurationError(
                f"resume='last': no {runs}/*/{CHECKPOINT_DIR}/{LAST_CHECKPOINT_FILE} to continue from; give the "
                f"run folder or checkpoint (resume=runs/<id>) or leave resume unset for a new training."
            )
        return max(candidates, key=lambda path: path.stat().st_mtime)
    path = Path(resume)
    if path.is_dir():
        path = path / CHECKPOINT_DIR / LAST_CHECKPOINT_FILE
    if not path.is_file():
        raise ConfigurationError(
            f"resume={resume!r}: {path} does not exist; give 'last', a run folder (runs/<id>) or a .ckpt file."
        )
    return path


def check_resumable(path: Path, module: AudioClassifier) -> None:
    """Refuse a checkpoint that is unreadable, not a training checkpoint, or from a different model or data."""
    checkpoint = _load_checkpoint(path)
    if "optimizer_states" not in checkpoint or "loops" not in checkpoint:
        raise ConfigurationError(
            f"checkpoint {path} holds weights only (no optimizer or loop state) and cannot continue a training; "
            f"resume from the run's checkpoints/{LAST_CHECKPOINT_FILE}."
        )
    saved, wanted = checkpoint["frito"], module.checkpoint_meta
    compared = [("net", "models.net"), ("mel", "models.mel"), ("class_names", "classes"), ("domain_names", "domains"),
                ("sample_rate", "basedataset.sample_rate"), ("clip_length", "basedataset.clip_length")]
    if "seen_domains" in saved:  # checkpoints of earlier frito versions do not record them
        compared.append(("seen_domains", "basedataset.train_domains"))
    differences = [
        f"{name}: checkpoint {saved_value!r}, config {wanted_value!r}"
        for key, setting in compared
        for name, saved_value, wanted_value in _differences(setting, saved.get(key), wanted.get(key))
    ]
    saved_swa = any(key.startswith("net_swa.") for key in checkpoint["state_dict"])
    mismatch = weight_mismatch(module.state_dict(), checkpoint["state_dict"])
    if saved_swa != (module.swa is not None):
        differences.append(f"swa: checkpoint {saved_swa}, config {module.swa is not None}")
    elif mismatch:
        differences.append(f"weights: {mismatch}")
    if differences:
        raise ConfigurationError(
            f"checkpoint {path} comes from a different configuration: " + "; ".join(differences)
            + ". Resume with the settings it was trained with, or start a new training."
        )


def trained_config(config: dict, meta: Mapping[str, Any], has_swa: bool) -> dict:
    """``config`` with the network, front-end, sample rate, clip length and SWA a checkpoint was trained with."""
    changed = {
        "swa": has_swa,
        "models": {"net": {**meta["net"], "pretrained": False, "pretrained_path": None}, "mel": dict(meta["mel"])},
        "basedataset": {**config["basedataset"], "sample_rate": meta["sample_rate"],
                        "clip_length": meta["clip_length"]},
    }
    logger.info("evaluate_only: network %s (rf_norm_t=%r) and front-end as trained; %s s clips at %s Hz",
                meta["net"].get("arch"), meta["net"].get("rf_norm_t", ""), meta["clip_length"], meta["sample_rate"])
    return {**config, **changed}


def trained_seen_domains(meta: Mapping[str, Any], data, path: Path) -> list[str]:
    """The domains a checkpoint was trained on (its "frito" entry's seen_domains), for reporting seen against
    unseen. A checkpoint written before frito stored them falls back to the configured data's training
    domains, with a warning; configured training domains that differ from the checkpoint's are logged."""
    configured = list(data.seen_domains)
    saved = meta.get("seen_domains")
    if saved is None:
        logger.warning(
            "checkpoint %s does not record the %ss it was trained on (written by an earlier frito); reporting as "
            "seen those of the configured basedataset.train_domains: %s", path, data.domain_kind, configured,
        )
        return configured
    saved = list(saved)
    unknown = [domain for domain in saved if domain not in data.domain_names]
    if unknown:
        raise ConfigurationError(
            f"checkpoint {path} was trained on the {data.domain_kind}s {saved}, but the configured data has no "
            f"{unknown} (it has {list(data.domain_names)}); evaluate it on the dataset it was trained on."
        )
    if saved != configured:
        logger.warning(
            "checkpoint %s was trained on the %ss %s, the configured basedataset.train_domains give %s: seen and "
            "unseen are reported by the checkpoint's", path, data.domain_kind, saved, configured,
        )
    else:
        logger.info("seen %ss (as trained): %s", data.domain_kind, saved)
    return saved


def finish(run, run_dir: Path, module: AudioClassifier, domain_kind: str, title: str,
           checkpoints: list[Path] = (), best: tuple[int, float] | None = None) -> dict[str, float]:
    """Reports (PNG/CSV) and the console summary of the last evaluation; its headline figures (the
    run's result; every figure per epoch is in the run's metrics). best: (epoch, val/acc) of a training."""
    figures: dict[str, float] = {}
    if not module.evaluations:
        return figures
    files = list(checkpoints)
    for name, result in module.evaluations.items():
        figures.update({f"{name}/{key}": value for key, value in result.scalars().items() if key in HEADLINE})
        if rank_zero_only.rank == 0:
            files.extend(write_reports(result, run_dir, name, domain_kind))
    if rank_zero_only.rank == 0:
        print(console_summary(module.evaluations, domain_kind, f"{title} ({run_dir})", best, files))
        _attach(run, run_dir, files)
    return figures


def attention_mask_plot(net_config: Mapping[str, Any], path: Path) -> Path:
    """The plot_attention_mask command: the configured pattern over the network's patch grid."""
    net = rebuild_network(net_config)  # for its patch grid
    write_attention_mask_plot(net_config["rf_norm_t"], net.n_rows, net.n_cols, path)
    print(f"attention mask of rf_norm_t={net_config['rf_norm_t']!r} over {net.n_rows} x {net.n_cols} patches: {path}")
    return path


def summarise_loaders(dataset: ModuleType, config: dict) -> None:
    """The test_loaders command."""
    pl.seed_everything(config["seed"], workers=True)
    data = make_data(dataset, config)
    data.prepare()
    train_loader, eval_loader = make_loaders(data, config)
    print(f"classes ({len(data.class_names)}): {', '.join(data.class_names)}")
    print(f"domains ({data.domain_kind}): {', '.join(data.domain_names)}; seen: {', '.join(data.seen_domains)}")
    for name, loader in (("train", train_loader), ("eval", eval_loader)):
        batch = next(iter(loader))
        print(f"{name}: {len(loader.dataset)} examples, {len(loader)} batches of up to {loader.batch_size}")
        for key, value in batch.items():
            print(f"  {key:12s} {_describe(value)}")


def speed_test(config: dict, batch_size: int, steps: int) -> dict[str, float]:
    """The model_speed_test command: spectrograms per second through mel, forward, backward, AdamW step."""
    pl.seed_everything(config["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net = build_network(config["models"]["net"]).to(device).train()
    mel = AugmentMelSTFT(**config["models"]["mel"]).to(device).train()
    precision = translate_trainer_config(config["trainer"], device.type == "cuda").kwargs.get("precision", "32")
    autocast_dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(str(precision))
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-5)
    samples = round(config["basedataset"]["clip_length"] * config["basedataset"]["sample_rate"])
    waveform = torch.randn(batch_size, samples, device=device)
    labels = torch.randint(config["models"]["net"]["n_classes"], (batch_size,), device=device)

    def step():
        with torch.autocast(device.type, dtype=autocast_dtype or torch.float32, enabled=autocast_dtype is not None):
            logits, _ = net(mel(waveform).unsqueeze(1))
            loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(2):
        step()
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _synchronize(device)
    seconds = time.perf_counter() - start
    rate = steps * batch_size / seconds
    arch = config["models"]["net"]["arch"]
    print(f"{arch} on {device.type} ({precision}): {rate:.1f} spectrograms/s, {1000 * seconds / steps:.1f} ms per "
          f"step of {batch_size} x {config['basedataset']['clip_length']} s clips")
    return {"spectrograms_per_second": rate}


def make_data(dataset: ModuleType, config: Mapping[str, Any]):
    return dataset.Data(**config["basedataset"], mel=dict(config["models"]["mel"]))


def make_loaders(data, config: Mapping[str, Any]) -> tuple[DataLoader, DataLoader]:
    """Shuffled training loader and ordered evaluation loader with the configured batch size and workers."""
    options = dict(batch_size=config["batch_size"], num_workers=config["num_workers"],
                   pin_memory=torch.cuda.is_available())
    # Training workers restart each epoch, seeded from the main process's generator: a resumed run (whose
    # generators the checkpoint restores) then crops exactly as the uninterrupted one.
    return (DataLoader(data.train_set(), shuffle=True, **options),
            DataLoader(data.eval_set(), shuffle=False, persistent_workers=config["num_workers"] > 0, **options))


def build_module(config: Mapping[str, Any], data, net: torch.nn.Module | None = None,
                 seen_domains: Sequence[str] | None = None) -> AudioClassifier:
    """The training module for ``config`` and the classes/domains of ``data`` (``net``: built already;
    ``seen_domains``: the domains reported as seen, by default those ``data`` trains on)."""
    seen = list(data.seen_domains if seen_domains is None else seen_domains)
    net_config, mel_config = config["models"]["net"], config["models"]["mel"]
    if net_config["n_classes"] != len(data.class_names):
        raise ConfigurationError(
            f"models.net.n_classes={net_config['n_classes']} but the data has {len(data.class_names)} classes "
            f"({', '.join(data.class_names)}); set models.net.n_classes={len(data.class_names)}."
        )
    meta = {
        "net": dict(net_config),
        "mel": dict(mel_config),
        "class_names": list(data.class_names),
        "domain_names": list(data.domain_names),
        "seen_domains": seen,
        "sample_rate": config["basedataset"]["sample_rate"],
        "clip_length": config["basedataset"]["clip_length"],
        "version": FRITO_VERSION,
    }
    return AudioClassifier(
        net=net if net is not None else build_network(net_config),
        mel=AugmentMelSTFT(**mel_config),
        class_names=data.class_names,
        domain_names=data.domain_names,
        seen_domains=seen,
        lr=config["lr"],
        weight_decay=config["weight_decay"],
        lr_factor=lr_schedule(config["schedule_mode"], config["warm_up_len"], config["ramp_down_start"],
                              config["ramp_down_len"], config["last_lr_value"]),
        mixup_alpha=config["mixup_alpha"] if config["use_mixup"] else None,
        swa=SwaSchedule(config["swa_epoch_start"], config["swa_freq"]) if config["swa"] else None,
        checkpoint_meta=meta,
    )


def load_weights(module: AudioClassifier, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load a checkpoint's weights (network, SWA copy) into a module built with the checkpoint's settings."""
    mismatch = weight_mismatch(module.state_dict(), state)
    if mismatch:
        raise ConfigurationError(f"checkpoint {path} does not fit the model rebuilt from its own settings: {mismatch}.")
    module.load_state_dict(state)


def weight_mismatch(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor]) -> str:
    """How a state dict differs from a module's (missing, unexpected, reshaped keys); empty when it fits."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(key for key in set(own) & set(state) if own[key].shape != state[key].shape)
    if not (missing or unexpected or mismatched):
        return ""
    return f"missing {missing[:5]}, unexpected {unexpected[:5]}, different shapes {mismatched[:5]}"


def prepared_data(dataset: ModuleType, config: Mapping[str, Any]):
    """The configured Data with its caches built, one process at a time (a file lock in the cache folder):
    under torchrun or SLURM every process starts at once, and the first builds what the others then read."""
    cache_dir = config["basedataset"].get("cache_dir")
    lock_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    with open(lock_dir / PREPARE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data = make_data(dataset, config)
            data.prepare()
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return data


@contextlib.contextmanager
def shared_with_child_processes(run_dir: Path, resume_path: Path | None = None) -> Iterator[None]:
    """Rank 0's run folder and resume checkpoint in the environment of the processes Lightning starts."""
    if process_rank() != 0:
        yield
        return
    shared = {RUN_DIR_VARIABLE: str(run_dir.resolve())}
    if resume_path is not None:
        shared[RESUME_VARIABLE] = str(resume_path.resolve())
    before = {name: os.environ.get(name) for name in shared}
    os.environ.update(shared)
    try:
        yield
    finally:
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run_folder(run) -> Path:
    """The FileStorageObserver's folder of this run, else a new runs/<timestamp> folder.

    Processes other than rank 0 create none: they take rank 0's folder (DDP=N) or, started by another
    launcher, a name in the temporary folder; they write nothing there (checkpoints, logs and reports are
    rank 0's, and Lightning hands rank 0's checkpoint folder to every process)."""
    if process_rank() != 0:
        if os.environ.get(RUN_DIR_VARIABLE):
            return Path(os.environ[RUN_DIR_VARIABLE])
        return Path(tempfile.gettempdir()) / f"frito-rank{process_rank()}-{os.getpid()}"
    for observer in run.observers:
        if isinstance(observer, FileStorageObserver) and observer.dir:
            return Path(observer.dir)
    stamp = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    for attempt in range(100):
        folder = RUNS_DIR / (stamp if attempt == 0 else f"{stamp}_{attempt}")
        try:
            folder.mkdir(parents=True)
        except FileExistsError:
            continue
        logger.info("no FileStorageObserver (-F runs/): run folder %s", folder)
        return folder
    raise RuntimeError(f"could not create a new run folder under {RUNS_DIR}")


def _differences(name: str, saved, wanted) -> Iterator[tuple[str, Any, Any]]:
    """(dotted name, saved, wanted) for each setting that differs, descending into dicts."""
    if isinstance(saved, Mapping) and isinstance(wanted, Mapping):
        for key in sorted(set(saved) | set(wanted)):
            yield from _differences(f"{name}.{key}", saved.get(key), wanted.get(key))
    elif saved != wanted:
        yield name, saved, wanted


def plain(value):
    """Sacred's read-only config containers as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    return value


def _best_epoch(history: list[dict[str, float]]) -> tuple[int, float] | None:
    scored = [entry for entry in history if MONITOR in entry]
    if not scored:
        return None
    best = max(scored, key=lambda entry: entry[MONITOR])
    return int(best["epoch"]), float(best[MONITOR])


def _attach(run, run_dir: Path, files: list[Path]) -> None:
    """Hand the report files to observers that do not keep them in run_dir already (e.g. MongoDB)."""
    in_place = any(isinstance(o, FileStorageObserver) and o.dir and Path(o.dir) == run_dir for o in run.observers)
    if not in_place:
        for path in files:
            if path.suffix in (".png", ".csv"):
                run.add_artifact(str(path))
    run.info["run_dir"] = str(run_dir)


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        text = f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
        if value.is_floating_point():
            return f"{text} min {value.min():.3f} max {value.max():.3f} mean {value.mean():.3f}"
        return f"{text} values {sorted(set(value.flatten().tolist()))[:12]}"
    if isinstance(value, list):
        return f"list of {len(value)}, e.g. {value[0]!r}"
    return repr(value)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
