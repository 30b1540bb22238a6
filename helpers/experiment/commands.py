"""The experiments' Sacred wiring: command options, config checks and the commands.

An experiment file (``ex_<dataset>.py``) creates the Sacred ``Experiment``, states its own config (chained
with the shared one by :func:`helpers.experiment.defaults.add_config`) and calls :func:`add_commands` with its dataset
package, which adds

  main                 train; every epoch evaluated on the validation split (which selects the epoch
                       reported) and on the test split (which is reported)
  evaluate_only        evaluate ``checkpoint`` on the validation and test splits
  test_loaders         summarise one batch of each data loader (train, validation, test)
  model_speed_test     forward+backward spectrograms per second of the configured model
  plot_attention_mask  PNG of the configured attention pattern over the configured patch grid
  prepare              build the dataset caches
  predict              classify audio files with a trained checkpoint, writing a CSV
  export               write a trained checkpoint (with its front-end) as TorchScript and ONNX
  print_config         Sacred's, with the values derived from the config when the model is built

a config hook that rejects unknown keys and bad values before any work (and, for a dataset without demo
data, a missing basedataset.base_dir), and option hooks that keep processes other than rank 0 of a
multi-process run unobserved and quiet, and give main and evaluate_only their run folder's record without
-F: main records into runs/ as ``-F runs/`` does (runs/<id>/: config.json, run.json, metrics.json,
cout.txt), evaluate_only beside the checkpoint (<run folder>/evaluations/<checkpoint>_<timestamp>/). The
console is judged before Sacred captures it (helpers.training.progress): a terminal gets a progress bar,
a file plain lines and no colour codes; cout.txt is plain text either way.

Errors that are the user's to fix (a bad audio file, a dataset folder in the wrong layout, a bad checkpoint,
a config error) are printed as their message, without a traceback (``--debug`` shows it), and the command
exits with status 1.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import colorama
import pytorch_lightning as pl
import torch
from sacred import Experiment
from sacred import commands as sacred_commands
from sacred.arg_parser import get_config_updates
from sacred.observers import FileStorageObserver
from sacred.run import Run
from sacred.utils import SacredError, apply_backspaces_and_linefeeds

from errors import ConfigurationError, OutputExistsError, UserError
from helpers.api import plain_config
from helpers.checkpoint import pretrained_start
from helpers.experiment.attention_plot import write_attention_mask_plot
from helpers.experiment.config_check import check_keys, check_setting_rules, check_values, config_sections
from helpers.experiment.defaults import CPU_PRESET
from helpers.experiment.options import command_options
from helpers.export import export as export_model
from helpers.inference import load_model, predict_files
from helpers.model_spec import ModelSpec
from helpers.results.record import RunRecord
from helpers.training.fit import data_module, evaluate, model_spec, train
from helpers.training.progress import console_is_terminal, remember_console
from helpers.training.run_folder import EVALUATIONS, PREDICTIONS, RUNS_DIR, checkpoint_owner, new_path, run_folder
from helpers.training.step_timing import training_step_seconds
from helpers.training.trainer import process_rank, quiet_lightning, translate_trainer_config
from models.architectures import ARCHITECTURES
from models.sparse_choice import use_costs

logger = logging.getLogger(__name__)

DEMO_NOTICE = (
    "basedataset.base_dir is None: training on the bundled demo data with the CPU demo preset "
    "(small model, short clips, few epochs); set basedataset.base_dir=... for the dataset and the paper's defaults"
)
# The smallest learning rate taken for a training from scratch; below it, a rate for fine-tuning pretrained weights
# (PaSST fine-tunes at 1e-5; ex_folder.py's comment on lr suggests 1e-4 from scratch).
FROM_SCRATCH_LR = 1e-4
# Commands that read no data: they take their settings from a checkpoint, or show Sacred's information.
FROM_CHECKPOINT = ("predict", "export")
WITHOUT_DATASET = (*FROM_CHECKPOINT, "print_config", "print_dependencies", "save_config", "print_named_configs")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")  # colours and cursor moves (a progress bar's second line)


class UserMessage(SacredError, UserError):
    """An errors.UserError as Sacred shows it: its message without a traceback (the traceback with --debug)."""

    def __init__(self, message: str):
        super().__init__(message, print_traceback=False)


# Sacred prints the message with traceback.format_exception_only, which puts the class's dotted path first; a
# user reads "error: <message>" instead of "helpers.experiment.commands.UserMessage: <message>".
UserMessage.__module__, UserMessage.__qualname__ = "builtins", "error"


def add_commands(ex: Experiment, dataset: ModuleType) -> None:
    """Give ``ex`` the shared command options, config checks and commands for ``dataset``.

    dataset: a package of ``datasets/`` exporting DEFAULTS (the ``basedataset`` config) and Data.
    """
    quiet_lightning()
    ex.captured_out_filter = plain_text
    for package, version in (("torch", torch.__version__), ("pytorch-lightning", pl.__version__)):
        # recorded with each run beside what Sacred detects; Sacred rejects local versions such as +cu130
        ex.add_package_dependency(package, version.split("+")[0])
    ex.config(command_options)

    def check_config(config, command_name, logger):
        try:
            check_keys(config, config_sections(ex, dataset))
            check_setting_rules(config, ex)
            check_values(config, dataset)
            if config["basedataset"]["base_dir"] is None:
                check_demo(dataset, command_name, logger)
            use_executor_costs(config["executor_costs"])
        except UserError as error:
            raise UserMessage(str(error)) from error
        if command_name == "main":
            warn_of_a_schedule_longer_than_the_training(config, logger)
            warn_of_a_large_network_from_scratch_at_a_fine_tuning_rate(config, logger)

    ex.config_hook(check_config)

    def other_ranks_unobserved(options):
        """Processes other than global rank 0 have no observers, print no config and log warnings only."""
        if process_rank() != 0:
            options.update({"--unobserved": True, "--loglevel": "WARNING", "--print-config": False})

    ex.option_hook(other_ranks_unobserved)

    def recorded_console(options):
        """Before Sacred's capture (command lines of rank 0 only): the console as it is, and the run folder's
        record of main and evaluate_only without -F."""
        if process_rank() != 0 or "COMMAND" not in options:
            return
        remember_console()
        if not console_is_terminal():
            colorama.init(strip=True)  # Sacred colours print_config's entries; a file gets plain text
        options.update(default_record(options))

    ex.option_hook(recorded_console)

    @ex.capture
    def settings(_config, models, basedataset, trainer):
        """The run's config as plain dicts. Naming the sections lets Sacred accept the keys a user adds
        inside them (e.g. trainer.limit_train_batches); check_config has vetted every key already."""
        return plain_config(_config)

    def command(function: Callable | None = None, **options) -> Callable:
        """ex.command for a function whose user errors become messages."""
        if function is None:
            return functools.partial(command, **options)
        return ex.command(user_errors_as_messages(function), **options)

    @ex.main
    @user_errors_as_messages
    def main(_run, resume):
        """Train; select the epoch on the validation split, report the test split."""
        return train(dataset, settings(), SacredRecord(_run), sacred_run_folder(_run), resume, runs_folder(_run))

    @command
    def evaluate_only(_run, checkpoint):
        """Evaluate the checkpoint given by checkpoint=PATH on the validation and test splits."""
        return evaluate(dataset, settings(), SacredRecord(_run), checkpoint, observed_folder(_run))

    @command(unobserved=True)
    def test_loaders():
        """Summarise one batch of the training, the validation and the test loader."""
        summarise_loaders(dataset, settings())

    @command(unobserved=True)
    def model_speed_test(speed_test_batch_size, speed_test_steps):
        """Forward+backward spectrograms per second of the configured model (GPU when present)."""
        config = settings()
        spec = model_spec(dataset, config)
        spec = spec.with_class_count(data_module(dataset, config, spec).class_names)
        return speed_test(config, spec, speed_test_batch_size, speed_test_steps)

    @command(unobserved=True)
    def plot_attention_mask(plot_path):
        """PNG of the configured rf_norm_t pattern over the configured patch grid (an existing file is kept)."""
        return str(attention_mask_plot(model_spec(dataset, settings()), plot_path))

    @command(unobserved=True)
    def prepare():
        """Build the dataset caches (the demo data first when basedataset.base_dir is None)."""
        config = settings()
        data_module(dataset, config, model_spec(dataset, config)).prepare_data()

    @command(unobserved=True)
    def predict(checkpoint, files, top_k, weights, predictions_csv, batch_size, hop_fraction):
        """Classify files=PATH_OR_FOLDER with checkpoint=PATH: top-k per file and a CSV of all probabilities."""
        return predict_command(dataset, checkpoint, files, top_k, weights, predictions_csv, batch_size, hop_fraction)

    @command
    def export(_run, checkpoint, weights, export_dir, export_formats, export_seconds):
        """Write checkpoint=PATH with its mel front-end as TorchScript and ONNX, checked against PyTorch."""
        if not checkpoint:
            raise ConfigurationError("export needs a checkpoint: add checkpoint=runs/<id>/checkpoints/best.ckpt")
        out_dir = Path(export_dir) if export_dir else sacred_run_folder(_run) / "export"
        written = export_model(checkpoint, out_dir, export_formats, export_seconds, weights)
        for fmt, path in written.items():
            print(f"{fmt}: {path}")
        return {fmt: str(path) for fmt, path in written.items()}

    @ex.command(unobserved=True)
    def print_config(_run):
        """Print the configuration, and the values derived from it when the model is built, and exit.

        Text is highlighted: green: value modified; blue: value added; red: value modified but type changed.
        """
        sacred_commands.print_config(_run)
        print(derived_text(model_spec(dataset, plain_config(_run.config))))


class SacredRecord(RunRecord):
    """The record of a run started by a Sacred command: figures, files and facts go to the Sacred run and its
    observers (with -F runs/: metrics.json, run.json; files written elsewhere become artifacts)."""

    def __init__(self, run: Run):
        super().__init__(run.experiment_info["name"])
        self.run = run

    def log_scalar(self, name: str, value: float, step: int) -> None:
        self.run.log_scalar(name, value, step)

    def note(self, key: str, value: Any) -> None:
        self.run.info[key] = value

    def add_files(self, run_dir: Path, paths: Sequence[Path]) -> None:
        """Hand the report files to observers that do not keep them in run_dir already (e.g. MongoDB)."""
        if observed_folder(self.run) != run_dir:
            for path in paths:
                if path.suffix in (".png", ".csv"):
                    self.run.add_artifact(str(path))


def observed_folder(run: Run) -> Path | None:
    """The folder of the run's FileStorageObserver (-F runs/: runs/<id>), if it has one."""
    return next((Path(o.dir) for o in run.observers if isinstance(o, FileStorageObserver) and o.dir), None)


def runs_folder(run: Run) -> Path:
    """The folder of the runs: the FileStorageObserver's base folder (-F DIR), else runs/."""
    return next((Path(o.basedir) for o in run.observers if isinstance(o, FileStorageObserver)), RUNS_DIR)


def sacred_run_folder(run: Run) -> Path:
    """The run folder of a Sacred run: its FileStorageObserver's, else a new runs/<timestamp>."""
    return run_folder(observed_folder(run))


def default_record(options: Mapping[str, Any]) -> dict[str, Any]:
    """Sacred options giving main and evaluate_only their run folder's record when the command line names no
    file observer (-F) and does not ask for none (-u): main's in runs/ (runs/<id>/, as -F runs/), evaluate_only's
    beside its checkpoint (<run folder>/evaluations/<checkpoint>_<timestamp>/)."""
    if options.get("--file_storage") or options.get("--unobserved"):
        return {}
    command = options.get("COMMAND") or "main"
    if command == "main":
        return {"--file_storage": str(RUNS_DIR)}
    if command != "evaluate_only":
        return {}
    checkpoint = get_config_updates(options.get("UPDATE") or [])[0].get("checkpoint")
    if not checkpoint or not Path(checkpoint).is_file():  # the command says what is wrong
        return {}
    folder = checkpoint_owner(Path(checkpoint)) / EVALUATIONS
    name = options.get("--id") or new_path(folder, f"{Path(checkpoint).stem}_").name
    return {"--file_storage": str(folder), "--id": name}


def plain_text(text: str) -> str:
    """The console as cout.txt keeps it: carriage returns and backspaces applied, no colours or cursor moves."""
    return ANSI_ESCAPE.sub("", apply_backspaces_and_linefeeds(text))


def derived_text(spec: ModelSpec) -> str:
    """The values the model spec derives (helpers.model_spec) as print_config shows them."""
    lines = ["Derived when the model is built (helpers/model_spec.py; a given value is checked against these):"]
    lines += [f"  {key} = {value!r}" for key, value in spec.derived().items()]
    return "\n".join(lines)


def warn_of_a_schedule_longer_than_the_training(config: Mapping[str, Any], run_logger: logging.Logger) -> None:
    """A warm-up that does not fit into trainer.max_epochs is most likely the schedule of a longer training left in
    place (e.g. NSynth's 100 warm-up epochs under a short run): say so before training, advising only changes that
    fit: the named config cpu_tiny where its schedule fits the epochs and is not in place already."""
    max_epochs = config["trainer"].get("max_epochs")
    warm_up_len = config["warm_up_len"]
    if not isinstance(max_epochs, int) or max_epochs < 0 or warm_up_len < max_epochs:
        return
    advice = [f"set warm_up_len below {max_epochs} (0: no warm-up)" if max_epochs > 0 else "set warm_up_len=0",
              "or raise trainer.max_epochs"]
    if config["ramp_down_start"] >= max_epochs:
        advice[0] += f" and ramp_down_start (now {config['ramp_down_start']}) below it"
    if warm_up_len != CPU_PRESET["warm_up_len"] and CPU_PRESET["warm_up_len"] < max_epochs:
        advice.append("or use the named config cpu_tiny (its schedule warms up in "
                      f"{CPU_PRESET['warm_up_len']} epochs)")
    run_logger.warning("warm_up_len=%s >= trainer.max_epochs=%s: the training ends before the learning rate warms up "
                       "fully; %s", warm_up_len, max_epochs, ", ".join(advice))


def warn_of_a_large_network_from_scratch_at_a_fine_tuning_rate(config: Mapping[str, Any],
                                                              run_logger: logging.Logger) -> None:
    """A network with published weights (PaSST-S) trained from scratch at a learning rate meant for fine-tuning
    them (below FROM_SCRATCH_LR) learns little, and on a CPU slowly: say so before training, with what to set."""
    net = config["models"]["net"]
    spec = ARCHITECTURES.get(net["arch"])
    if net["pretrained"] or spec is None or not spec.url or config["lr"] >= FROM_SCRATCH_LR:
        return
    device = " on a CPU, where each epoch is slow too" if not torch.cuda.is_available() else ""
    run_logger.warning(
        "models.net.pretrained=False: %s (%d transformer blocks of width %d) trains from scratch at lr=%g, a rate "
        "for fine-tuning pretrained weights%s, and will learn little; set models.net.pretrained=True to start from "
        "its AudioSet weights (downloaded once; offline: models.net.pretrained_path=FILE), or lr=%g or more to train "
        "from scratch, or use the named config cpu_tiny for a small network that trains on a CPU",
        net["arch"], spec.depth, spec.embed_dim, config["lr"], device, FROM_SCRATCH_LR)


def user_errors_as_messages(function: Callable) -> Callable:
    """Run a command, turning the errors the user fixes (errors.UserError) into UserMessage: Sacred then prints
    their message without a traceback and exits with status 1."""

    @functools.wraps(function)
    def run_command(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except UserMessage:
            raise
        except UserError as error:
            raise UserMessage(str(error)) from error

    return run_command


def use_executor_costs(path: str | None) -> None:
    """Give attention_impl="auto" the constants of ``path`` (None: the shipped ones) in this process."""
    try:
        use_costs(path)
    except ValueError as error:
        raise ConfigurationError(f"executor_costs: {error}") from error


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


def predict_command(dataset: ModuleType, checkpoint: str | None, files, top_k: int, weights: str,
                    predictions_csv: str | None, batch_size: int, hop_fraction: float) -> dict[str, Any]:
    """The predict command: top-k classes per file on the console, all probabilities in a CSV (predictions_csv,
    else a new <run folder>/predictions/<checkpoint>_<timestamp>.csv beside the checkpoint; an existing file is
    never replaced); a file longer than the training clip is scored in windows hop_fraction of a clip apart, and
    the windows of consecutive files are scored batch_size at a time. The labels are the checkpoint's: a
    checkpoint trained on another dataset than the experiment's is said to be, in one line."""
    if not checkpoint or not files:
        raise ConfigurationError(
            "predict needs a checkpoint and files: add checkpoint=runs/<id>/checkpoints/best.ckpt files=DIR_OR_FILE"
        )
    paths = [files] if isinstance(files, str) else list(files)
    predictor = load_model(checkpoint, weights=weights, hop_fraction=hop_fraction)
    if predictor.dataset is not None and predictor.dataset != dataset.Data.name:
        print(f"{checkpoint} was trained on the {predictor.dataset} dataset, not {dataset.Data.name}: its "
              f"{len(predictor.class_names)} labels are used ({_first_names(predictor.class_names)})")
    if predictions_csv:
        csv_path = Path(predictions_csv)
    else:
        csv_path = new_path(checkpoint_owner(Path(checkpoint)) / PREDICTIONS, f"{Path(checkpoint).stem}_", ".csv")
    report = predict_files(predictor, paths, top_k=top_k, csv_path=csv_path, batch_size=batch_size)
    for prediction in report.predictions:
        ranked = ", ".join(f"{label} {probability:.2f}" for label, probability in prediction.top)
        print(f"{prediction.path}: {ranked}")
    for path, reason in report.skipped:
        print(f"skipped {path}: {reason}")
    print(f"{len(report.predictions)} files classified, {len(report.skipped)} skipped (listed with the reason); "
          f"probabilities in {csv_path}")
    return {"classified": len(report.predictions), "skipped": len(report.skipped), "csv": str(csv_path)}


def attention_mask_plot(spec: ModelSpec, plot_path: str | None) -> Path:
    """The plot_attention_mask command: the configured pattern over the network's patch grid, written to
    plot_path, else attention_mask_<rf_norm_t>.png in the working folder; an existing file is kept (refused)."""
    n_rows, n_cols = spec.patch_grid
    rf_norm_t = spec.net["rf_norm_t"]
    path = Path(plot_path) if plot_path else Path(f"attention_mask_{rf_norm_t or 'unrestricted'}.png")
    if path.exists():
        raise OutputExistsError(f"{path} exists; give plot_path=OTHER.png, or remove it to draw it again")
    write_attention_mask_plot(rf_norm_t, n_rows, n_cols, path)
    print(f"attention mask of rf_norm_t={rf_norm_t!r} over {n_rows} x {n_cols} patches: {path}")
    return path


def summarise_loaders(dataset: ModuleType, config: dict) -> None:
    """The test_loaders command."""
    pl.seed_everything(config["seed"], workers=True)
    data = data_module(dataset, config, model_spec(dataset, config))
    data.prepare_data()
    data.setup("fit")
    print(f"classes ({len(data.class_names)}): {', '.join(data.class_names)}")
    if data.domain_kind is not None:
        print(f"domains ({data.domain_kind}): {', '.join(data.domain_names)}; seen: {', '.join(data.seen_domains)}")
    validation, test = data.val_dataloader()
    for name, loader in (("train", data.train_dataloader()), ("validation", validation), ("test", test)):
        batch = next(iter(loader))
        print(f"{name}: {len(loader.dataset)} examples, {len(loader)} batches of up to {loader.batch_size}")
        for key, value in batch.items():
            print(f"  {key:12s} {_describe(value)}")


def speed_test(config: Mapping[str, Any], spec: ModelSpec, batch_size: int, steps: int) -> dict[str, float]:
    """The model_speed_test command: spectrograms per second through mel, forward, backward, AdamW step."""
    pl.seed_everything(config["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = spec.build(pretrained_start(config["models"]["net"])).to(device)
    precision = translate_trainer_config(config["trainer"], device.type == "cuda").kwargs.get("precision", "32")
    autocast_dtype = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16}.get(str(precision))
    waveform = torch.randn(batch_size, spec.clip_samples, device=device)
    labels = torch.randint(spec.net["n_classes"], (batch_size,), device=device)
    seconds = training_step_seconds(model, waveform, labels, steps, autocast_dtype=autocast_dtype)
    rate = batch_size / seconds
    print(f"{spec.net['arch']} on {device.type} ({precision}): {rate:.1f} spectrograms/s, {1000 * seconds:.1f} ms "
          f"per step of {batch_size} x {spec.clip_length:g} s clips")
    return {"spectrograms_per_second": rate}


def _describe(value) -> str:
    if isinstance(value, torch.Tensor):
        text = f"{str(value.dtype).removeprefix('torch.')} {tuple(value.shape)}"
        if value.is_floating_point():
            return f"{text} min {value.min():.3f} max {value.max():.3f} mean {value.mean():.3f}"
        return f"{text} values {sorted(set(value.flatten().tolist()))[:12]}"
    if isinstance(value, list):
        return f"list of {len(value)}, e.g. {value[0]!r}"
    return repr(value)


def _first_names(names: Sequence[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f", ... ({len(names) - shown} more)" if len(names) > shown else "")
