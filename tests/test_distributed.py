"""Multi-process training (DDP=N): settings, the gathering of validation outputs, and the command line.

The end-to-end tests run DDP=2 on the CPU (gloo) on the demo data, as users type it, and compare with one
process: same figures over the whole evaluation split, one run folder, one set of outputs.
"""

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers.training.classifier import AudioClassifier
from helpers.training.trainer import ddp_processes, translate_trainer_config
from models.audio_model import AudioModel

REPO = Path(__file__).resolve().parents[1]  # torchrun is given the script's path
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
    rank_0 = {key: [parts[0][:2], parts[0][2:]] for key, parts in shards.items()}  # 2 batches
    module.all_gather = lambda tensor: next(calls)
    module._trainer = SimpleNamespace(world_size=2)
    gathered = module._gather_outputs(rank_0)
    assert gathered["index"].tolist() == [0, 1, 2, 3, 4]
    assert gathered["label"].tolist() == [10, 11, 12, 13, 14]
    np.testing.assert_allclose(gathered["net.loss"].numpy(), [0.0, 0.1, 0.2, 0.3, 0.4])


def domain_accuracies(csv_path: Path) -> dict[str, tuple[str, str]]:
    """source -> (accuracy, examples) from a per-domain report table."""
    rows = list(csv.reader(csv_path.open()))
    return {row[0]: tuple(row[2:]) for row in rows[1:]}


def count_test_examples(frito, tmp_path) -> int:
    """The number of examples of the demo's test split, as test_loaders counts them in one process."""
    out = frito("ex_nsynth.py", "test_loaders", cwd=tmp_path).stdout
    return int(out.split("test: ", 1)[1].split(" examples", 1)[0])


@pytest.mark.slow
def test_ddp_training_writes_one_set_of_outputs_and_is_reproducible(tmp_path, frito):
    first = frito("ex_nsynth.py", "-F", "runs", "with", *ONE_SHORT_EPOCH, "-p", cwd=tmp_path, processes=2)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["runs"]
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["1", "_sources"]
    run_dir = tmp_path / "runs" / "1"
    assert sorted(path.name for path in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert sorted(path.name for path in run_dir.glob("test_selected_*.csv")) == [
        "test_selected_net_confusion_matrix.csv", "test_selected_net_domains.csv"]
    assert first.stdout.count("training finished") == 1  # one console summary
    assert first.stdout.count("seed = 11") == 1  # the config printed once (-p)
    assert first.stderr.count("Running command 'main'") == 1  # the other rank logs warnings only
    assert "DDP=2: 2 processes (Lightning DDP, gloo)" in first.stderr
    # the whole test split, each example once
    assert f"({count_test_examples(frito, tmp_path)} examples)" in first.stdout
    assert "Grad strides do not match bucket view strides" not in first.stderr  # DDP copies no gradient

    frito("ex_nsynth.py", "-F", "runs", "with", *ONE_SHORT_EPOCH, cwd=tmp_path, processes=2)
    metrics = [json.loads((tmp_path / "runs" / run / "metrics.json").read_text()) for run in ("1", "2")]
    assert metrics[0].keys() == metrics[1].keys()
    for name in metrics[0]:
        assert metrics[0][name]["values"] == metrics[1][name]["values"], name


@pytest.mark.slow
@pytest.mark.parametrize("processes", [2, 4])
def test_ddp_evaluation_equals_one_process_on_the_same_checkpoint(tmp_path, frito, processes):
    """Several processes share the test examples unevenly: the sampler pads with repeats, which are dropped."""
    frito("ex_nsynth.py", "-F", "runs", "with", *ONE_SHORT_EPOCH, "trainer.limit_val_batches=1", cwd=tmp_path)
    evaluate = ["evaluate_only", "-F", "runs", "with", "checkpoint=runs/1/checkpoints/last.ckpt"]
    single = frito("ex_nsynth.py", *evaluate, cwd=tmp_path)
    several = frito("ex_nsynth.py", *evaluate, cwd=tmp_path, processes=processes)
    examples = f"({count_test_examples(frito, tmp_path)} examples)"
    assert examples in single.stdout and examples in several.stdout
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["1", "2", "3", "_sources"]
    expected, got = (domain_accuracies(tmp_path / "runs" / run / "test_checkpoint_net_domains.csv")
                     for run in ("2", "3"))
    assert set(got) >= {"acoustic", "electronic", "synthetic"}
    assert got == expected
    single_metrics, several_metrics = (json.loads((tmp_path / "runs" / run / "metrics.json").read_text())
                                       for run in ("2", "3"))
    for name in ("test/acc", "test/macro_acc", "test/acc_seen", "test/acc_unseen", "val/acc"):
        assert several_metrics[name]["values"] == single_metrics[name]["values"], name
    assert several_metrics["test/loss"]["values"][0] == pytest.approx(single_metrics["test/loss"]["values"][0],
                                                                      rel=1e-6)


@pytest.mark.slow
def test_torchrun_needs_no_ddp_variable(tmp_path, frito):
    # torchrun --standalone --nproc_per_node=2 ex_nsynth.py -F runs with ... trainer.devices=2 trainer.strategy=ddp
    result = frito("torch.distributed.run", "--standalone", "--nproc_per_node=2", str(REPO / "ex_nsynth.py"), "-F",
                   "runs", "with", *ONE_SHORT_EPOCH, "trainer.devices=2", "trainer.strategy=ddp",
                   "trainer.accelerator=cpu", cwd=tmp_path)
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["1", "_sources"]
    assert sorted(path.name for path in (tmp_path / "runs" / "1" / "checkpoints").iterdir()) == ["best.ckpt",
                                                                                               "last.ckpt"]
    assert result.stdout.count("training finished") == 1
    assert f"({count_test_examples(frito, tmp_path)} examples)" in result.stdout
