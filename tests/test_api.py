"""helpers.api: training and evaluating from Python take the command line's path without a Sacred run."""

import json

import pytest
from sacred.run import Run

from errors import UserError
from helpers import api

SHORT = {"trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 2}, "seed": 3}


@pytest.fixture
def demo_cache(cache_dir, monkeypatch):
    monkeypatch.setenv("FRITO_CACHE_DIR", str(cache_dir))


def test_a_bad_setting_stops_before_any_work(in_tmp, demo_cache):
    with pytest.raises(UserError, match="Did you mean lr?"):
        api.train("nsynth", updates={"lrr": 0.1}, named_configs=["cpu_tiny"], run_dir=in_tmp / "run")
    with pytest.raises(UserError, match="unknown named configs \\['cpu_tinyy'\\]"):
        api.train("nsynth", named_configs=["cpu_tinyy"], run_dir=in_tmp / "run")
    with pytest.raises(UserError, match="experiment 'esc_50' is not one of"):
        api.train("esc_50")
    assert list(in_tmp.iterdir()) == []  # no run folder, nothing written


def test_the_config_is_the_command_lines(demo_cache):
    _, config = api.resolved_config("dcase20", "main", {"trainer.max_epochs": 3, "lr": 0.5}, ["frito_per_row_6"])
    assert config["models"]["net"]["rf_norm_t"] == "per_row_6"  # the named config
    assert (config["trainer"]["max_epochs"], config["lr"]) == (3, 0.5)  # updates win, dotted or nested
    assert config["models"]["net"]["arch"] == "passt_mini" and config["num_workers"] == 0  # the demo preset


@pytest.mark.slow
def test_train_writes_the_command_lines_files_and_returns_results_json(in_tmp, demo_cache, frito, monkeypatch):
    started = []
    monkeypatch.setattr(Run, "__call__", lambda *args, **kwargs: started.append(args))
    results = api.train("nsynth", updates=SHORT, named_configs=["cpu_tiny"], run_dir=in_tmp / "notebook")
    assert started == []  # no Sacred run was started
    run_dir = in_tmp / "notebook"
    assert results == json.loads((run_dir / "results.json").read_text())
    assert results["model_selection"] == "validation" and 0 <= results["test"]["net"]["selected"]["acc"] <= 1
    config = json.loads((run_dir / "config.json").read_text())
    assert config["trainer"]["max_epochs"] == 1 and config["models"]["net"]["arch"] == "passt_mini"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["val/acc"]["steps"] == [1] and metrics["test/acc"]["values"][0] == pytest.approx(
        results["test"]["net"]["last"]["acc"])
    # the same training from the command line leaves the same files (-F adds Sacred's own)
    frito("ex_nsynth.py", "-F", "runs", "with", "cpu_tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
          "trainer.limit_val_batches=2", "seed=3", cwd=in_tmp)
    command_line = in_tmp / "runs" / "1"
    sacred_files = {"config.json", "metrics.json", "run.json", "cout.txt", "info.json"}
    assert files(run_dir) == files(command_line) - sacred_files | {"config.json", "metrics.json"}
    assert json.loads((command_line / "results.json").read_text()) == results  # seeded alike

    figures = api.evaluate("nsynth", run_dir / "checkpoints" / "best.ckpt", updates=SHORT,  # the same test batches
                           out_dir=in_tmp / "evaluation")
    assert figures["checkpoint/net/acc"] == pytest.approx(results["test"]["net"]["selected"]["acc"])
    assert (in_tmp / "evaluation" / "test_checkpoint_net_domains.csv").is_file()


def files(folder):
    return {str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file()}
