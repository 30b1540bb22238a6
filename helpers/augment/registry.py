"""The registry of DG methods and augmentations, and everything derived from the methods' declarations.

``METHODS`` maps each method's config prefix to its class (helpers.augment.method.Method), in the order
of application within a place: a training spectrogram batch gets SpecAugment's masks, then Freq-MixStyle,
then (at the batch place) mixup. A new method is one module and one line in ``METHODS``.

Derived here, for the rest of frito: the shared config defaults and their documentation
(:func:`config_defaults`, :func:`config_docs`), the named configs the methods offer, the keys renamed from
earlier versions, the config check (:func:`check_settings`), the settings of a run's active methods
(:func:`active_settings`: what the checkpoint records), building them for a run (:func:`build_methods`),
and the network's input transform from recorded settings (:func:`input_transform`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import nn

from errors import ConfigurationError, UserError
from helpers.augment.dann import DomainAdversarial
from helpers.augment.device_impulse_responses import DeviceImpulseResponses
from helpers.augment.freq_centering import FreqCentering
from helpers.augment.freq_mixstyle import FreqMixStyle
from helpers.augment.method import Method, Place, RunContext
from helpers.augment.mixup import Mixup
from helpers.augment.rfn import RFN
from helpers.augment.specaugment import SpecAugment

ActiveSettings = Mapping[str, Mapping[str, Any]]  # method name -> setting name -> value, active methods only


def registered(*methods: type[Method]) -> dict[str, type[Method]]:
    """Name -> method, in the order given; refuses two methods under one name or keys that collide."""
    registry: dict[str, type[Method]] = {}
    keys: set[str] = set()
    for method in methods:
        own = {method.key(setting) for setting in method.settings} | ({method.switch.key} if method.switch else set())
        if method.name in registry or own & keys or method.strength not in method.settings:
            raise ValueError(f"DG method {method.__name__}: its name {method.name!r} or one of its keys {sorted(own)} "
                             f"is taken, or its strength {method.strength!r} is not one of its settings")
        registry[method.name] = method
        keys |= own
    return registry


METHODS = registered(
    SpecAugment,
    FreqMixStyle,
    Mixup,
    DeviceImpulseResponses,
    FreqCentering,
    RFN,
    DomainAdversarial,
)


def config_defaults(methods: Mapping[str, type[Method]] = METHODS) -> dict[str, Any]:
    """Every method's keys with their defaults (switches: None), as top-level config entries."""
    defaults = {method.key(name): setting.default for method in methods.values()
                for name, setting in method.settings.items()}
    defaults.update({method.switch.key: None for method in methods.values() if method.switch})
    return defaults


def config_docs(methods: Mapping[str, type[Method]] = METHODS) -> dict[str, str]:
    """Key -> its one-line documentation (print_config)."""
    docs = {method.key(name): setting.doc for method in methods.values() for name, setting in method.settings.items()}
    docs.update({method.switch.key: method.switch.doc for method in methods.values() if method.switch})
    return docs


def switched_strengths(config: Mapping[str, Any], methods: Mapping[str, type[Method]] = METHODS) -> dict[str, float]:
    """The strength keys that a switch given in ``config`` sets (use_mixup=True: mixup_p=1.0)."""
    return {method.key(method.strength): 1.0 if config[method.switch.key] else 0.0
            for method in methods.values() if method.switch and config.get(method.switch.key) is not None}


def named_configs(methods: Mapping[str, type[Method]] = METHODS) -> dict[str, tuple[str, dict]]:
    """Named config -> (one-line doc, config diff), of every method."""
    return {name: named for method in methods.values() for name, named in method.named_configs.items()}


def renamed_keys(methods: Mapping[str, type[Method]] = METHODS) -> dict[str, str]:
    """Dotted config keys of earlier versions -> the key that replaces each."""
    return {old: method.key(setting) for method in methods.values() for old, setting in method.renamed.items()}


def check_settings(config: Mapping[str, Any], methods: Mapping[str, type[Method]] = METHODS) -> None:
    """Raise ConfigurationError, naming key, value and fix, for a method setting its Kind refuses, a switch
    that contradicts the strength it sets, or settings the method's own check refuses."""
    for method in methods.values():
        for name, setting in method.settings.items():
            key, value = method.key(name), config[method.key(name)]
            if not setting.kind.accepts(value):
                raise ConfigurationError(f"{key}={value!r}: expected {setting.kind.expected} ({setting.doc}); "
                                         f"set {key} accordingly, e.g. to its default {setting.default!r}")
        if method.switch and config.get(method.switch.key) is not None:
            switch, strength = method.switch.key, method.key(method.strength)
            if not isinstance(config[switch], bool) or bool(config[switch]) != (config[strength] > 0):
                raise ConfigurationError(
                    f"{switch}={config[switch]!r} contradicts {strength}={config[strength]!r}: {switch} is True or "
                    f"False ({method.switch.doc}); give one of the two keys"
                )
    for name, settings in active_settings(config, methods).items():
        try:
            methods[name].check(settings, config)
        except ValueError as error:
            raise ConfigurationError(str(error)) from None


def active_settings(config: Mapping[str, Any], methods: Mapping[str, type[Method]] = METHODS) -> dict[str, dict]:
    """The methods whose strength is > 0, in registry order: name -> setting name -> value."""
    return {name: {setting: config[method.key(setting)] for setting in method.settings}
            for name, method in methods.items() if config[method.key(method.strength)] > 0}


def build_methods(active: ActiveSettings, context: RunContext, places: Iterable[Place],
                  methods: Mapping[str, type[Method]] = METHODS) -> dict[Place, list]:
    """The active methods of ``places`` built for a run: place -> methods in registry order. A setting a
    method refuses while being built (a folder without impulse responses, ...) is a ConfigurationError;
    files it cannot use raise their own UserError."""
    places = set(places)
    built: dict[Place, list] = {place: [] for place in places}
    for name, method in methods.items():
        if name in active and method.place in places:
            try:
                built[method.place].append(method.build(active[name], context))
            except UserError:  # unusable files, ...: a message already
                raise
            except ValueError as error:
                raise ConfigurationError(str(error)) from None
    return built


def input_transform(active: ActiveSettings, methods: Mapping[str, type[Method]] = METHODS) -> nn.Module | None:
    """The module between front-end and network for the recorded settings of a run's active methods (its
    input-place methods, in registry order), or None when it has none. Input methods are built from their
    settings alone (no RunContext), so a checkpoint rebuilds them."""
    modules = [methods[name](**settings) for name, settings in active.items() if methods[name].place is Place.INPUT]
    if not modules:
        return None
    return modules[0] if len(modules) == 1 else nn.Sequential(*modules)
