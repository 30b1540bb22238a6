"""The values each config setting accepts, as one table: dotted key -> Kind (helpers.setting_kinds).

The config hook checks every setting present in a run's config against this table before any data is read
(:func:`refused_settings`), so ``lr=-0.001`` or ``batch_size=0`` stop with a message naming key, value and
fix instead of failing inside torch after the caches are built. The DG methods' settings are not listed:
each method declares its own (helpers.augment.registry.check_settings). Rules that relate several keys
(win_length <= n_fft, an rf_norm_t form, a setting against what the data implies) stay with the component
that owns them (helpers.experiment.config_check.check_values). A new setting gets its line here; a test
fails for a setting of the defaults without one.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from typing import Any

from datasets.audio import RESAMPLE_QUALITIES
from datasets.cache import AUDIO_DTYPES, CACHE_FORMATS
from helpers.checkpoint import CHECKPOINT_WEIGHTS
from helpers.export import EXPORTERS
from helpers.results.selection import MODEL_SELECTIONS
from helpers.setting_kinds import (
    BOOLEAN,
    COUNT,
    NAMES,
    PATH,
    POSITIVE,
    TEXT,
    Kind,
    is_whole_number,
    number_in,
    one_of,
    optional,
    whole_number,
)
from helpers.training.schedule import SCHEDULES
from models.architectures import ARCHITECTURES
from models.attention import ATTENTION_IMPLS
from models.pretrained import PRETRAINED_SOURCES

AT_LEAST_ONE = whole_number(1)
SEED = Kind(is_whole_number, "a whole number (a seed)")
SHARE = number_in(0, 1, low_included=False, high_included=False)
EPOCHS = Kind(lambda value: is_whole_number(value) and (value >= 1 or value == -1),
              "a whole number >= 1 (-1: no limit)")
DEVICES = Kind(lambda value: (is_whole_number(value) and (value >= 1 or value == -1)) or isinstance(value, str)
               or (isinstance(value, list) and len(value) > 0 and all(is_whole_number(index) for index in value)),
               "a number of devices >= 1 (-1: all), 'auto', or a list of device indices")
FILES = Kind(lambda value: value is None or isinstance(value, str)
             or (isinstance(value, list) and len(value) > 0 and all(isinstance(path, str) for path in value)),
             "a path, a list of paths, or None")
EXPORT_FORMATS = Kind(lambda value: isinstance(value, list) and len(value) > 0
                      and all(name in EXPORTERS for name in value),
                      f"a non-empty list of {', '.join(map(repr, EXPORTERS))}")

SETTING_RULES: dict[str, Kind] = {
    # training
    "lr": POSITIVE,
    "weight_decay": number_in(0, math.inf),
    "batch_size": AT_LEAST_ONE,
    "num_workers": COUNT,
    "schedule_mode": one_of(SCHEDULES),
    "warm_up_len": COUNT,
    "ramp_down_start": COUNT,
    "ramp_down_len": COUNT,
    "last_lr_value": number_in(0, 1),
    "model_selection": one_of(MODEL_SELECTIONS),
    "swa": BOOLEAN,
    "swa_epoch_start": COUNT,
    "swa_freq": AT_LEAST_ONE,
    "executor_costs": PATH,
    "progress_every_batches": AT_LEAST_ONE,
    "progress_every_seconds": POSITIVE,
    "seed": SEED,
    # the commands other than main (helpers.experiment.options)
    "checkpoint": PATH,
    "plot_path": PATH,
    "speed_test_batch_size": AT_LEAST_ONE,
    "speed_test_steps": AT_LEAST_ONE,
    "files": FILES,
    "top_k": AT_LEAST_ONE,
    "weights": one_of(CHECKPOINT_WEIGHTS),
    "predictions_csv": PATH,
    "hop_fraction": number_in(0, 1, low_included=False),
    "export_dir": PATH,
    "export_formats": EXPORT_FORMATS,
    "export_seconds": optional(POSITIVE, "the training clip length"),
    "resume": PATH,
    # the network (models.passt.get_model)
    "models.net.arch": one_of(ARCHITECTURES),
    "models.net.pretrained": BOOLEAN,
    "models.net.pretrained_path": PATH,
    "models.net.pretrained_source": one_of(PRETRAINED_SOURCES),
    "models.net.pretrained_weights": one_of(CHECKPOINT_WEIGHTS),
    "models.net.n_classes": optional(AT_LEAST_ONE, "the number of classes of the data"),
    "models.net.in_channels": AT_LEAST_ONE,
    "models.net.fstride": optional(AT_LEAST_ONE, "the arch's own"),
    "models.net.tstride": optional(AT_LEAST_ONE, "the arch's own"),
    "models.net.input_fdim": optional(AT_LEAST_ONE, "models.mel.n_mels"),
    "models.net.input_tdim": optional(AT_LEAST_ONE, "the frames of one clip"),
    "models.net.u_patchout": COUNT,
    "models.net.s_patchout_t": COUNT,
    "models.net.s_patchout_f": COUNT,
    "models.net.rf_norm_t": TEXT,
    "models.net.attention_impl": one_of(ATTENTION_IMPLS),
    # the mel front-end (models.preprocess.AugmentMelSTFT)
    "models.mel.n_mels": AT_LEAST_ONE,
    "models.mel.sr": AT_LEAST_ONE,
    "models.mel.win_length": AT_LEAST_ONE,
    "models.mel.hopsize": AT_LEAST_ONE,
    "models.mel.n_fft": AT_LEAST_ONE,
    "models.mel.htk": one_of((False,)),
    "models.mel.fmin": number_in(0, math.inf),
    "models.mel.fmax": optional(POSITIVE, "the Nyquist frequency less half of fmax_aug_range"),
    "models.mel.norm": one_of((1,)),
    "models.mel.fmin_aug_range": COUNT,
    "models.mel.fmax_aug_range": COUNT,
    # the data (datasets/*/DEFAULTS; a key applies where the dataset has it)
    "basedataset.base_dir": PATH,
    "basedataset.cache_dir": PATH,
    "basedataset.sample_rate": AT_LEAST_ONE,
    "basedataset.clip_length": optional(POSITIVE, "the dataset's own length"),
    "basedataset.cache_format": one_of(CACHE_FORMATS),
    "basedataset.audio_dtype": one_of(AUDIO_DTYPES),
    "basedataset.resample_quality": one_of(RESAMPLE_QUALITIES),
    "basedataset.skip_bad_files": BOOLEAN,
    "basedataset.train_domains": NAMES,
    "basedataset.drop_untrained_classes": BOOLEAN,
    "basedataset.train_fraction": number_in(0, 1, low_included=False),
    "basedataset.subset_seed": SEED,
    "basedataset.prepare_workers": COUNT,
    "basedataset.train_split": TEXT,
    "basedataset.validation_split": TEXT,
    "basedataset.test_split": TEXT,
    "basedataset.families": NAMES,
    "basedataset.csv": PATH,
    "basedataset.validation_fraction": SHARE,
    "basedataset.test_fraction": SHARE,
    "basedataset.split_seed": SEED,
    "basedataset.fold": optional(SEED, "the CSV's split column"),
    # the Lightning Trainer (the keys the experiments set; Lightning checks the others)
    "trainer.max_epochs": EPOCHS,
    "trainer.devices": DEVICES,
    "trainer.deterministic": Kind(lambda value: isinstance(value, bool) or value == "warn", "True, False or 'warn'"),
    "trainer.benchmark": optional(BOOLEAN, "Lightning's choice"),
    "trainer.use_tensorboard_logger": BOOLEAN,
}


def refused_settings(config: Mapping[str, Any], defaults: Mapping[str, Any], docs: Mapping[str, str]) -> list[str]:
    """A message for every setting of ``config`` that its rule refuses, in the table's order: key, value, what
    is expected and what the setting is (``docs``, print_config's comments), and the fix (``defaults``: the
    experiment's default of the key, when there is one)."""
    messages = []
    for key, kind in SETTING_RULES.items():
        found, value = _lookup(config, key)
        if found and not kind.accepts(value):
            messages.append(_refusal(key, value, kind, _lookup(defaults, key), docs.get(key)))
    return messages


def _refusal(key: str, value: Any, kind: Kind, default: tuple[bool, Any], doc: str | None) -> str:
    what = f" ({doc})" if doc else ""
    close = difflib.get_close_matches(str(value), [str(choice) for choice in kind.choices], n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    has_default, default_value = default
    example = f", e.g. {key}={default_value!r} (the default)" if has_default and kind.accepts(default_value) else ""
    return f"{key}={value!r}: expected {kind.expected}{what}.{hint} Set {key} to such a value{example}."


def _lookup(config: Mapping[str, Any], dotted: str) -> tuple[bool, Any]:
    """(found, value) of a dotted key in a nested config."""
    value: Any = config
    for part in dotted.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return False, None
        value = value[part]
    return True, value
