"""The experiments' commands run in-process on the demo data with the tiny preset (one short epoch)."""

import csv
import logging
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import numpy as np
import pytest
import soundfile
import torch
from test_user_errors import frito_checkpoint

from datasets import dcase20, folder, nsynth
from errors import ConfigurationError, UserError
from helpers.api import resolved_config
from helpers.checkpoint import read_checkpoint
from helpers.experiment.commands import check_demo
from helpers.training.fit import model_spec, trained_seen_domains
from models.preprocess import AugmentMelSTFT, clip_frames

QUICK = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 3, "enable_progress_bar": False,
         "enable_model_summary": False, "num_sanity_val_steps": 0}


@pytest.fixture(params=["ex_dcase20", "ex_nsynth", "ex_esc50"])
def experiment(request, load_experiment):
    return load_experiment(request.param)


def run(ex, command, cache_dir, named_configs=(), **updates):
    updates.setdefault("basedataset", {})["cache_dir"] = str(cache_dir)
    return ex.run(command, config_updates=updates, named_configs=named_configs, options={"--capture": "sys"})


def test_print_config_shows_the_derived_input_length_and_strides(experiment, cache_dir, capsys):
    config = run(experiment, "print_config", cache_dir).config
    # demo preset: 2 s clips at 32 kHz, hop 320 -> (64000 - 1) // 320 + 1 = 200 frames
    assert "input_tdim" not in config["models"]["net"] and "sr" not in config["models"]["mel"]
    assert config["models"]["net"]["arch"] == "passt_mini"
    out = capsys.readouterr().out
    assert "models.net.input_tdim = 200" in out and "models.mel.sr = 32000" in out
    assert "models.net.fstride = 10" in out
    config = run(experiment, "print_config", cache_dir, basedataset={"base_dir": "/data/x", "clip_length": 10.0},
                 models={"net": {"arch": "passt_s_p16_s16_128_ap468"}}).config
    assert config["models"]["net"]["fstride"] is None  # the arch's own
    out = capsys.readouterr().out
    assert "models.net.input_tdim = 1000" in out and "models.net.tstride = 16" in out


def test_demo_preset_without_base_dir_and_command_line_values_win(experiment, cache_dir):
    demo = run(experiment, "print_config", cache_dir).config
    assert (demo["lr"], demo["batch_size"], demo["num_workers"], demo["trainer"]["max_epochs"]) == (1e-3, 16, 0, 20)
    assert demo["basedataset"]["clip_length"] == 2.0 and derived(experiment, demo)["models.mel.sr"] == 32000
    mine = run(experiment, "print_config", cache_dir, lr=0.5, trainer={"max_epochs": 3}, batch_size=4,
               models={"net": {"arch": "passt_tiny"}}, basedataset={"clip_length": 1.0, "sample_rate": 16000}).config
    assert (mine["lr"], mine["batch_size"], mine["trainer"]["max_epochs"]) == (0.5, 4, 3)
    assert mine["models"]["net"]["arch"] == "passt_tiny" and derived(experiment, mine)["models.mel.sr"] == 16000
    assert derived(experiment, mine)["models.net.input_tdim"] == 50  # 1 s at 16 kHz: (16000 - 1) // 320 + 1
    assert mine["trainer"]["devices"] == 1 and mine["swa_epoch_start"] == 14  # untouched defaults stay


@pytest.mark.parametrize(
    "package, command, notice",
    [(dcase20, "main", True), (nsynth, "print_config", True), (nsynth, "test_loaders", True),
     (dcase20, "predict", False), (nsynth, "export", False), (folder, "print_config", False),
     (folder, "predict", False)],
)  # fmt: skip
def test_demo_notice_only_where_demo_data_and_the_configured_model_are_used(package, command, notice, caplog):
    caplog.set_level(logging.INFO, logger="run")
    check_demo(package, command, logging.getLogger("run"))
    assert ("bundled demo data" in caplog.text) is notice


@pytest.mark.parametrize("command", ["main", "evaluate_only", "test_loaders", "prepare", "model_speed_test"])
def test_without_demo_data_commands_reading_the_data_need_base_dir(command):
    with pytest.raises(ConfigurationError, match=f"{command}: basedataset.base_dir is required, the folder dataset"):
        check_demo(folder, command, logging.getLogger("run"))


TAU_LIKE = SimpleNamespace(domain_names=["a", "b", "c", "s1"], seen_domains=["a", "b", "c"], domain_kind="device")


def test_seen_domains_come_from_the_checkpoint_and_a_disagreeing_config_is_logged(caplog):
    caplog.set_level(logging.INFO, logger="helpers.training.fit")
    assert trained_seen_domains({"seen_domains": ["a"]}, TAU_LIKE, Path("x.ckpt")) == ["a"]
    assert "x.ckpt was trained on the devices ['a'], the configured basedataset.train_domains give ['a', 'b', 'c']" \
        in caplog.text
    caplog.clear()
    assert trained_seen_domains({"seen_domains": ["a", "b", "c"]}, TAU_LIKE, Path("x.ckpt")) == ["a", "b", "c"]
    assert "WARNING" not in caplog.text and "seen devices (as trained): ['a', 'b', 'c']" in caplog.text


def test_seen_domains_the_data_lacks_are_refused():
    with pytest.raises(ConfigurationError, match=r"trained on the devices \['a', 's9'\].*has no \['s9'\]"):
        trained_seen_domains({"seen_domains": ["a", "s9"]}, TAU_LIKE, Path("x.ckpt"))


def test_print_config_shows_the_comment_of_every_dataset_setting(experiment, cache_dir, capsys):
    run(experiment, "print_config", cache_dir)
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    section = out[out.index("  basedataset:"):out.index("  models:")].splitlines()[1:]
    entries = dict(re.fullmatch(r"    (\w+) = .*?(?:# (.*))?", line).groups() for line in section)
    assert None not in entries.values(), entries
    # a key every dataset shares (datasets/base.py), and the dataset's own comment where it states one
    assert entries["train_fraction"] == ("share of each (label, domain) group of training clips trained on (nested "
                                         "subsets)")
    # the dataset's own clip length (NSynth's 4 s notes, TAU's 10 s, ESC-50's 5 s), not the shared "its own length"
    assert re.match(r"seconds per item; None: \d+\.\d", entries["clip_length"])


def test_print_config_shows_the_reproducibility_settings(experiment, cache_dir, capsys):
    config = run(experiment, "print_config", cache_dir).config
    assert config["trainer"]["deterministic"] is False and config["trainer"]["benchmark"] is False
    out = capsys.readouterr().out
    assert "deterministic = False" in out and "benchmark = False" in out
    config = run(experiment, "print_config", cache_dir, trainer={"deterministic": True, "benchmark": True}).config
    assert config["trainer"]["deterministic"] is True and config["trainer"]["benchmark"] is True


@pytest.mark.parametrize("clip_length, sample_rate, hopsize", [(2.0, 32000, 320), (4.0, 32000, 320), (0.99, 16000, 99)])
def test_derived_input_length_is_the_front_ends_frame_count(clip_length, sample_rate, hopsize):
    mel = AugmentMelSTFT(sr=sample_rate, hopsize=hopsize, fmax_aug_range=1000).eval()
    frames = mel(torch.zeros(1, round(clip_length * sample_rate))).shape[-1]
    assert clip_frames(clip_length, sample_rate, hopsize) == frames


def test_named_configs_show_their_docstrings(experiment, cache_dir, capsys):
    run(experiment, "print_named_configs", cache_dir)
    out = capsys.readouterr().out
    for name in ("mixup", "nomixup", "mini_train", "cpu_tiny", "swa", "no_swa", "frito_row_overlap_8", "passt_s_ap476"):
        assert name in out
    assert "A small transformer (passt_mini)" in out


def test_named_config_values_apply_and_command_line_wins(experiment, cache_dir):
    config = run(experiment, "print_config", cache_dir, ("frito_high_low", "nomixup"), use_mixup=True).config
    assert config["models"]["net"]["rf_norm_t"] == "high_low"
    assert config["use_mixup"] is True


def test_help_and_dependencies(experiment, cache_dir, capsys):
    with pytest.raises(SystemExit):
        experiment.run_commandline(["ex.py", "help"])
    out = capsys.readouterr().out
    for command in ("main", "evaluate_only", "test_loaders", "model_speed_test", "plot_attention_mask", "prepare",
                    "predict", "export"):
        assert command in out
    run(experiment, "print_dependencies", cache_dir)
    assert "torch" in capsys.readouterr().out


@pytest.mark.parametrize(
    "updates, message",
    [
        ({"models": {"net": {"rf_norm_tt": "row_overlap_8"}}}, "Did you mean models.net.rf_norm_t?"),
        ({"trainer": {"max_epoch": 3}}, "Did you mean trainer.max_epochs?"),
        ({"models": {"mel": {"hop_size": 160}}}, "Did you mean models.mel.hopsize?"),
        ({"basedataset": {"base_dirr": "/x"}}, "Did you mean basedataset.base_dir?"),
        ({"lrr": 0.1}, "Did you mean lr?"),
        ({"models": {"net": {"rf_norm_t": "per_rows_6"}}}, "models.net.rf_norm_t: Unknown rf_norm_t 'per_rows_6'"),
        ({"models": {"net": {"arch": "passt_tinyy"}}}, "Did you mean 'passt_tiny'"),
    ],
)
def test_configuration_errors_stop_before_any_work(experiment, cache_dir, in_tmp, updates, message):
    with pytest.raises(UserError, match=message):
        run(experiment, "main", cache_dir, **updates)
    assert list(in_tmp.iterdir()) == []  # no run folder, nothing written


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "needs a checkpoint"),
        (b"not a checkpoint", "not a readable checkpoint"),
        ({"state_dict": {}}, "no 'frito' entry"),
    ],
)
def test_evaluate_only_refuses_a_missing_or_foreign_checkpoint(experiment, cache_dir, in_tmp, content, message):
    """Refused with a message (a UserError is printed without a traceback)."""
    checkpoint = None
    if content is not None:
        checkpoint = str(in_tmp / "model.ckpt")
        if isinstance(content, bytes):
            Path(checkpoint).write_bytes(content)
        else:
            torch.save(content, checkpoint)
    with pytest.raises(UserError, match=message):
        run(experiment, "evaluate_only", cache_dir, checkpoint=checkpoint)


def test_test_loaders_summarises_one_batch_each(experiment, cache_dir, capsys):
    run(experiment, "test_loaders", cache_dir)
    out = capsys.readouterr().out
    assert "train:" in out and "validation:" in out and "test:" in out
    assert "waveform     float32 (16, 64000)" in out  # batch of 16 clips of 2 s at 32 kHz
    assert "label" in out and "domain" in out


def test_model_speed_test(experiment, cache_dir, capsys):
    result = run(experiment, "model_speed_test", cache_dir, speed_test_batch_size=2, speed_test_steps=1).result
    assert result["spectrograms_per_second"] > 0
    assert "spectrograms/s" in capsys.readouterr().out


def test_plot_attention_mask(experiment, cache_dir, in_tmp):
    path = in_tmp / "mask.png"
    result = run(experiment, "plot_attention_mask", cache_dir, plot_path=str(path),
                 models={"net": {"rf_norm_t": "row_overlap_8"}}).result
    assert Path(result) == path
    assert matplotlib.image.imread(path).shape[2] == 4
    run(experiment, "plot_attention_mask", cache_dir)  # default: attention_mask_<form>.png here, no run folder
    assert len(list(in_tmp.glob("attention_mask_*.png"))) == 1 and not (in_tmp / "runs").exists()


def test_prepare_builds_the_caches(experiment, cache_dir):
    run(experiment, "prepare", cache_dir)
    assert list(cache_dir.glob("*/*.h5"))


@pytest.mark.slow
def test_same_seed_same_metrics(experiment, cache_dir, in_tmp):
    first = run(experiment, "main", cache_dir, seed=11, trainer=dict(QUICK)).result
    second = run(experiment, "main", cache_dir, seed=11, trainer=dict(QUICK)).result
    assert first and first == second
    assert {"selected/net/acc", "last/net/macro_acc", "last/net/loss"} <= set(first)
    has_domains = sys.modules[f"ex_{experiment.path}"].DATASET.Data.domain_kind is not None
    assert ({"selected/net/acc_seen", "selected/net/acc_unseen"} <= set(first)) == has_domains


@pytest.mark.slow
def test_a_trained_run_predicts_a_folder_and_exports(cache_dir, in_tmp, capsys, load_experiment):
    ex = load_experiment("ex_nsynth")
    run(ex, "main", cache_dir, trainer=dict(QUICK))
    checkpoint = next(in_tmp.glob("runs/*/checkpoints/last.ckpt"))
    assert read_checkpoint(checkpoint).dataset == "nsynth"
    audio = in_tmp / "audio"
    audio.mkdir()
    rng = np.random.default_rng(0)
    soundfile.write(audio / "stereo_44k.wav", rng.uniform(-0.5, 0.5, (44100, 2)), 44100)
    soundfile.write(audio / "short.flac", rng.uniform(-0.5, 0.5, 8000), 16000)
    (audio / "broken.wav").write_bytes(b"RIFF not really audio")
    csv_path = in_tmp / "predictions.csv"
    result = run(ex, "predict", cache_dir, checkpoint=str(checkpoint), files=str(audio), top_k=3,
                 predictions_csv=str(csv_path)).result
    assert result["classified"] == 2 and result["skipped"] == 1
    listed = list(csv.DictReader(csv_path.open()))
    rows = [row for row in listed if not row["skipped"]]
    assert sorted(Path(row["file"]).name for row in rows) == ["short.flac", "stereo_44k.wav"]
    (skipped,) = [row for row in listed if row["skipped"]]  # listed last, with the reason
    assert listed[-1] is skipped and Path(skipped["file"]).name == "broken.wav" and "not readable" in skipped["skipped"]
    class_columns = [key for key in rows[0] if not key.startswith("top_") and key not in ("file", "skipped")]
    assert len(class_columns) == 10
    for row in rows:
        assert abs(sum(float(row[name]) for name in class_columns) - 1) < 1e-4
    assert "broken.wav" in capsys.readouterr().out
    written = run(ex, "export", cache_dir, checkpoint=str(checkpoint), export_dir=str(in_tmp / "export"),
                  export_formats=["torchscript"]).result
    assert Path(written["torchscript"]).stat().st_size > 0


def derived(experiment, config) -> dict:
    """The values the experiment's model spec derives from ``config`` (what print_config lists)."""
    return model_spec(sys.modules[f"ex_{experiment.path}"].DATASET, config).derived()


@pytest.mark.parametrize("named_configs, updates, advice", [
    (["cpu_tiny"], {"trainer.max_epochs": 1},
     "set warm_up_len below 1 (0: no warm-up) and ramp_down_start (now 8) below it, or raise trainer.max_epochs"),
    ([], {"basedataset.base_dir": "/data/nsynth", "trainer.max_epochs": 5},
     "set warm_up_len below 5 (0: no warm-up) and ramp_down_start (now 250) below it, or raise trainer.max_epochs, "
     "or use the named config cpu_tiny (its schedule warms up in 2 epochs)"),
    ([], {"trainer.max_epochs": 5}, None),  # the demo preset's 2 warm-up epochs fit
])  # fmt: skip
def test_a_warm_up_longer_than_the_training_is_warned_of_with_the_changes_that_fit(named_configs, updates, advice,
                                                                                    caplog):
    caplog.set_level(logging.WARNING)
    resolved_config("nsynth", "main", updates, named_configs)
    warnings = [record.getMessage() for record in caplog.records if "warm_up_len=" in record.getMessage()]
    if advice is None:
        assert warnings == []
    else:
        assert len(warnings) == 1 and warnings[0].endswith("the training ends before the learning rate warms up "
                                                           f"fully; {advice}"), warnings


@pytest.mark.parametrize("trained_on, notice", [("nsynth", True), ("dcase20", False)])
def test_predict_says_when_the_checkpoint_was_trained_on_another_dataset(trained_on, notice, cache_dir, in_tmp, capsys,
                                                                         load_experiment):
    checkpoint = frito_checkpoint(in_tmp / "best.ckpt", dataset=trained_on)
    soundfile.write(in_tmp / "clip.wav", np.zeros(32000), 32000)
    run(load_experiment("ex_dcase20"), "predict", cache_dir, checkpoint=str(checkpoint), files=str(in_tmp / "clip.wav"),
        predictions_csv=str(in_tmp / "predictions.csv"))
    line = f"{checkpoint} was trained on the nsynth dataset, not dcase20: its 2 labels are used (high, low)"
    assert (line in capsys.readouterr().out.splitlines()) is notice


PASST_S_RELEASE = "passt-s-f128-p16-s10-ap.476-swa.pt"  # the default arch's AudioSet weights, as published


def test_your_own_data_fine_tunes_from_the_audioset_weights_when_they_are_on_this_machine(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    mine = {"basedataset.base_dir": str(tmp_path)}
    assert resolved_config("folder", "print_config", mine, ())[1]["models"]["net"]["pretrained"] is False
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    (tmp_path / "torch" / "hub" / "checkpoints" / PASST_S_RELEASE).write_bytes(b"")
    assert resolved_config("folder", "print_config", mine, ())[1]["models"]["net"]["pretrained"] is True
    given = resolved_config("folder", "print_config", {**mine, "models.net.pretrained": False}, ())[1]
    assert given["models"]["net"]["pretrained"] is False  # the command line wins


@pytest.mark.parametrize("named_configs, updates, cached, warned", [
    ([], {}, False, True),
    ([], {}, True, False),  # fine-tuning
    ([], {"lr": 1e-4}, False, False),  # a rate for training from scratch
    (["cpu_tiny"], {}, False, False),  # a small network without published weights
])  # fmt: skip
def test_a_large_network_from_scratch_at_a_fine_tuning_rate_is_warned_of_before_training(
        named_configs, updates, cached, warned, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    if cached:
        (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
        (tmp_path / "torch" / "hub" / "checkpoints" / PASST_S_RELEASE).write_bytes(b"")
    caplog.set_level(logging.WARNING)
    resolved_config("folder", "main", {"basedataset.base_dir": str(tmp_path), **updates}, named_configs)
    warnings = [record.getMessage() for record in caplog.records if "trains from scratch" in record.getMessage()]
    assert len(warnings) == warned
    if warned:  # PaSST-S: 12 blocks of width 768; ex_folder.py's lr 1e-5
        assert warnings[0].startswith("models.net.pretrained=False: passt_s_swa_p16_128_ap476 (12 transformer blocks "
                                      "of width 768) trains from scratch at lr=1e-05, a rate for fine-tuning")
        assert "set models.net.pretrained=True" in warnings[0] and "lr=0.0001 or more" in warnings[0]
        assert "cpu_tiny" in warnings[0]
