"""The registry of DG methods: its order, the declarations every method makes, what derives from them, and a
seeded training batch through the interface against the order the training step used to write by hand."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from errors import ConfigurationError
from helpers.augment.freq_mixstyle import FreqMixStyle
from helpers.augment.method import Place, RunContext
from helpers.augment.mixup import mixed_cross_entropy, mixup
from helpers.augment.places import TrainingMethods
from helpers.augment.registry import (
    METHODS,
    active_settings,
    build_methods,
    check_settings,
    config_defaults,
    config_docs,
    named_configs,
    renamed_keys,
    switched_strengths,
)
from helpers.experiment.config_check import Section, check_keys

CONTEXT = RunContext(sample_rate=32000, dataset={}, domain_names=["a", "b"], seen_domains=["a"], domain_kind="device",
                     embedding_size=8)


def config(**changes):
    return {**config_defaults(), "basedataset": {"cache_format": "waveform"}, **changes}


def test_the_registry_order_is_the_order_of_application():
    assert list(METHODS) == ["specaugment", "freq_mixstyle", "mixup", "dir", "freq_centering", "rfn", "dann"]
    assert [METHODS[name].place for name in METHODS] == [Place.SPECTROGRAM, Place.SPECTROGRAM, Place.BATCH,
                                                         Place.WAVEFORM, Place.INPUT, Place.INPUT, Place.LOSS]


@pytest.mark.parametrize("name", list(METHODS))
def test_every_method_declares_prefixed_keys_with_accepted_defaults_and_docs(name):
    method = METHODS[name]
    assert method.name == name and method.strength in method.settings
    for setting_name, setting in method.settings.items():
        key = f"{name}_{setting_name}"
        assert setting.kind.accepts(setting.default), key
        assert config_defaults()[key] == setting.default and config_docs()[key] == setting.doc and setting.doc
    for named, (doc, updates) in method.named_configs.items():
        assert named in named_configs() and doc
        assert set(updates) <= set(config_defaults())


def test_today_s_keys_and_defaults():
    assert config_defaults() == {
        "specaugment_p": 1.0, "specaugment_freqm": 48, "specaugment_timem": 80,
        "freq_mixstyle_p": 0.0, "freq_mixstyle_alpha": 0.3,
        "mixup_p": 0.0, "mixup_alpha": 0.3, "use_mixup": None,
        "dir_p": 0.0, "dir_folder": None, "dir_domains": None,
        "freq_centering_weight": 0.0, "freq_centering_scale": False,
        "rfn_weight": 0.0, "rfn_lam": 0.5,
        "dann_weight": 0.0, "dann_width": 256, "dann_depth": 3, "dann_dropout": 0.0,
    }
    assert renamed_keys() == {"models.mel.freqm": "specaugment_freqm", "models.mel.timem": "specaugment_timem"}


def test_only_methods_with_a_positive_strength_are_active():
    assert active_settings(config()) == {"specaugment": {"p": 1.0, "freqm": 48, "timem": 80}}
    assert list(active_settings(config(mixup_p=1.0, freq_mixstyle_p=0.4, specaugment_p=0.0))) == [
        "freq_mixstyle", "mixup"]


def test_use_mixup_is_the_switch_of_mixup_p():
    assert switched_strengths(config(use_mixup=True)) == {"mixup_p": 1.0}
    assert switched_strengths(config(use_mixup=False)) == {"mixup_p": 0.0}
    assert switched_strengths(config()) == {}
    check_settings(config(use_mixup=True, mixup_p=0.5))
    with pytest.raises(ConfigurationError, match="use_mixup=False contradicts mixup_p=0.5"):
        check_settings(config(use_mixup=False, mixup_p=0.5))


@pytest.mark.parametrize("change, message", [
    (dict(freq_mixstyle_p=1.5), r"freq_mixstyle_p=1.5: expected a probability in \[0, 1\]"),
    (dict(mixup_alpha=0), "mixup_alpha=0: expected a number > 0"),
    (dict(specaugment_timem=2.5), "specaugment_timem=2.5: expected a whole number >= 0"),
    (dict(dir_domains="a"), "dir_domains='a': expected a non-empty list of names"),
    (dict(dir_p=0.6), "dir_p=0.6 needs dir_folder"),
    (dict(dir_p=0.6, dir_folder="/irs", basedataset={"cache_format": "spectrogram"}), "cache_format='spectrogram'"),
])
def test_bad_settings_are_named_with_the_fix(change, message):
    with pytest.raises(ConfigurationError, match=message):
        check_settings(config(**change))


@pytest.mark.parametrize("old, new", [("freqm", "specaugment_freqm"), ("timem", "specaugment_timem")])
def test_the_old_mask_keys_are_refused_naming_the_new_key(old, new):
    section = Section({"models": Section({"mel": Section({"n_mels": None})})})
    with pytest.raises(ConfigurationError, match=f"'models.mel.{old}' was renamed to {new}: write {new}=12"):
        check_keys({"models": {"mel": {"n_mels": 128, old: 12}}}, section)


def masked_before_normalisation(spectrogram, freqm, timem):
    """The front-end's masks as frito applied them before: per example a band of rows, then of frames, set to
    log-mel 0, i.e. (0 + 4.5) / 5 after the normalisation; spectrogram (batch, 1, n_mels, frames)."""
    masked = torch.zeros_like(spectrogram, dtype=torch.bool)
    for dim, max_width in ((2, freqm), (3, timem)):
        batch, size = spectrogram.shape[0], spectrogram.shape[dim]
        width = (torch.rand(batch) * min(max_width, size)).long()
        start = (torch.rand(batch) * (size - width)).long()
        for example in range(batch):
            band = slice(int(start[example]), int(start[example] + width[example]))
            if dim == 2:
                masked[example, :, band, :] = True
            else:
                masked[example, :, :, band] = True
    return torch.where(masked, torch.tensor((0.0 + 4.5) / 5.0), spectrogram)


def test_a_seeded_batch_through_the_interface_equals_the_hand_written_order():
    """Masks (in the front-end), then Freq-MixStyle, then mixup with its mixed cross-entropy, as the training
    step wrote them, against the registry's methods built from the config keys."""
    spectrogram = torch.randn(8, 1, 32, 60)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    logits_of = torch.nn.Linear(32 * 60, 3)
    settings = config(freq_mixstyle_p=1.0, freq_mixstyle_alpha=0.4, mixup_p=1.0, mixup_alpha=0.3,
                      specaugment_freqm=10, specaugment_timem=20)

    torch.manual_seed(7)
    x = masked_before_normalisation(spectrogram.clone(), 10, 20)
    x = FreqMixStyle(1.0, 0.4)(x)
    x, permutation, lam = mixup(x, 0.3)
    expected_loss = mixed_cross_entropy(logits_of(x.flatten(1)), labels, permutation, lam).mean()

    built = build_methods(active_settings(settings), CONTEXT, (Place.SPECTROGRAM, Place.BATCH))
    torch.manual_seed(7)
    actual, criterion = TrainingMethods(built[Place.SPECTROGRAM], built[Place.BATCH]).augment(spectrogram.clone())
    torch.testing.assert_close(actual, x, rtol=0, atol=0)
    torch.testing.assert_close(criterion(logits_of(actual.flatten(1)), labels).mean(), expected_loss, rtol=0, atol=0)


def test_without_methods_the_criterion_is_the_plain_cross_entropy():
    logits, labels = torch.randn(5, 4), torch.tensor([0, 3, 1, 1, 2])
    x = torch.randn(5, 1, 4, 6)
    same, criterion = TrainingMethods().augment(x)
    assert same is x
    log_softmax = logits.numpy() - np.log(np.exp(logits.numpy()).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(5), labels.numpy()]
    np.testing.assert_allclose(criterion(logits, labels).numpy(), expected, rtol=1e-6)
    torch.testing.assert_close(criterion(logits, labels).mean(), F.cross_entropy(logits, labels))
