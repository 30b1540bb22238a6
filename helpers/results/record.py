"""What a run reports besides the files in its run folder: its name, every figure per epoch, the files it
wrote, and facts about it (the checkpoint it resumed from, its run folder).

Training and evaluation (helpers.training.fit) report to a :class:`RunRecord` and know nothing of Sacred.
The plain record keeps everything in memory and writes ``metrics.json`` (the Python API, helpers.api); the
experiments' commands pass :class:`helpers.experiment.commands.SacredRecord`, which hands the same to the
Sacred run and its observers (``-F runs/``: config.json, metrics.json, run.json, cout.txt).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from helpers.files import atomic_write
from helpers.results.run_files import METRICS as METRICS_FILE  # the name and layout of Sacred's FileStorageObserver
from helpers.results.selection import epoch_number


class RunRecord:
    """A run's record, kept in memory.

    name: the experiment's name ("dcase20", "nsynth", ...), as the console summary shows it.
    """

    def __init__(self, name: str):
        self.name = name
        self.metrics: dict[str, dict[str, list]] = {}  # figure -> {"steps": [...], "values": [...]}
        self.info: dict[str, Any] = {}

    def log_scalar(self, name: str, value: float, step: int) -> None:
        series = self.metrics.setdefault(name, {"steps": [], "values": []})
        series["steps"].append(step)
        series["values"].append(value)

    def note(self, key: str, value: Any) -> None:
        """A fact about the run (e.g. "resumed_from", "run_dir")."""
        self.info[key] = value

    def add_files(self, run_dir: Path, paths: Sequence[Path]) -> None:
        """Files the run wrote into ``run_dir`` (reports, checkpoints): kept there, nothing else to do."""

    def write_metrics(self, run_dir: Path) -> Path:
        """metrics.json in the layout of Sacred's FileStorageObserver: figure -> {"steps", "values"}."""
        text = json.dumps(self.metrics, indent=1)
        return atomic_write(run_dir / METRICS_FILE, lambda stream: stream.write(text.encode()))


class RecordLogger(Logger):
    """Forwards every figure Lightning logs to the run's record, stepped by epoch (numbered from 1)."""

    def __init__(self, record: RunRecord, version: str):
        super().__init__()
        self._record = record
        self._version = version

    @property
    def name(self) -> str:
        return "frito"

    @property
    def version(self) -> str:
        return self._version

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        epoch = metrics.get("epoch")
        for name, value in metrics.items():
            if name != "epoch":
                self._record.log_scalar(name, float(value), epoch_number(int(epoch)) if epoch is not None else step)

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        """The run's config is recorded by whoever started the run (config.json)."""
