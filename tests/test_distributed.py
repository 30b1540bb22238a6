"""Multi-process training (DDP=N): settings, the gathering of validation outputs, and the command line.

The end-to-end tests run DDP=2 on the CPU (gloo) on the demo data, as users type it, and compare with one
process: same figures over the whole evaluation split, one run folder, one set of outputs.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers.trainer import ddp_processes, translate_trainer_config
from helpers.training_module import AudioClassifier
from models.audio_model import AudioModel

REPO = Path(__file__).resolve().parents[1]
ONE_SHORT_EPOCH = ["cpu_tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=3", "seed=11"]


@pytest.mark.parametrize(("value", "expected"), [(None, 1), ("", 1), ("1", 1), ("2", 2), (" 4 ", 4)])
def test_ddp_variable_gives_the_number_of_processes(value, expected):
    environ = {} if value is None else {"DDP": value}
    assert ddp_processes(environ) == expected


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_a_bad_ddp_variable_names_the_value(value):
    with pytest.raises(ValueError, match=f"DDP='{value}'"):
        ddp_processes({"DDP": value})


def test_ddp_asks_lightning_for_that_many_devices_and_replaces_the_config_s():
    settings = translate_trainer_config({"devices": 1, "max_epochs": 3}, cuda_available=False, processes=2)
    assert settings.kwargs == {"devices": 2, "strategy": "ddp", "max_epochs": 3}
    assert any("gloo" in notice and "2 x batch_size" in notice for notice in settings.notices)
    assert any("trainer.devices=1 is replaced by DDP=2" in notice for notice in settings.notices)
    on_gpus = translate_trainer_config({"gpus": 1}, cuda_available=True, processes=4)
    assert on_gpus.kwargs == {"devices": 4, "strategy": "ddp"}
    assert any("NCCL" in notice for notice in on_gpus.notices)


def test_gathered_outputs_hold_every_example_once_in_split_order():
    """Two processes' shards as DistributedSampler deals 5 examples: rank 0 gets 0, 2, 4 and rank 1 gets
    1, 3 and a repeat of 0 as padding. The gathered outputs are examples 0..4, each once."""
    model = AudioModel(torch.nn.Identity(), torch.nn.Identity())
    module = AudioClassifier(model, ["a", "b"], ["x"], ["x"], lr=1e-3, weight_decay=0.0, lr_factor=lambda epoch: 1.0)
    shards = {
        "index": [torch.tensor([0, 2, 4]), torch.tensor([1, 3, 0])],
        "label": [torch.tensor([10, 12, 14]), torch.tensor([11, 13, 10])],
        "net.loss": [torch.tensor([0.0, 0.2, 0.4]), torch.tensor([0.1, 0.3, 0.0])],
    }
    calls = iter([torch.tensor([3, 3])] + [torch.stack(shards[key]) for key in shards])
    module._outputs = {key: [parts[0][:2], parts[0][2:]] for key, parts in shards.items()}  # rank 0, 2 batches
    module.all_gather = lambda tensor: next(calls)
    module._trainer = SimpleNamespace(world_size=2)
    gathered = module._gather_outputs()
    assert gathered["index"].tolist() == [0, 1, 2, 3, 4]
    assert gathered["label"].tolist() == [10, 11, 12, 13, 14]
    np.testing.assert_allclose(gathered["net.loss"].numpy(), [0.0, 0.1, 0.2, 0.3, 0.4])


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.getbasetemp() / "frito-cache"


def nsynth(*arguments, cwd, cache_dir, processes=None):
    env = {**os.environ, "FRITO_CACHE_DIR": str(cache_dir)}
    env.pop("DDP", None)
    if processes:
        env["DDP"] = str(processes)
    result = subprocess.run([sys.executable, str(REPO / "ex_nsynth.py"), *arguments], cwd=cwd, env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def domain_accuracies(run_dir: Path) -> dict[str, tuple[str, str]]:
    """source -> (accuracy, examples) from the run's net_domains.csv."""
    rows = list(csv.reader((run_dir / "net_domains.csv").open()))
    return {row[0]: tuple(row[2:]) for row in rows[1:]}


@pytest.mark.slow
def test_ddp_training_writes_one_set_of_outputs_and_is_reproducible(tmp_path, cache_dir):
    first = nsynth("-F", "runs", "with", *ONE_SHORT_EPOCH, "-p", cwd=tmp_path, cache_dir=cache_dir, processes=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs"]
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["1", "_sources"]
    run_dir = tmp_path / "runs" / "1"
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(path.name for path in run_dir.glob("*.csv")) == ["net_confusion_matrix.csv", "net_domains.csv"]
    assert first.stdout.count("training finished") == 1  # one console summary
    assert first.stdout.count("seed = 11") == 1  # the config printed once (-p)
    assert first.stderr.count("Running command 'main'") == 1  # the other rank logs warnings only
    assert "DDP=2: 2 processes (Lightning DDP, gloo)" in first.stderr
    assert "(210 examples)" in first.stdout  # the whole demo evaluation split, each example once

    nsynth("-F", "runs", "with", *ONE_SHORT_EPOCH, cwd=tmp_path, cache_dir=cache_dir, processes=2)
    metrics = [json.loads((tmp_path / "runs" / run / "metrics.json").read_text()) for run in ("1", "2")]
    assert metrics[0].keys() == metrics[1].keys()
    for name in metrics[0]:
        assert metrics[0][name]["values"] == metrics[1][name]["values"], name


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
def test_ddp_evaluation_equals_one_process_on_the_same_checkpoint(tmp_path, cache_dir, processes):
    """4 processes share the 210 evaluation examples unevenly: the sampler pads with repeats."""
    nsynth("-F", "runs", "with", *ONE_SHORT_EPOCH, "trainer.limit_val_batches=1", cwd=tmp_path, cache_dir=cache_dir)
    evaluate = ["evaluate_only", "-F", "runs", "with", "checkpoint=runs/1/checkpoints/last.ckpt"]
    single = nsynth(*evaluate, cwd=tmp_path, cache_dir=cache_dir)
    several = nsynth(*evaluate, cwd=tmp_path, cache_dir=cache_dir, processes=processes)
    assert "(210 examples)" in single.stdout and "(210 examples)" in several.stdout
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["1", "2", "3", "_sources"]
    expected, got = domain_accuracies(tmp_path / "runs" / "2"), domain_accuracies(tmp_path / "runs" / "3")
    assert set(got) >= {"acoustic", "electronic", "synthetic"}
    assert got == expected
    single_metrics, several_metrics = (json.loads((tmp_path / "runs" / run / "metrics.json").read_text())
                                       for run in ("2", "3"))
    for name in ("val/acc", "val/macro_acc", "val/acc_seen", "val/acc_unseen"):
        assert several_metrics[name]["values"] == single_metrics[name]["values"], name
    assert several_metrics["val/loss"]["values"][0] == pytest.approx(single_metrics["val/loss"]["values"][0],
                                                                     rel=1e-6)


@pytest.mark.slow
def test_torchrun_needs_no_ddp_variable(tmp_path, cache_dir):
    # torchrun --standalone --nproc_per_node=2 ex_nsynth.py -F runs with ... trainer.devices=2 trainer.strategy=ddp
    env = {**os.environ, "FRITO_CACHE_DIR": str(cache_dir)}
    env.pop("DDP", None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "ex_nsynth.py"), "-F", "runs", "with", *ONE_SHORT_EPOCH, "trainer.devices=2",
               "trainer.strategy=ddp", "trainer.accelerator=cpu"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["1", "_sources"]
    assert sorted(path.name for path in (tmp_path / "runs" / "1" / "checkpoints").iterdir()) == ["best.ckpt",
                                                                                               "last.ckpt"]
    assert result.stdout.count("training finished") == 1 and "(210 examples)" in result.stdout
