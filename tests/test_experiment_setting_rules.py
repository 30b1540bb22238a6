"""Every setting's value is checked against its rule before any data is read: a bad one stops the command with a
message naming key, value and fix, all bad ones at once, and nothing written."""

import math

import pytest
from sacred.utils import iterate_flattened

from errors import UserError
from helpers.api import experiment_module, resolved_config
from helpers.augment.registry import config_defaults
from helpers.experiment.config_check import experiment_defaults
from helpers.experiment.setting_rules import SETTING_RULES, refused_settings
from helpers.setting_kinds import BOOLEAN, number_in, one_of, optional, whole_number

EXPERIMENTS = ("dcase20", "nsynth", "folder")
# A value each setting must refuse, chosen by hand from what the setting means.
BAD_VALUES = {
    "lr": -0.001, "weight_decay": -1e-4, "batch_size": 0, "num_workers": -1, "schedule_mode": "cosine",
    "warm_up_len": 2.5, "ramp_down_start": -1, "ramp_down_len": "10", "last_lr_value": 1.5,
    "model_selection": "test", "swa": "yes", "swa_epoch_start": -2, "swa_freq": 0, "seed": 1.5,
    "executor_costs": 3, "progress_every_batches": 0, "progress_every_seconds": -1,
    "checkpoint": 3, "plot_path": 1, "speed_test_batch_size": 0, "speed_test_steps": 0, "files": [],
    "top_k": 0, "weights": "best", "predictions_csv": True, "hop_fraction": 2, "export_dir": 2,
    "export_formats": ["tflite"],
    "export_seconds": 0, "resume": 1,
    "models.net.arch": "passt_s", "models.net.pretrained": 1, "models.net.pretrained_path": 5,
    "models.net.pretrained_source": "audiosett", "models.net.pretrained_weights": "average",
    "models.net.n_classes": 0, "models.net.in_channels": 0, "models.net.fstride": 0, "models.net.tstride": -10,
    "models.net.input_fdim": 0, "models.net.input_tdim": 99.5, "models.net.u_patchout": -1,
    "models.net.s_patchout_t": 1.5, "models.net.s_patchout_f": -3, "models.net.rf_norm_t": None,
    "models.net.attention_impl": "sparce",
    "models.mel.n_mels": 0, "models.mel.sr": -32000, "models.mel.win_length": 0, "models.mel.hopsize": 320.5,
    "models.mel.n_fft": 0, "models.mel.htk": True, "models.mel.fmin": -50.0, "models.mel.fmax": 0,
    "models.mel.norm": "slaney", "models.mel.fmin_aug_range": -10, "models.mel.fmax_aug_range": 2000.5,
    "basedataset.base_dir": 7, "basedataset.cache_dir": 7, "basedataset.sample_rate": 0,
    "basedataset.clip_length": -1.0, "basedataset.cache_format": "mel", "basedataset.audio_dtype": "int8",
    "basedataset.resample_quality": "LQ", "basedataset.skip_bad_files": "no", "basedataset.train_domains": [],
    "basedataset.drop_untrained_classes": 0, "basedataset.train_fraction": 0.0, "basedataset.subset_seed": "a",
    "basedataset.prepare_workers": -1, "basedataset.train_split": 1, "basedataset.validation_split": None,
    "basedataset.test_split": ["nsynth-test"], "basedataset.families": "bass", "basedataset.csv": 0,
    "basedataset.validation_fraction": 1.0, "basedataset.test_fraction": -0.2, "basedataset.split_seed": 0.5,
    "basedataset.fold": "1",
    "trainer.max_epochs": 0, "trainer.devices": 0, "trainer.deterministic": "yes", "trainer.benchmark": "fast",
    "trainer.use_tensorboard_logger": "true",
}


def defaults_of(experiment: str, base_dir: str | None = None) -> dict:
    return experiment_defaults(experiment_module(experiment).ex, base_dir)[0]


def experiment_with(key: str) -> str:
    """An experiment whose defaults have ``key`` (a dataset's own keys are in one or two of them); nsynth for the
    keys no defaults state (seed, input_fdim, ...)."""
    return next((name for name in EXPERIMENTS if key in dict(iterate_flattened(defaults_of(name)))), "nsynth")


def test_every_rule_has_a_bad_value_here():
    assert set(BAD_VALUES) == set(SETTING_RULES)


@pytest.mark.parametrize("key", list(SETTING_RULES))
def test_a_bad_value_of_each_setting_is_refused_naming_key_value_and_expectation(key):
    bad = BAD_VALUES[key]
    with pytest.raises(UserError) as refused:
        resolved_config(experiment_with(key), "print_config", {key: bad}, ())
    message = str(refused.value)
    assert f"{key}={bad!r}: expected {SETTING_RULES[key].expected}" in message, message
    assert "\n" not in message, message  # the one bad value, one line


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("base_dir", [None, "/data/mine"])
def test_every_setting_of_the_defaults_has_a_rule_and_the_defaults_pass_it(experiment, base_dir):
    defaults = defaults_of(experiment, base_dir)
    keys = {key for key, _ in iterate_flattened(defaults)} - {"__doc__"} - set(config_defaults())
    assert keys - set(SETTING_RULES) == set(), "a setting without a rule in helpers/experiment/setting_rules.py"
    assert refused_settings(defaults, defaults, {}) == []


def test_the_message_names_the_key_the_value_what_it_is_and_the_default_as_a_fix():
    with pytest.raises(UserError) as refused:
        resolved_config("nsynth", "main", {"lr": -0.001, "batch_size": 0, "models.net.attention_impl": "sparce"}, ())
    # the demo preset's defaults (no basedataset.base_dir): lr 1e-3, batch_size 16 (helpers/experiment/defaults.py)
    assert str(refused.value).splitlines() == [
        "lr=-0.001: expected a number > 0 (AdamW's base learning rate). Set lr to such a value, e.g. lr=0.001 "
        "(the default).",
        "batch_size=0: expected a whole number >= 1. Set batch_size to such a value, e.g. batch_size=16 (the "
        "default).",
        "models.net.attention_impl='sparce': expected one of 'auto', 'sparse', 'masked', 'flex'. Did you mean "
        "'sparse'? Set models.net.attention_impl to such a value, e.g. models.net.attention_impl='auto' (the "
        "default).",
    ]


def test_the_fix_is_the_default_for_the_runs_dataset_folder():
    # NSynth's own defaults apply with a dataset folder: batch 8, not the demo preset's 16 (ex_nsynth.py)
    with pytest.raises(UserError, match=r"e\.g\. batch_size=8 \(the default\)"):
        resolved_config("nsynth", "print_config", {"batch_size": 0, "basedataset.base_dir": "/data/nsynth"}, ())


def test_a_dataset_setting_is_explained_by_its_comment():
    with pytest.raises(UserError, match=r"basedataset.train_fraction=0.0: expected a number in \(0, 1\] \(share of "
                                        r"each \(label, domain\) group"):
        resolved_config("dcase20", "print_config", {"basedataset.train_fraction": 0.0}, ())


@pytest.mark.parametrize("kind, accepted, refused", [
    (number_in(0, 1, low_included=False), [1e-9, 0.5, 1, 1.0], [0, -0.1, 1.0001, math.nan, math.inf, True, "0.5"]),
    (number_in(0, math.inf), [0, 3, 1e9], [-1e-12, math.inf, None]),
    (whole_number(1), [1, 64], [0, 1.0, True, "2", None]),
    (one_of(("exp_lin",)), ["exp_lin"], ["exp", None, 1]),
    (one_of((False,)), [False], [0, None, True]),
    (one_of((1,)), [1, 1.0], [True, "1"]),
    (optional(whole_number(1), "the arch's own"), [None, 10], [0, 2.5]),
    (BOOLEAN, [True, False], [0, 1, "True", None]),
])  # fmt: skip
def test_kinds_accept_and_refuse(kind, accepted, refused):
    assert [kind.accepts(value) for value in accepted] == [True] * len(accepted)
    assert [kind.accepts(value) for value in refused] == [False] * len(refused)


def test_refused_settings_through_the_command_line_stop_before_any_run_folder_or_cache(frito, tmp_path):
    cache = tmp_path / "cache"
    work = tmp_path / "work"
    work.mkdir()
    result = frito("ex_nsynth.py", "with", "lr=-0.001", "batch_size=0", cwd=work, check=False,
                   env={"FRITO_CACHE_DIR": str(cache)})
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert "lr=-0.001: expected a number > 0" in output and "batch_size=0: expected a whole number >= 1" in output
    assert list(work.iterdir()) == [] and not cache.exists()
