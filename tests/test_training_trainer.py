"""Lightning 1.x trainer keys are translated with one notice each; everything a run writes stays in its folder."""

import json
import logging
from pathlib import Path

import pytest
import torch

from helpers.results.record import RecordLogger, RunRecord
from helpers.training.trainer import (
    LEGACY_TRAINER_KEYS,
    build_trainer,
    trainer_keys,
    translate_trainer_config,
)


@pytest.mark.parametrize(
    "key, value, cuda, expected",
    [
        ("gpus", 1, True, {"accelerator": "gpu", "devices": 1}),
        ("gpus", [0, 1], True, {"accelerator": "gpu", "devices": [0, 1]}),
        ("gpus", 1, False, {"accelerator": "cpu", "devices": 1}),
        ("gpus", 0, True, {"accelerator": "cpu", "devices": 1}),
        ("precision", 16, True, {"precision": "16-mixed"}),
        ("precision", 16, False, {"precision": "bf16-mixed"}),
        ("weights_summary", None, False, {"enable_model_summary": False}),
        ("reload_dataloaders_every_epoch", True, False, {"reload_dataloaders_every_n_epochs": 1}),
        ("reload_dataloaders_every_epoch", False, False, {"reload_dataloaders_every_n_epochs": 0}),
        ("benchmark", True, True, {"benchmark": True}),
        ("num_sanity_val_steps", 0, False, {"num_sanity_val_steps": 0}),
        ("use_tensorboard_logger", True, False, {}),
    ],
)
def test_each_legacy_key_is_translated_with_one_notice(key, value, cuda, expected):
    settings = translate_trainer_config({key: value, "max_epochs": 3}, cuda_available=cuda)
    assert settings.kwargs == {**expected, "max_epochs": 3}
    assert len(settings.notices) == 1
    assert settings.notices[0].startswith(f"trainer.{key}=")


def test_weights_summary_becomes_a_model_summary_callback():
    from pytorch_lightning.callbacks import ModelSummary

    settings = translate_trainer_config({"weights_summary": "full"}, cuda_available=False)
    assert [type(c) for c in settings.callbacks] == [ModelSummary]
    assert settings.callbacks[0]._max_depth == -1
    with pytest.raises(ValueError, match="weights_summary"):
        translate_trainer_config({"weights_summary": "some"}, cuda_available=False)


def test_tensorboard_switch():
    assert translate_trainer_config({"use_tensorboard_logger": True}, False).tensorboard is True
    off = translate_trainer_config({"use_tensorboard_logger": False}, False)
    assert off.tensorboard is False and off.kwargs == {} and off.notices == []
    assert translate_trainer_config({}, False).tensorboard is False


def test_reproducibility_defaults_pass_without_notice():
    settings = translate_trainer_config({"deterministic": False, "benchmark": False}, cuda_available=True)
    assert settings.kwargs == {"deterministic": False, "benchmark": False}
    assert settings.notices == []


@pytest.mark.parametrize("deterministic, benchmark", [(True, False), ("warn", False), (False, True), (False, False)])
def test_deterministic_and_benchmark_reach_torch(tmp_path, deterministic, benchmark):
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.benchmark)
    try:
        build_trainer({"max_epochs": 1, "deterministic": deterministic, "benchmark": benchmark}, tmp_path)
        assert torch.are_deterministic_algorithms_enabled() is (deterministic is not False)
        assert torch.is_deterministic_algorithms_warn_only_enabled() is (deterministic == "warn")
        assert torch.backends.cudnn.benchmark is benchmark
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.benchmark = before[2]


def test_lightning_2_values_pass_unchanged_without_notice():
    config = {"precision": "bf16-mixed", "max_epochs": 2, "limit_train_batches": 5, "devices": 1}
    settings = translate_trainer_config(config, cuda_available=False)
    assert settings.kwargs == config
    assert settings.notices == []


def test_framework_keys_are_refused():
    with pytest.raises(ValueError, match="trainer.default_root_dir is set by the framework"):
        translate_trainer_config({"default_root_dir": "."}, cuda_available=False)


def test_accepted_keys():
    keys = trainer_keys()
    assert {"max_epochs", "limit_train_batches", "strategy", "num_nodes"} <= keys
    assert set(LEGACY_TRAINER_KEYS) <= keys
    assert not {"logger", "callbacks", "plugins", "default_root_dir", "self"} & keys


def test_build_trainer_writes_under_the_run_folder(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="helpers.training.trainer")
    trainer = build_trainer({"max_epochs": 1, "use_tensorboard_logger": True, "gpus": 0}, tmp_path)
    assert trainer.default_root_dir == str(tmp_path)
    assert Path(trainer.logger.log_dir) == tmp_path / "tensorboard"
    assert Path(trainer.checkpoint_callback.dirpath) == tmp_path / "checkpoints"
    notices = [r.message for r in caplog.records if r.message.startswith("trainer.")]
    assert len(notices) == 2


def test_the_record_logger_steps_by_epoch(tmp_path):
    record = RunRecord("nsynth")
    RecordLogger(record, "run").log_metrics({"val/acc": 0.5, "epoch": 3}, step=120)
    RecordLogger(record, "run").log_metrics({"train/loss": 2.0}, step=5)
    # Lightning's epoch 3 is the fourth: figures are stepped by the epoch numbered from 1, as the console numbers it
    assert record.metrics == {"val/acc": {"steps": [4], "values": [0.5]}, "train/loss": {"steps": [5], "values": [2.0]}}
    assert json.loads(record.write_metrics(tmp_path).read_text()) == record.metrics
