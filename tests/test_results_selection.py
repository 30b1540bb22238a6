"""Model selection: the first epoch of the best validation accuracy, never the test split unless asked."""

import pytest
import torch

from helpers.results.metrics import evaluation
from helpers.results.selection import EpochEvaluations, ModelSelection

CLASSES, DOMAINS = ("x", "y"), ("a", "b")


def scored(correct: int, total: int = 4):
    """An evaluation of `total` examples of class x in domain a, `correct` of them right."""
    predictions = [0] * correct + [1] * (total - correct)
    return evaluation(predictions, [0] * total, [0] * total, [0.5] * total, CLASSES, DOMAINS, ("a",))


def epoch(validation: int, test: int):
    return {"val": {"net": scored(validation)}, "test": {"net": scored(test)}}


def test_selects_the_first_epoch_of_the_best_validation_accuracy_whatever_the_test_split_says():
    selection = ModelSelection("validation")
    for number, (validation, test) in enumerate([(1, 4), (3, 0), (3, 4), (2, 4)]):
        selection.record(number, epoch(validation, test))
    assert selection.selected_epoch == 1 and selection.label == "selected"
    assert selection.selected.evaluations["test"]["net"].accuracy == 0.0  # reported as it is
    assert selection.last.epoch == 3
    assert selection.best() == (1, 0.75)


def test_oracle_selects_on_the_test_split_and_says_so():
    selection = ModelSelection("oracle")
    for number, (validation, test) in enumerate([(1, 4), (3, 0)]):
        selection.record(number, epoch(validation, test))
    assert selection.selected_epoch == 0 and selection.label == "oracle"


def test_a_repeated_epoch_replaces_its_record_and_figures_are_named_by_role():
    selection = ModelSelection()
    selection.record(0, epoch(1, 1))
    figures = selection.record(0, epoch(2, 3))
    assert figures["val/acc"] == 0.5 and figures["test/acc"] == 0.75
    assert len(selection.history) == 1 and selection.history[0]["val/acc"] == 0.5


def test_state_round_trips_through_a_checkpoint(tmp_path):
    selection = ModelSelection()
    selection.record(0, epoch(3, 1))
    selection.record(1, epoch(2, 4))
    torch.save(selection.state(), tmp_path / "state.pt")
    restored = ModelSelection()
    restored.load_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert restored.history == selection.history and restored.selected_epoch == 0
    result = restored.selected.evaluations["test"]["net"]
    assert result.accuracy == 0.25 and result.class_names == CLASSES and result.seen_domains == ("a",)
    assert isinstance(restored.last, EpochEvaluations) and restored.last.epoch == 1


def test_unknown_model_selection_is_refused():
    with pytest.raises(ValueError, match="model_selection='best'"):
        ModelSelection("best")


def test_a_checkpoint_numbering_epochs_from_0_is_read_in_the_numbering_from_1(tmp_path):
    # what a checkpoint written before epochs were numbered from 1 holds: no "first_epoch", epochs 0 and 1
    selection = ModelSelection()
    selection.record(0, epoch(3, 1))
    selection.record(1, epoch(2, 4))
    old_state = {key: value for key, value in selection.state().items() if key != "first_epoch"}
    torch.save(old_state, tmp_path / "state.pt")
    restored = ModelSelection()
    restored.load_state(torch.load(tmp_path / "state.pt", weights_only=True))
    assert [entry["epoch"] for entry in restored.history] == [1, 2]
    assert restored.selected_epoch == 1 and restored.last.epoch == 2
    restored.record(3, epoch(4, 4))  # the resumed training's next epoch, in the new numbering
    assert restored.selected_epoch == 3 and [entry["epoch"] for entry in restored.history] == [1, 2, 3]
