"""Configuration checks that stop a run before any work.

Sacred accepts unknown keys inside nested config entries silently (``models.net.rf_norm_tt=...`` would
be ignored). :func:`check_keys` compares the final config with a :class:`Section` tree of the keys each
component accepts and names the closest valid key of every unknown one, or the key that replaces a key of
an earlier version (the DG methods declare those, helpers.augment.registry.renamed_keys).
:func:`check_setting_rules` refuses every value that its setting's rule (one table:
helpers.experiment.setting_rules) does not accept, naming key, value and fix, all of them at once.
:func:`check_values` catches values the components would reject later (an ``rf_norm_t`` form, an
architecture, the mel settings, a DG method's settings, a setting that contradicts what the model derives
from the data), before data is touched.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from sacred import Experiment
from sacred.config import chain_evaluate_config_scopes

from errors import ConfigurationError
from helpers.augment.registry import check_settings, renamed_keys
from helpers.experiment.setting_rules import refused_settings
from helpers.results.selection import ModelSelection
from helpers.training.fit import model_spec
from helpers.training.schedule import lr_schedule
from helpers.training.trainer import trainer_keys
from models.architectures import architecture
from models.passt import get_model
from models.patterns import parse_rf_norm_t
from models.preprocess import AugmentMelSTFT

# Keys Sacred itself puts into every config: the seed, and the docstring of a named config scope.
SACRED_KEYS = ("seed", "__doc__")
LISTED_KEYS_MAX = 12


@dataclass(frozen=True)
class Section:
    """The keys one config entry accepts.

    keys: key -> nested Section, or None for a value of any shape.
    accepts: what the keys are, for the error message (e.g. "keywords of models.passt.get_model").
    """

    keys: Mapping[str, Section | None] = field(default_factory=dict)
    accepts: str = ""


def keywords_of(function: Callable) -> dict[str, None]:
    """The keyword parameters of a function or class constructor, as leaf keys of a Section."""
    parameters = inspect.signature(function).parameters
    return {name: None for name, parameter in parameters.items()
            if name != "self" and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)}


def check_keys(config: Mapping[str, Any], section: Section, path: str = "") -> None:
    """Raise ConfigurationError naming every key of ``config`` that ``section`` does not accept."""
    problems = list(_unknown_keys(config, section, path))
    if problems:
        raise ConfigurationError("\n".join(problems))


def check_setting_rules(config: Mapping[str, Any], ex: Experiment) -> None:
    """Raise ConfigurationError listing, one a line, every setting whose value its rule refuses
    (helpers.experiment.setting_rules), with the default of ``ex`` for the run's dataset folder as the fix."""
    defaults, docs = experiment_defaults(ex, config["basedataset"].get("base_dir"))
    refused = refused_settings(config, defaults, docs)
    if refused:
        raise ConfigurationError("\n".join(refused))


def experiment_defaults(ex: Experiment, base_dir: str | None = None) -> tuple[dict[str, Any], dict[str, str]]:
    """The defaults of the experiment's config for a run on ``base_dir`` (None: the demo preset, where the
    dataset has one), and the comments print_config shows beside them, by dotted key."""
    defaults, summaries = chain_evaluate_config_scopes(ex.configurations, fixed={"basedataset": {"base_dir": base_dir}})
    docs: dict[str, str] = {}
    for summary in summaries:
        for key, doc in summary.docs.items():
            docs.setdefault(key, doc)
    return defaults, docs


def check_values(config: Mapping[str, Any], dataset: ModuleType) -> None:
    """Raise ConfigurationError for values of ``models`` and the schedule that their components reject,
    and for settings that contradict what the model derives from the data (helpers.model_spec) of
    ``dataset`` (a package of datasets/)."""
    net = config["models"]["net"]
    checks = (
        ("models.net.rf_norm_t", lambda: parse_rf_norm_t(net.get("rf_norm_t", ""))),
        ("models.net.arch", lambda: architecture(net.get("arch"))),
        ("models.mel", lambda: AugmentMelSTFT(**model_spec(dataset, config).mel)),
        ("schedule", lambda: lr_schedule(config["schedule_mode"], config["warm_up_len"], config["ramp_down_start"],
                                         config["ramp_down_len"], config["last_lr_value"])),
        ("model_selection", lambda: ModelSelection(config["model_selection"])),
    )
    for where, check in checks:
        try:
            check()
        except ConfigurationError:
            raise
        except ValueError as error:
            raise ConfigurationError(f"{where}: {error}") from error
    check_settings(config)


def config_sections(ex: Experiment, dataset: ModuleType) -> Section:
    """The keys an experiment's config accepts, section by section."""
    defaults, _ = chain_evaluate_config_scopes(ex.configurations)
    top: dict[str, Section | None] = dict.fromkeys(defaults)
    top["models"] = Section(
        {"net": Section({**keywords_of(get_model), "pretrained_weights": None},
                        "keywords of models.passt.get_model, and pretrained_weights"),
         "mel": Section(keywords_of(AugmentMelSTFT), "keywords of models.preprocess.AugmentMelSTFT")},
        "the network and its mel front-end",
    )
    top["basedataset"] = Section(dict.fromkeys(dataset.DEFAULTS), f"the keys of {dataset.__name__}.DEFAULTS")
    top["trainer"] = Section(dict.fromkeys(trainer_keys()), "pl.Trainer keywords and the translated Lightning 1.x keys")
    return Section(top, "see print_config")


def closest(key: str, candidates: Iterable[str]) -> str | None:
    """The candidate most similar to ``key`` (difflib), or None when nothing is close."""
    matches = difflib.get_close_matches(key, list(candidates), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _unknown_keys(config: Mapping[str, Any], section: Section, path: str) -> Iterable[str]:
    for key, value in config.items():
        where = f"{path}.{key}" if path else key
        if key not in section.keys:
            if not path and key in SACRED_KEYS:
                continue
            new = renamed_keys().get(where)
            if new is not None:
                yield (f"Config key {where!r} was renamed to {new}: write {new}={value!r} (a DG method's settings "
                       "are top-level keys <method>_<setting>).")
                continue
            yield _unknown_key_message(key, where, section, path)
            continue
        nested = section.keys[key]
        if nested is None:
            continue
        if not isinstance(value, Mapping):
            yield f"Config entry {where} must be a dict of {nested.accepts}, got {value!r}."
            continue
        yield from _unknown_keys(value, nested, where)


def _unknown_key_message(key: str, where: str, section: Section, path: str) -> str:
    prefix = f"{path}." if path else ""
    suggestion = closest(key, section.keys)
    hint = f" Did you mean {prefix}{suggestion}?" if suggestion else ""
    valid = sorted(section.keys)
    listing = ", ".join(valid) if len(valid) <= LISTED_KEYS_MAX else f"{', '.join(valid[:LISTED_KEYS_MAX])}, ..."
    scope = path or "the top level"
    accepts = f" ({section.accepts})" if section.accepts else ""
    return f"Unknown config key {where!r}.{hint} Valid keys under {scope}{accepts}: {listing}"
