"""Unknown config keys and values components reject are caught before any work."""

import copy

import pytest

from datasets import dcase20, nsynth
from errors import ConfigurationError, UserError
from helpers.augment.registry import config_defaults
from helpers.experiment.config_check import Section, check_keys, check_values, closest, keywords_of
from helpers.training.fit import model_spec


def build(size: int = 1, *, rate: int = 16000, depth: int = 2):
    """A stand-in component: its keywords become a Section."""


SECTIONS = Section(
    {
        "lr": None,
        "models": Section({"net": Section(keywords_of(build), "keywords of build")}, "net"),
        "trainer": Section(dict.fromkeys(["max_epochs", "max_steps", "devices"]), "Trainer keywords"),
    },
    "top-level keys",
)
GOOD = {"lr": 0.1, "seed": 3, "models": {"net": {"size": 2, "rate": 8000}}, "trainer": {"max_epochs": 1}}


def test_keywords_of_a_function():
    assert set(keywords_of(build)) == {"size", "rate", "depth"}


def test_the_valid_config_passes_and_the_same_with_one_key_more_does_not():
    check_keys(GOOD, SECTIONS)
    with pytest.raises(ConfigurationError, match="'models.net.width'"):
        check_keys({**GOOD, "models": {"net": {**GOOD["models"]["net"], "width": 3}}}, SECTIONS)


@pytest.mark.parametrize(
    "path, bad_key, suggestion",
    [
        (("models", "net"), "sizee", "models.net.size"),
        (("trainer",), "max_epoch", "trainer.max_epochs"),
        ((), "lrr", "lr"),
    ],
)
def test_unknown_key_names_the_closest_valid_one(path, bad_key, suggestion):
    config = copy.deepcopy(GOOD)
    section = config
    for part in path:
        section = section[part]
    section[bad_key] = 1
    where = ".".join([*path, bad_key])
    with pytest.raises(ConfigurationError) as error:
        check_keys(config, SECTIONS)
    message = str(error.value)
    assert f"Unknown config key '{where}'" in message
    assert f"Did you mean {suggestion}?" in message


def test_every_unknown_key_is_reported():
    config = copy.deepcopy(GOOD)
    config["trainer"]["max_epoch"] = 1
    config["models"]["net"]["zzz"] = 1
    with pytest.raises(ConfigurationError) as error:
        check_keys(config, SECTIONS)
    assert "trainer.max_epoch" in str(error.value) and "models.net.zzz" in str(error.value)
    assert "zzz'." in str(error.value)  # nothing close: no suggestion, the valid keys are listed
    assert "depth, rate, size" in str(error.value)


def test_a_section_must_be_a_dict():
    with pytest.raises(ConfigurationError, match="models.net must be a dict"):
        check_keys({**GOOD, "models": {"net": 5}}, SECTIONS)


def test_a_configuration_error_is_the_users_to_fix_and_a_value_error():
    error = ConfigurationError("x")
    assert isinstance(error, UserError) and isinstance(error, ValueError)


def test_closest():
    assert closest("rf_norm_tt", ["rf_norm_t", "arch"]) == "rf_norm_t"
    assert closest("qqq", ["rf_norm_t", "arch"]) is None


def valid_values():
    """A valid config: every DG method's defaults (whatever the registry holds), the values below over them."""
    mel = dict(n_mels=128, sr=32000, win_length=800, hopsize=320, n_fft=1024, htk=False,
               fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000)
    return {
        **config_defaults(),
        "models": {"net": {"arch": "passt_mini", "rf_norm_t": "row_overlap_8", "input_fdim": 128, "input_tdim": 100},
                   "mel": mel},
        "basedataset": {"sample_rate": 32000, "clip_length": 1.0, "base_dir": None},
        "schedule_mode": "exp_lin", "warm_up_len": 1, "ramp_down_start": 2, "ramp_down_len": 2, "last_lr_value": 0.1,
        "model_selection": "validation",
        **config_defaults(),  # every DG method's keys (helpers.augment.registry)
        "mixup_p": 1.0,
    }


def test_valid_values_pass_and_the_derived_ones_follow_the_front_end_and_clip():
    config = valid_values()
    check_values(config, nsynth)
    # 1 s at 32 kHz, hop 320: (32000 - 1) // 320 + 1 = 100 frames; passt_mini's strides are 10
    assert model_spec(nsynth, config).derived() == {
        "basedataset.clip_length": 1.0, "models.mel.sr": 32000, "models.net.input_fdim": 128,
        "models.net.input_tdim": 100, "models.net.fstride": 10, "models.net.tstride": 10}


def test_clip_length_none_is_the_datasets_own_length():
    config = valid_values()
    config["basedataset"].update(clip_length=None, base_dir="/data/tau2020")
    config["models"]["net"].update(input_tdim=None)
    # TAU 2020 clips are 10 s: (10 * 32000 - 1) // 320 + 1 = 1000 frames
    assert model_spec(dcase20, config).derived()["models.net.input_tdim"] == 1000
    config["basedataset"].update(base_dir=None)  # the demo data's 2 s clips
    assert model_spec(dcase20, config).derived()["models.net.input_tdim"] == 200


def test_malformed_rf_norm_t_lists_the_forms():
    config = valid_values()
    config["models"]["net"]["rf_norm_t"] = "row_overlapp_8"
    with pytest.raises(ConfigurationError, match="models.net.rf_norm_t") as error:
        check_values(config, nsynth)
    assert "per_row" in str(error.value) and "high_low" in str(error.value)
    assert isinstance(error.value.__cause__, ValueError)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda c: c["models"]["net"].update(arch="passt_minii"), "Did you mean 'passt_mini'"),
        (lambda c: c["models"]["mel"].update(n_fft=1023), "models.mel"),
        (lambda c: c.update(schedule_mode="cos"), "schedule"),
        (lambda c: c["models"]["net"].update(input_fdim=64), "input_fdim=64 differs from models.mel.n_mels=128"),
        (lambda c: c["basedataset"].update(sample_rate=16000), "models.mel.sr=32000 differs"),
        (lambda c: c.update(freq_mixstyle_p=1.5), "freq_mixstyle_p=1.5"),
        (lambda c: c.update(model_selection="test"), "model_selection='test'"),
        (lambda c: c.update(dir_p=0.6), "dir_p=0.6 needs dir_folder"),
        (lambda c: c["basedataset"].update(clip_length=0), "clip_length=0"),
        # 1 s at 32 kHz, hop 320: (32000 - 1) // 320 + 1 = 100 frames
        (lambda c: c["models"]["net"].update(input_tdim=99), "shorter than the 100 frames"),
    ],
)
def test_bad_values_are_named(change, message):
    config = valid_values()
    change(config)
    with pytest.raises(ConfigurationError, match=message):
        check_values(config, nsynth)
