"""The command lines of the experiments, run as users type them, in a subprocess on the demo data.

Trainings are cut to one short epoch (mini_train, trainer.max_epochs=1); the run folders they leave are
checked: checkpoints, reports, TensorBoard logs, Sacred metrics.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
ONE_EPOCH = ["mini_train", "trainer.max_epochs=1"]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One demo data set and cache for the whole test session (the in-process tests use the same folder)."""
    return tmp_path_factory.getbasetemp() / "frito-cache"


def frito(script, *arguments, cwd, cache_dir, check=True):
    env = {**os.environ, "FRITO_CACHE_DIR": str(cache_dir)}
    result = subprocess.run([sys.executable, str(REPO / script), *arguments], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def final(metrics, name):
    return metrics[name]["values"][-1]


@pytest.mark.slow
def test_nsynth_issue_command_line_then_evaluate_only(tmp_path, cache_dir):
    # python ex_nsynth.py with models.net.rf_norm_t=high_low trainer.use_tensorboard_logger=True -p --debug
    train = frito("ex_nsynth.py", "-F", "runs", "with", "models.net.rf_norm_t=high_low",
                  "trainer.use_tensorboard_logger=True", *ONE_EPOCH, "seed=5", "-p", "--debug",
                  cwd=tmp_path, cache_dir=cache_dir)
    run_dir = tmp_path / "runs" / "1"
    assert "rf_norm_t = 'high_low'" in train.stdout  # -p printed the config
    assert "in-domain sources" in train.stdout and "out-of-domain sources" in train.stdout
    assert "trainer.use_tensorboard_logger=True" in train.stderr  # the translation notice
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "net_confusion_matrix.png",
                 "net_confusion_matrix.csv", "net_domains.png", "net_domains.csv"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "lightning_logs").exists()

    metrics = json.loads((run_dir / "metrics.json").read_text())
    domains = {row[0]: row for row in csv.reader((run_dir / "net_domains.csv").open())}
    for source in ("acoustic", "electronic", "synthetic"):
        assert final(metrics, f"val/domain/{source}") == pytest.approx(float(domains[source][3]), abs=1e-6)
    assert domains["acoustic"][1] == "in-domain sources" and domains["synthetic"][1] == "out-of-domain sources"
    trained_acc = final(metrics, "val/acc")

    frito("ex_nsynth.py", "evaluate_only", "-F", "runs", "with", "checkpoint=runs/1/checkpoints/last.ckpt",
          "trainer.limit_val_batches=5", cwd=tmp_path, cache_dir=cache_dir)
    evaluated = json.loads((tmp_path / "runs" / "2" / "metrics.json").read_text())
    assert final(evaluated, "val/acc") == pytest.approx(trained_acc, abs=1e-6)
    assert (tmp_path / "runs" / "2" / "net_domains.csv").is_file()


@pytest.mark.slow
def test_dcase20_issue_command_line_without_observer(tmp_path, cache_dir):
    # python ex_dcase20.py with models.net.rf_norm_t=row_overlap_8 use_mixup=True mixup_alpha=0.3
    #     trainer.use_tensorboard_logger=True -p --debug
    train = frito("ex_dcase20.py", "with", "models.net.rf_norm_t=row_overlap_8", "use_mixup=True", "mixup_alpha=0.3",
                  "trainer.use_tensorboard_logger=True", *ONE_EPOCH, "-p", "--debug", cwd=tmp_path, cache_dir=cache_dir)
    (run_dir,) = (tmp_path / "runs").iterdir()  # runs/<timestamp>
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "seen devices" in train.stdout and "unseen devices" in train.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]


@pytest.mark.slow
def test_evaluate_only_reports_seen_devices_as_trained(tmp_path, cache_dir):
    # trained on device a only; evaluated with the default train_domains (every device of the train split)
    frito("ex_dcase20.py", "-F", "runs", "with", "cpu_tiny", "basedataset.train_domains=['a']", *ONE_EPOCH,
          cwd=tmp_path, cache_dir=cache_dir)
    checkpoint = tmp_path / "runs" / "1" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["frito"]["seen_domains"] == ["a"]
    evaluation = frito("ex_dcase20.py", "evaluate_only", "-F", "runs", "with", f"checkpoint={checkpoint}",
                       "trainer.limit_val_batches=2", cwd=tmp_path, cache_dir=cache_dir)
    assert "was trained on the devices ['a'], the configured basedataset.train_domains give" in evaluation.stderr
    rows = list(csv.reader((tmp_path / "runs" / "2" / "net_domains.csv").open()))[1:]
    groups = {row[0]: row[1] for row in rows if not row[0].startswith("mean of")}
    assert groups["a"] == "seen devices" and len(groups) > 1
    assert all(group == "unseen devices" for device, group in groups.items() if device != "a")
    assert "a* " in evaluation.stdout and "b* " not in evaluation.stdout  # the summary stars seen devices


@pytest.mark.slow
def test_sparse_row_form_trains(tmp_path, cache_dir):
    # python ex_nsynth.py with models.net.rf_norm_t=sparse_row_6
    frito("ex_nsynth.py", "with", "models.net.rf_norm_t=sparse_row_6", *ONE_EPOCH, cwd=tmp_path, cache_dir=cache_dir)


def test_configuration_error_on_the_command_line(tmp_path, cache_dir):
    result = frito("ex_dcase20.py", "with", "models.net.rf_norm_tt=row_overlap_8", cwd=tmp_path, cache_dir=cache_dir,
                   check=False)
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert "Unknown config key 'models.net.rf_norm_tt'. Did you mean models.net.rf_norm_t?" in output
    assert "Traceback" not in output
    assert list(tmp_path.iterdir()) == []


def test_demo_notice_names_demo_data_only_for_datasets_that_have_it(tmp_path, cache_dir):
    notice = "training on the bundled demo data"
    assert notice in frito("ex_nsynth.py", "print_config", cwd=tmp_path, cache_dir=cache_dir).stderr
    folder = frito("ex_folder.py", "print_config", cwd=tmp_path, cache_dir=cache_dir)
    assert notice not in folder.stderr and "demo" not in folder.stdout
    refused = frito("ex_folder.py", "test_loaders", cwd=tmp_path, cache_dir=cache_dir, check=False)
    assert refused.returncode == 1 and notice not in refused.stderr
    assert "test_loaders: basedataset.base_dir is required, the folder dataset has no demo data" in refused.stderr
