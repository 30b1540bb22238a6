"""The command lines of the experiments, run as users type them, in a subprocess on the demo data.

Trainings are cut to short epochs (mini_train); the run folders they leave are checked: checkpoints,
reports of the test split at the selected and the last epoch, results, splits, TensorBoard logs, metrics.
"""

import csv
import json
import re

import numpy as np
import pytest
import torch

ONE_EPOCH = ["mini_train", "trainer.max_epochs=1"]


def final(metrics, name):
    return metrics[name]["values"][-1]


@pytest.mark.slow
def test_nsynth_issue_command_line_then_evaluate_only(tmp_path, frito):
    # python ex_nsynth.py with models.net.rf_norm_t=high_low trainer.use_tensorboard_logger=True -p --debug
    train = frito("ex_nsynth.py", "-F", "runs", "with", "models.net.rf_norm_t=high_low",
                  "trainer.use_tensorboard_logger=True", "mini_train", "trainer.max_epochs=2", "seed=5", "-p",
                  "--debug", cwd=tmp_path)
    run_dir = tmp_path / "runs" / "1"
    assert "rf_norm_t = 'high_low'" in train.stdout  # -p printed the config; the derived values are logged
    assert "models.net.input_tdim=200" in train.stderr and "models.net.n_classes=10" in train.stderr  # 2 s clips
    assert "in-domain sources" in train.stdout and "out-of-domain sources" in train.stdout
    assert "trainer.use_tensorboard_logger=True" in train.stderr  # the translation notice
    for moment in ("selected", "last"):
        for name in ("confusion_matrix.png", "confusion_matrix.csv", "domains.png", "domains.csv"):
            assert (run_dir / f"test_{moment}_net_{name}").is_file(), name
    for name in ("checkpoints/best.ckpt", "checkpoints/last.ckpt", "results.json", "test_predictions.csv",
                 "splits.json"):
        assert (run_dir / name).is_file(), name
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert not (tmp_path / "lightning_logs").exists()

    metrics = json.loads((run_dir / "metrics.json").read_text())
    results = json.loads((run_dir / "results.json").read_text())
    assert len(metrics["val/acc"]["values"]) == len(metrics["test/acc"]["values"]) == 2
    selected = results["selected_epoch"]
    validation = metrics["val/acc"]["values"]
    assert metrics["val/acc"]["steps"] == [1, 2] and results["last_epoch"] == 2  # epochs numbered from 1
    assert selected == 1 + int(np.argmax(validation)) and results["model_selection"] == "validation"
    assert results["test"]["net"]["selected"]["acc"] == pytest.approx(metrics["test/acc"]["values"][selected - 1])
    assert results["test"]["net"]["last"]["acc"] == pytest.approx(final(metrics, "test/acc"))
    best = torch.load(run_dir / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=True)
    assert best["epoch"] + 1 == selected  # Lightning's own counter in the checkpoint starts at 0
    domains = {row[0]: row for row in csv.reader((run_dir / "test_selected_net_domains.csv").open())}
    for source in ("acoustic", "electronic", "synthetic"):
        assert results["test"]["net"]["selected"][f"domain/{source}"] == pytest.approx(float(domains[source][3]))
    assert domains["acoustic"][1] == "in-domain sources" and domains["synthetic"][1] == "out-of-domain sources"
    predictions = list(csv.DictReader((run_dir / "test_predictions.csv").open()))
    assert np.mean([row["label"] == row["net_selected"] for row in predictions]) == pytest.approx(
        results["test"]["net"]["selected"]["acc"])

    # evaluate_only on the selected checkpoint, the same test batches: the figures the training reported
    frito("ex_nsynth.py", "evaluate_only", "-F", "runs", "with", "checkpoint=runs/1/checkpoints/best.ckpt",
          "trainer.limit_val_batches=5", cwd=tmp_path)
    evaluated = json.loads((tmp_path / "runs" / "2" / "metrics.json").read_text())
    assert final(evaluated, "test/acc") == pytest.approx(results["test"]["net"]["selected"]["acc"], abs=1e-6)
    assert (tmp_path / "runs" / "2" / "test_checkpoint_net_domains.csv").is_file()


@pytest.mark.slow
def test_dcase20_seed_command_line_without_observer(tmp_path, frito):
    # the FRITO README's line, on the development-set experiment's original file name:
    # python ex_dcase20_dev.py with models.net.rf_norm_t=row_overlap_8 use_mixup=True mixup_alpha=0.3
    #     trainer.use_tensorboard_logger=True -p --debug
    train = frito("ex_dcase20_dev.py", "with", "models.net.rf_norm_t=row_overlap_8", "use_mixup=True",
                  "mixup_alpha=0.3", "trainer.use_tensorboard_logger=True", *ONE_EPOCH, "-p", "--debug", cwd=tmp_path)
    run_dir = tmp_path / "runs" / "1"  # without -F, runs/ as with -F runs/ (Sacred keeps the sources in runs/_sources)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "seen devices" in train.stdout and "unseen devices" in train.stdout
    assert "dcase20_dev: training finished" in train.stdout + train.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
    # output to a pipe: one line per epoch instead of progress-bar updates
    assert re.search(r"epoch 1/1 \(\d+:\d\d:\d\d, about 0:00:00 left\): train/loss", train.stderr)
    assert "it/s]" not in train.stderr

    # evaluate_only without -F writes beside the checkpoint, not into a new runs/<id>
    frito("ex_dcase20.py", "evaluate_only", "with", f"checkpoint={run_dir}/checkpoints/last.ckpt",
          "trainer.limit_val_batches=2", cwd=tmp_path)
    (evaluation,) = (path for path in (run_dir / "evaluations").iterdir() if path.name != "_sources")
    assert evaluation.name.startswith("last_") and (evaluation / "test_checkpoint_net_domains.csv").is_file()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [run_dir.name, "_sources"]


@pytest.mark.slow
@pytest.mark.parametrize("script", ["ex_dcase20.py", "ex_nsynth.py"])
def test_validation_and_test_are_disjoint_and_validation_holds_training_domains(tmp_path, frito, cache_dir, script):
    frito(script, "-F", "runs", "with", *ONE_EPOCH, "trainer.limit_train_batches=1", cwd=tmp_path)
    run_dir = tmp_path / "runs" / "1"
    splits = json.loads((run_dir / "splits.json").read_text())
    assert set(splits) == {"train", "validation", "test"} and all(splits.values())
    assert not set(splits["validation"]) & set(splits["test"])
    assert not set(splits["validation"]) & set(splits["train"])
    results = json.loads((run_dir / "results.json").read_text())
    seen = set(results["seen_domains"])
    domain_of = file_domains(script, cache_dir / "demo")
    assert {domain_of[name] for name in splits["validation"]} <= seen
    assert {domain_of[name] for name in splits["test"]} - seen  # the test split holds unseen domains


def file_domains(script: str, demo) -> dict[str, str]:
    """file name -> domain from the demo data's own metadata (not from frito's reading of it)."""
    if script == "ex_dcase20.py":
        (meta,) = demo.glob("dcase20-demo-*/*/meta.csv")
        return {row["filename"]: row["source_label"] for row in csv.DictReader(meta.open(), delimiter="\t")}
    domains = {}
    for examples in demo.glob("nsynth-demo-*/*/examples.json"):
        split = examples.parent.name
        for note, entry in json.loads(examples.read_text()).items():
            domains[f"{split}/audio/{note}.wav"] = entry["instrument_source_str"]
    return domains


@pytest.mark.slow
def test_evaluate_only_reports_seen_devices_as_trained(tmp_path, frito):
    # trained on device a only; evaluated with the default train_domains (every device of the train split)
    frito("ex_dcase20.py", "-F", "runs", "with", "cpu_tiny", "basedataset.train_domains=['a']", *ONE_EPOCH,
          cwd=tmp_path)
    checkpoint = tmp_path / "runs" / "1" / "checkpoints" / "last.ckpt"
    assert torch.load(checkpoint, map_location="cpu", weights_only=True)["frito"]["seen_domains"] == ["a"]
    evaluation = frito("ex_dcase20.py", "evaluate_only", "-F", "runs", "with", f"checkpoint={checkpoint}",
                       "trainer.limit_val_batches=2", cwd=tmp_path)
    assert "was trained on the devices ['a'], the configured basedataset.train_domains give" in evaluation.stderr
    rows = list(csv.reader((tmp_path / "runs" / "2" / "test_checkpoint_net_domains.csv").open()))[1:]
    groups = {row[0]: row[1] for row in rows if not row[0].startswith("mean of")}
    assert groups["a"] == "seen devices" and len(groups) > 1
    assert all(group == "unseen devices" for device, group in groups.items() if device != "a")
    assert "a* " in evaluation.stdout and "b* " not in evaluation.stdout  # the summary stars seen devices


@pytest.mark.slow
def test_sparse_row_form_trains(tmp_path, frito):
    # python ex_nsynth.py with models.net.rf_norm_t=sparse_row_6
    frito("ex_nsynth.py", "-F", "runs", "with", "models.net.rf_norm_t=sparse_row_6", *ONE_EPOCH, cwd=tmp_path)
    checkpoint = torch.load(tmp_path / "runs" / "1" / "checkpoints" / "last.ckpt", map_location="cpu",
                            weights_only=True)
    assert checkpoint["frito"]["net"]["rf_norm_t"] == "sparse_row_6"
    results = json.loads((tmp_path / "runs" / "1" / "results.json").read_text())
    assert 0.0 <= results["test"]["net"]["last"]["acc"] <= 1.0 and results["last_epoch"] == 1


def test_demo_notice_names_demo_data_only_for_datasets_that_have_it(tmp_path, frito):
    notice = "training on the bundled demo data"
    assert notice in frito("ex_nsynth.py", "print_config", cwd=tmp_path).stderr
    folder = frito("ex_folder.py", "print_config", cwd=tmp_path)
    assert notice not in folder.stderr and notice not in folder.stdout
    refused = frito("ex_folder.py", "test_loaders", cwd=tmp_path, check=False)
    assert refused.returncode == 1 and notice not in refused.stderr
    assert "test_loaders: basedataset.base_dir is required, the folder dataset has no demo data" in refused.stderr
