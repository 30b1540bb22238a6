"""What values a setting accepts: the vocabulary that the config check's table of settings
(helpers.experiment.setting_rules) and the DG methods' declarations (helpers.augment.method) share.

A :class:`Kind` answers whether a value is acceptable and says, for the message that refuses one, what was
expected. Numbers exclude booleans (``True`` is an int to Python, never a learning rate to a user) and
infinities and NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Kind:
    """What values a setting accepts: ``accepts(value)``; for messages, ``expected``; for a categorical
    setting, its ``choices`` (a refusal names the closest one)."""

    accepts: Callable[[Any], bool]
    expected: str
    choices: tuple = ()


def is_number(value: Any) -> bool:
    """A finite int or float, not a bool."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def is_whole_number(value: Any) -> bool:
    """An int, not a bool."""
    return not isinstance(value, bool) and isinstance(value, int)


def whole_number(at_least: int) -> Kind:
    """A whole number >= ``at_least`` (counts of epochs, processes, clips, mel bins, ...)."""
    return Kind(lambda value: is_whole_number(value) and value >= at_least, f"a whole number >= {at_least}")


def number_in(low: float, high: float, low_included: bool = True, high_included: bool = True) -> Kind:
    """A number between ``low`` and ``high`` (math.inf: no upper bound), each bound included or not."""

    def accepts(value: Any) -> bool:
        if not is_number(value):
            return False
        above = value >= low if low_included else value > low
        below = value <= high if high_included else value < high
        return above and below

    if high == math.inf:
        return Kind(accepts, f"a number {'>=' if low_included else '>'} {low:g}")
    brackets = ("[" if low_included else "(", "]" if high_included else ")")
    return Kind(accepts, f"a number in {brackets[0]}{low:g}, {high:g}{brackets[1]}")


def one_of(choices: Iterable) -> Kind:
    """One of ``choices`` (names, or the few values a setting supports)."""
    choices = tuple(choices)
    return Kind(lambda value: any(value == choice and isinstance(value, bool) == isinstance(choice, bool)
                                  for choice in choices),
                f"one of {', '.join(map(repr, choices))}", choices)


def optional(kind: Kind, none_means: str) -> Kind:
    """``kind``, or None; none_means: what None stands for, for the message."""
    return Kind(lambda value: value is None or kind.accepts(value), f"{kind.expected}, or None ({none_means})",
                kind.choices)


PROBABILITY = Kind(lambda value: is_number(value) and 0 <= value <= 1, "a probability in [0, 1] (0: off)")
WEIGHT = Kind(lambda value: is_number(value) and value >= 0, "a weight >= 0 (0: off)")
POSITIVE = number_in(0, math.inf, low_included=False)
COUNT = whole_number(0)
BOOLEAN = Kind(lambda value: isinstance(value, bool), "True or False")
TEXT = Kind(lambda value: isinstance(value, str), "a text")
PATH = Kind(lambda value: value is None or isinstance(value, str), "a path, or None")
FOLDER = Kind(lambda value: value is None or isinstance(value, str), "a folder path, or None")
NAMES = Kind(lambda value: value is None or (isinstance(value, list | tuple) and len(value) > 0
                                             and all(isinstance(name, str) for name in value)),
             "a non-empty list of names, e.g. ['a'], or None")
