"""Model selection: which epoch of a training is the one reported, chosen on data that is not reported.

Every epoch is evaluated on two roles of the data: ``val``, the validation split, drawn from the training
domains only, and ``test``, the test split, which is what a run reports. The selected epoch is the first
of the highest validation accuracy (``model_selection="validation"``), over the whole history of the
training, resumed epochs included. ``model_selection="oracle"`` selects on the test split instead, as
published results chosen on their test set were; every output then says "oracle", since such figures are
optimistic (Gulrajani and Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021).

:class:`ModelSelection` keeps the per-epoch figures, and the evaluations (every example's prediction) of
the selected and of the last epoch, for the end-of-run reports; its state travels in the checkpoints so
that a resumed training selects as the uninterrupted one.

Epochs are numbered from 1 wherever a user sees them (the console, results.json, metrics.json, the summary,
the reports): :func:`epoch_number` turns Lightning's 0-based epoch counter into that number, and the model
selection records epochs by it. Checkpoints written before this numbering (their selection state has no
"first_epoch") are read with their epochs shifted to it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from helpers.results.metrics import Evaluation, evaluation

MODEL_SELECTIONS = {"validation": "val/acc", "oracle": "test/acc"}  # model_selection -> the figure it maximises
ROLES = ("val", "test")  # the evaluated roles of the data, in the order of the evaluation loaders
NET_SUFFIXES = {"net": "", "net_swa": "_swa"}  # network -> suffix of its figures' prefix: val/acc, val_swa/acc
FIRST_EPOCH = 1  # the number of a training's first epoch in every output


def epoch_number(current_epoch: int) -> int:
    """The number users see for Lightning's 0-based ``current_epoch``: 1 for the first epoch."""
    return current_epoch + FIRST_EPOCH


@dataclass
class EpochEvaluations:
    """The evaluations of one epoch: role ("val", "test") -> network ("net", "net_swa") -> Evaluation, and
    role -> the positions in its split of the examples evaluated, in the evaluations' order (all of them
    unless Lightning's limit_val_batches cut the evaluation short)."""

    epoch: int
    evaluations: dict[str, dict[str, Evaluation]]
    indices: dict[str, np.ndarray] = field(default_factory=dict)

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch,
                "evaluations": {role: {net: _evaluation_state(result) for net, result in nets.items()}
                                for role, nets in self.evaluations.items()},
                "indices": {role: torch.from_numpy(positions) for role, positions in self.indices.items()}}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> EpochEvaluations:
        return cls(int(state["epoch"]), {role: {net: evaluation(**result) for net, result in nets.items()}
                                         for role, nets in state["evaluations"].items()},
                   {role: positions.numpy() for role, positions in state.get("indices", {}).items()})


class ModelSelection:
    """The epochs of a training, their figures, and the one selected by ``model_selection``."""

    def __init__(self, model_selection: str = "validation"):
        if model_selection not in MODEL_SELECTIONS:
            raise ValueError(
                f"model_selection={model_selection!r}: expected 'validation' (the epoch of the best validation "
                "accuracy; validation holds only training domains) or 'oracle' (the best test accuracy, as results "
                "chosen on their test set were; optimistic)"
            )
        self.mode = model_selection
        self.monitor = MODEL_SELECTIONS[model_selection]
        self.history: list[dict[str, float]] = []
        self.selected: EpochEvaluations | None = None
        self.last: EpochEvaluations | None = None

    @property
    def label(self) -> str:
        """How outputs name the selected epoch: "selected" (on validation) or "oracle" (on test)."""
        return "oracle" if self.mode == "oracle" else "selected"

    @property
    def selected_epoch(self) -> int | None:
        return None if self.selected is None else self.selected.epoch

    def record(self, epoch: int, evaluations: dict[str, dict[str, Evaluation]],
               indices: dict[str, np.ndarray] | None = None) -> dict[str, float]:
        """Add an epoch's evaluations (replacing an earlier record of the same epoch, which a resumed training
        repeats), with the split positions of their examples per role; returns its figures by logged name
        (val/acc, test/acc, val_swa/acc, ...)."""
        figures = {f"{role}{NET_SUFFIXES[net]}/{name}": value
                   for role, nets in evaluations.items() for net, result in nets.items()
                   for name, value in result.scalars().items()}
        self.history = [entry for entry in self.history if entry["epoch"] != epoch]
        self.history.append({"epoch": epoch, **figures})
        self.last = EpochEvaluations(epoch, evaluations, dict(indices or {}))
        best = self.best()
        if best is not None and best[0] == epoch:
            self.selected = self.last
        return figures

    def best(self) -> tuple[int, float] | None:
        """(epoch, monitored figure) of the first epoch with the highest monitored figure so far."""
        scored = [entry for entry in self.history if self.monitor in entry]
        if not scored:
            return None
        best = max(scored, key=lambda entry: entry[self.monitor])  # max keeps the first of equal values
        return int(best["epoch"]), float(best[self.monitor])

    def state(self) -> dict[str, Any]:
        """What the checkpoints carry."""
        return {"mode": self.mode, "first_epoch": FIRST_EPOCH, "history": [dict(entry) for entry in self.history],
                "selected": None if self.selected is None else self.selected.state(),
                "last": None if self.last is None else self.last.state()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        """The state of :meth:`state`; one of a checkpoint numbering epochs from 0 (no "first_epoch") is renumbered."""
        shift = FIRST_EPOCH - int(state.get("first_epoch", 0))
        self.history = [{**entry, "epoch": int(entry["epoch"]) + shift} for entry in state["history"]]
        self.selected = self._evaluations(state.get("selected"), shift)
        self.last = self._evaluations(state.get("last"), shift)

    @staticmethod
    def _evaluations(state: Mapping[str, Any] | None, shift: int) -> EpochEvaluations | None:
        if state is None:
            return None
        evaluations = EpochEvaluations.from_state(state)
        evaluations.epoch += shift
        return evaluations


def _evaluation_state(result: Evaluation) -> dict[str, Any]:
    """An Evaluation as tensors and lists (what torch.load(weights_only=True) reads back)."""
    return {
        "predictions": torch.from_numpy(result.predictions), "labels": torch.from_numpy(result.labels),
        "domains": torch.from_numpy(result.domains), "losses": torch.from_numpy(result.losses),
        "class_names": list(result.class_names), "domain_names": list(result.domain_names),
        "seen_domains": list(result.seen_domains),
    }
