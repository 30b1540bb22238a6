"""Resuming a training from checkpoints/last.ckpt after an interruption, run as users do in a subprocess.

The reference is the same command run without interruption: the resumed run must end with bit-identical
weights (network, SWA average) and the same figures. The interrupted run is stopped by a signal it sends
itself in the middle of an epoch (SIGKILL: nothing is cleaned up; SIGTERM: what a cluster sends).
"""

import json
import shutil
import signal
from pathlib import Path

import pytest
import torch

from errors import UserError

REPO = Path(__file__).resolve().parents[1]
SHORT = ["cpu_tiny", "trainer.max_epochs=3", "trainer.limit_train_batches=3", "trainer.limit_val_batches=2",
         "trainer.num_sanity_val_steps=0", "swa_epoch_start=1", "seed=7"]
KILL_EPOCH = 2  # interrupted after its second training batch; last.ckpt then holds epoch 1

# Runs ex_nsynth.py's command line with a callback that signals its own process mid-epoch.
INTERRUPTING_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import pytorch_lightning as pl
import helpers.training.fit as training
from ex_nsynth import ex


class Interrupt(pl.Callback):
    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if trainer.current_epoch == {epoch} and batch_idx == 1:
            os.kill(os.getpid(), signal.{signal})


build_trainer = training.build_trainer
training.build_trainer = lambda *args, callbacks=(), **kwargs: build_trainer(
    *args, callbacks=(*callbacks, Interrupt()), **kwargs)
ex.run_commandline()
"""


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, frito):
    """runs/1: the reference training, never interrupted."""
    folder = tmp_path_factory.mktemp("resume")
    frito("ex_nsynth.py", "-F", "runs", "with", *SHORT, cwd=folder)
    return folder / "runs" / "1"


def last_checkpoint(run_dir: Path) -> dict:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.parametrize("signal_name", ["SIGKILL", "SIGTERM"])
def test_interrupted_and_resumed_training_ends_as_the_uninterrupted_one(uninterrupted, tmp_path, frito, signal_name):
    script = tmp_path / "interrupting.py"
    script.write_text(INTERRUPTING_SCRIPT.format(repo=str(REPO), epoch=KILL_EPOCH, signal=signal_name))
    killed = frito(str(script), "-F", "runs", "with", *SHORT, cwd=tmp_path, check=False)
    # SIGKILL ends the process at once; SIGTERM stops it at the next batch with the shell's status for it
    assert killed.returncode == (-signal.SIGKILL if signal_name == "SIGKILL" else 128 + signal.SIGTERM)
    assert last_checkpoint(tmp_path / "runs" / "1")["epoch"] == KILL_EPOCH - 1

    resumed = frito("ex_nsynth.py", "-F", "runs", "with", *SHORT, "resume=runs/1", cwd=tmp_path)
    run_dir = tmp_path / "runs" / "2"
    info = json.loads((run_dir / "info.json").read_text())
    assert info["resumed_from"] == "runs/1/checkpoints/last.ckpt"
    assert "training finished" in resumed.stdout

    reference, final = last_checkpoint(uninterrupted), last_checkpoint(run_dir)
    assert final["epoch"] == reference["epoch"] == 2
    assert final["state_dict"].keys() == reference["state_dict"].keys()
    assert any(key.startswith("net_swa.module.") for key in final["state_dict"])
    for key, value in reference["state_dict"].items():
        assert torch.equal(final["state_dict"][key], value), key
    expected, got = metrics(uninterrupted), metrics(run_dir)
    for name in ("val/acc", "val/loss", "test/acc", "test/domain/acoustic", "test_swa/acc", "test_swa/loss",
                 "train/loss"):
        assert got[name]["values"][-1] == expected[name]["values"][-1], name
    # the same epoch selected over the whole training, and best.ckpt in the new folder is that epoch's
    assert json.loads((run_dir / "results.json").read_text()) == json.loads(
        (uninterrupted / "results.json").read_text())
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    reference_best = torch.load(uninterrupted / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] == reference_best["epoch"]
    for key, value in reference_best["state_dict"].items():
        assert torch.equal(best["state_dict"][key], value), key


@pytest.mark.slow
def test_resume_last_takes_the_newest_run(uninterrupted, frito):
    folder = uninterrupted.parent.parent
    shutil.rmtree(folder / "runs" / "2", ignore_errors=True)
    frito("ex_nsynth.py", "-F", "runs", "with", *SHORT, "trainer.max_epochs=4", "resume=last", cwd=folder)
    info = json.loads((folder / "runs" / "2" / "info.json").read_text())
    assert info["resumed_from"] == "runs/1/checkpoints/last.ckpt"
    assert last_checkpoint(folder / "runs" / "2")["epoch"] == 3
    assert [epoch for epoch in metrics(folder / "runs" / "2")["val/acc"]["steps"]][-1] == 4  # numbered from 1


@pytest.fixture(scope="module")
def nsynth_experiment(load_experiment):
    return load_experiment("ex_nsynth")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damage", "updates", "message"),
    [
        ("truncate", {}, "not a readable checkpoint (truncated?)"),
        ("foreign", {}, "is not a frito checkpoint (it has no 'frito' entry)"),
        (None, {"models": {"net": {"rf_norm_t": "high_low"}}},
         "models.net.rf_norm_t: checkpoint '', config 'high_low'"),
        (None, {"swa": False}, "swa: checkpoint True, config False"),
        (None, {"basedataset": {"clip_length": 1.0}}, "basedataset.clip_length: checkpoint 2.0, config 1.0"),
        (None, {"basedataset": {"train_domains": ["acoustic", "electronic"]}},
         "basedataset.train_domains: checkpoint ['acoustic'], config ['acoustic', 'electronic']"),
    ],
)
def test_an_unusable_checkpoint_is_refused_naming_file_and_mismatch(uninterrupted, nsynth_experiment, tmp_path,
                                                                    monkeypatch, cache_dir, damage, updates, message):
    checkpoint = tmp_path / "last.ckpt"
    content = (uninterrupted / "checkpoints" / "last.ckpt").read_bytes()
    if damage == "truncate":
        content = content[: len(content) // 2]
    elif damage == "foreign":
        buffer = tmp_path / "foreign.pt"
        torch.save({"state_dict": {}}, buffer)
        content = buffer.read_bytes()
    checkpoint.write_bytes(content)
    monkeypatch.chdir(tmp_path)
    updates = {**updates, "swa_epoch_start": 1, "resume": str(checkpoint)}
    updates["basedataset"] = {**updates.get("basedataset", {}), "cache_dir": str(cache_dir)}
    with pytest.raises(UserError) as error:
        nsynth_experiment.run(config_updates=updates, named_configs=["cpu_tiny"], options={"--capture": "sys"})
    assert str(checkpoint) in str(error.value) and message in str(error.value)
    assert not list((tmp_path / "runs").glob("*/checkpoints/*.ckpt"))


@pytest.mark.slow
def test_resume_names_a_missing_checkpoint(nsynth_experiment, tmp_path, monkeypatch, cache_dir):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"resume='last': no runs/\*/checkpoints/last.ckpt"):
        nsynth_experiment.run(config_updates={"resume": "last", "basedataset": {"cache_dir": str(cache_dir)}},
                              named_configs=["cpu_tiny"], options={"--capture": "sys"})
