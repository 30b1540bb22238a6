"""Training and evaluating from Python (a notebook, a script), without the command line or a Sacred run.

    from helpers.api import evaluate, train

    results = train("nsynth", named_configs=["cpu_tiny"], updates={"trainer": {"max_epochs": 2}},
                    run_dir="runs/notebook")
    results["test"]["net"]["selected"]["acc"]      # what runs/notebook/results.json holds
    evaluate("nsynth", "runs/notebook/checkpoints/best.ckpt")

Each call runs what the command line runs: the experiment's config is resolved as ``python ex_<name>.py with
NAMED_CONFIG... KEY=VALUE...`` resolves it (its defaults, the named configs in order, the updates, then the
same checks, which raise :class:`errors.UserError` before any work), and the same training or evaluation
(helpers.training.fit) writes the same files into the run folder. Sacred resolves the config (its config
scopes and named configs are where the experiments' defaults live); no Sacred run is started or observed.
Instead of an observer's files, the run folder gets ``config.json`` (the resolved config) and
``metrics.json`` (every figure per epoch, in the layout of ``-F runs/``).
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from sacred.initialize import create_run

from errors import ConfigurationError
from helpers.files import atomic_write
from helpers.results.record import RunRecord
from helpers.results.run_files import RESULTS
from helpers.training import fit
from helpers.training.run_folder import RUNS_DIR, run_folder

REPOSITORY = Path(__file__).resolve().parents[1]
EXPERIMENTS = tuple(sorted(path.stem.removeprefix("ex_") for path in REPOSITORY.glob("ex_*.py")))  # ex_<name>.py
CONFIG_FILE = "config.json"


def train(experiment: str | ModuleType, updates: Mapping[str, Any] | None = None,
          named_configs: Sequence[str] = (), run_dir: str | Path | None = None,
          resume: str | None = None) -> dict[str, Any]:
    """Train as ``python ex_<experiment>.py with NAMED_CONFIGS UPDATES`` does; return what results.json holds
    (empty when no epoch was evaluated).

    experiment: "dcase20", "dcase20_dev", "nsynth", "esc50", "folder", or an experiment module (``ex_*.py``: its
        ``ex`` and ``DATASET``).
    updates: config values as nested dicts or dotted keys ({"trainer.max_epochs": 2}, {"lr": 1e-4}).
    named_configs: named configs applied in order before the updates (e.g. ["cpu_tiny", "frito_per_row_6"]).
    run_dir: the run folder (created when missing); None: a new runs/<timestamp>/.
    resume: as the ``resume`` option: "last", a run folder or a .ckpt to continue from.
    """
    module, config = resolved_config(experiment, "main", {**(updates or {}), "resume": resume}, named_configs)
    folder = run_folder(Path(run_dir) if run_dir is not None else None)
    _write_config(folder, config)
    record = RunRecord(module.ex.path)
    fit.train(module.DATASET, config, record, folder, resume, RUNS_DIR)
    record.write_metrics(folder)
    results = folder / RESULTS
    return json.loads(results.read_text()) if results.is_file() else {}


def evaluate(experiment: str | ModuleType, checkpoint: str | Path, updates: Mapping[str, Any] | None = None,
             named_configs: Sequence[str] = (), out_dir: str | Path | None = None) -> dict[str, float]:
    """Evaluate a checkpoint as ``python ex_<experiment>.py evaluate_only with checkpoint=...`` does; return the
    headline test figures by "checkpoint/<network>/<figure>".

    out_dir: where the reports go; None: beside the checkpoint, in its run folder's evaluations/.
    """
    module, config = resolved_config(experiment, "evaluate_only", {**(updates or {}), "checkpoint": str(checkpoint)},
                                      named_configs)
    record = RunRecord(module.ex.path)
    return fit.evaluate(module.DATASET, config, record, str(checkpoint), Path(out_dir) if out_dir else None)


def resolved_config(experiment: str | ModuleType, command: str, updates: Mapping[str, Any],
                    named_configs: Sequence[str]) -> tuple[ModuleType, dict[str, Any]]:
    """The experiment module and the config its ``command`` would run with, checked (UserError otherwise)."""
    module = experiment_module(experiment)
    unknown = [name for name in named_configs if name not in module.ex.named_configs]
    if unknown:
        raise ConfigurationError(f"unknown named configs {unknown}; {module.ex.path} has "
                                 f"{sorted(module.ex.named_configs)}")
    run = create_run(module.ex, command, config_updates=dict(updates), named_configs=tuple(named_configs))
    return module, plain_config(run.config)


def experiment_module(experiment: str | ModuleType) -> ModuleType:
    """The ``ex_<name>.py`` module of an experiment name, or the module given. Looked up by name, as study.py
    does, since the experiments are the entry points above helpers/."""
    if isinstance(experiment, ModuleType):
        return experiment
    if experiment not in EXPERIMENTS:
        raise ConfigurationError(f"experiment {experiment!r} is not one of {EXPERIMENTS} (or give the module)")
    return importlib.import_module(f"ex_{experiment}")


def _write_config(folder: Path, config: Mapping[str, Any]) -> Path:
    text = json.dumps(config, indent=2, default=str)
    return atomic_write(folder / CONFIG_FILE, lambda stream: stream.write(text.encode()))


def plain_config(value):
    """Sacred's read-only config containers as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {key: plain_config(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [plain_config(item) for item in value]
    return value
