"""Configuration checks that stop a run before any work.

Sacred accepts unknown keys inside nested config entries silently (``models.net.rf_norm_tt=...`` would
be ignored). :func:`check_keys` compares the final config with a :class:`Section` tree of the keys each
component accepts and names the closest valid key of every unknown one. :func:`check_values` catches
values the components would reject later (an ``rf_norm_t`` form, an architecture, the mel settings),
before data is touched.
"""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sacred.utils import SacredError

from helpers.schedule import lr_schedule
from models.architectures import ARCHITECTURES
from models.patterns import parse_rf_norm_t
from models.preprocess import AugmentMelSTFT

# Keys Sacred itself puts into every config: the seed, and the docstring of a named config scope.
SACRED_KEYS = ("seed", "__doc__")
LISTED_KEYS_MAX = 12


class ConfigurationError(SacredError, ValueError):
    """A config key or value no component accepts; Sacred prints the message without a traceback."""

    def __init__(self, message: str):
        super().__init__(message, print_traceback=False)


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


def check_values(config: Mapping[str, Any]) -> None:
    """Raise ConfigurationError for values of ``models`` and the schedule that their components reject,
    and for a network input that does not match the front-end and clip length."""
    net, mel, dataset = config["models"]["net"], config["models"]["mel"], config["basedataset"]
    checks = (
        ("models.net.rf_norm_t", lambda: parse_rf_norm_t(net.get("rf_norm_t", ""))),
        ("models.net.arch", lambda: _known(net.get("arch"), ARCHITECTURES, "models.net.arch")),
        ("models.mel", lambda: AugmentMelSTFT(**mel)),
        ("schedule", lambda: lr_schedule(config["schedule_mode"], config["warm_up_len"], config["ramp_down_start"],
                                         config["ramp_down_len"], config["last_lr_value"])),
    )
    for where, check in checks:
        try:
            check()
        except ValueError as error:
            raise ConfigurationError(f"{where}: {error}") from error
    if net.get("input_fdim") != mel.get("n_mels"):
        raise ConfigurationError(
            f"models.net.input_fdim={net.get('input_fdim')} differs from models.mel.n_mels={mel.get('n_mels')}: "
            "the network's frequency axis is the mel axis; set both to the same value."
        )
    if mel.get("sr") != dataset.get("sample_rate"):
        raise ConfigurationError(
            f"models.mel.sr={mel.get('sr')} differs from basedataset.sample_rate={dataset.get('sample_rate')}: "
            "the front-end reads the dataset's audio; set both to the same rate."
        )
    clip_length = dataset.get("clip_length")
    if not isinstance(clip_length, (int, float)) or clip_length <= 0:
        raise ConfigurationError(
            f"basedataset.clip_length={clip_length!r}: the experiments need the clip length in seconds "
            "(it sizes models.net.input_tdim), e.g. basedataset.clip_length=10.0."
        )
    frames = AugmentMelSTFT(**mel).frames_for(round(clip_length * dataset["sample_rate"]))
    if frames > (net.get("input_tdim") or 0):
        raise ConfigurationError(
            f"models.net.input_tdim={net.get('input_tdim')} is shorter than the {frames} frames of a "
            f"{clip_length} s clip; leave input_tdim unset (it follows the clip) or raise it to {frames}."
        )


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


def _known(name: Any, registry: Mapping[str, Any], where: str) -> None:
    if name not in registry:
        suggestion = closest(str(name), registry)
        hint = f" Did you mean {suggestion!r}?" if suggestion else ""
        raise ValueError(f"unknown {where} {name!r}.{hint} Known: {', '.join(registry)}")
