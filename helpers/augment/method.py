"""The interface every DG method and augmentation implements: where it acts, and what it declares.

A method acts at one of five places of a run (:class:`Place`), and its place fixes what it is called with:

  waveform     ``method(waveform, domain) -> waveform``: one training clip (samples,) float32 in a loader
               worker, with the name of its domain; validation and test clips never pass here.
  spectrogram  ``method(x) -> x``: a training spectrogram batch (batch, 1, n_mels, frames), normalised
               log-mel, in the training step (not in evaluation).
  batch        ``method(x, criterion) -> (x, criterion)``: a training batch with the loss it is trained on,
               ``criterion(logits, labels) -> per-example loss`` (cross-entropy to start with); a method that
               changes the targets (mixup) returns the batch and the criterion that goes with it.
  input        an ``nn.Module`` mapping (batch, 1, n_mels, frames) to the same shape, between the front-end
               and the network in training, evaluation, predict and export (models.audio_model.AudioModel's
               ``input_transform``). It is rebuilt from its settings alone (the checkpoint stores them, not
               weights), so it holds no trained state.
  loss         an ``nn.Module`` ``method(embedding, batch) -> (loss, figures)``: an extra loss on the
               network's embedding (batch, embedding size) of a training batch (the collated dict: "label",
               "domain", ...), with its own trainable parameters (trained with the network's optimizer, saved
               in the checkpoint). ``figures`` name -> scalar are logged as ``train/<name>``. Training batches
               only: it never sees validation or test data.

A method is one class (a subclass of :class:`Method`) that declares, once, its config prefix, place and
settings; helpers.augment.registry lists the classes, and everything else (shared defaults, config checks,
named configs, construction, the checkpoint's record of input methods) derives from those declarations.
Its settings are top-level config keys ``<name>_<setting>``; one of them (:attr:`Method.strength`, a
probability ``p`` or a ``weight``) turns it off at 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import Any, ClassVar

from torch import Tensor

from helpers.setting_kinds import Kind

Criterion = Callable[[Tensor, Tensor], Tensor]  # (logits, labels) -> per-example loss (batch,)


class Place(Enum):
    """Where a method acts (see the module docstring for what each place calls it with)."""

    WAVEFORM = "waveform"
    SPECTROGRAM = "spectrogram"
    BATCH = "batch"
    INPUT = "input"
    LOSS = "loss"


@dataclass(frozen=True)
class Setting:
    """One setting of a method: its default, what values it accepts, and the one line print_config shows."""

    default: Any
    kind: Kind
    doc: str


@dataclass(frozen=True)
class Switch:
    """A boolean key that turns a method on (strength 1) or off (strength 0), e.g. the paper's ``use_mixup``;
    None leaves the strength as configured."""

    key: str
    doc: str


@dataclass(frozen=True)
class RunContext:
    """What a method may need to know of the run it is built for.

    sample_rate: Hz of the waveforms; dataset: the ``basedataset`` settings (skip_bad_files, ...);
    domain_names: meaning of a batch's "domain" indices; seen_domains: the domains trained on;
    domain_kind: what a domain is ("device", "instrument_source"); embedding_size: width of the network's
    embedding (None for the waveform place, built with the data before the network).
    """

    sample_rate: int
    dataset: Mapping[str, Any]
    domain_names: Sequence[str]
    seen_domains: Sequence[str]
    domain_kind: str
    embedding_size: int | None


class Method:
    """The declarations of a DG method or augmentation (class attributes), and how it is built.

    name: the config prefix of its settings; place: where it acts; settings: setting name (without the
    prefix) -> Setting; strength: the setting that turns it off at 0 (``p`` or ``weight``); switch: an
    optional boolean key that sets the strength to 1 or 0; renamed: dotted config keys of earlier versions
    -> the setting that replaces each; named_configs: named config -> (one-line doc, config diff).
    """

    name: ClassVar[str]
    place: ClassVar[Place]
    settings: ClassVar[Mapping[str, Setting]]
    strength: ClassVar[str] = "p"
    switch: ClassVar[Switch | None] = None
    renamed: ClassVar[Mapping[str, str]] = {}
    named_configs: ClassVar[Mapping[str, tuple[str, dict]]] = {}

    @classmethod
    def key(cls, setting: str) -> str:
        """The config key of one of its settings: ``<name>_<setting>``."""
        return f"{cls.name}_{setting}"

    @classmethod
    def build(cls, settings: Mapping[str, Any], context: RunContext):
        """The method for a run, from its settings (setting name -> value; strength > 0). By default the
        class itself, called with the settings as keywords."""
        return cls(**settings)

    @classmethod
    def check(cls, settings: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        """Raise ValueError (naming the keys and the fix) for settings that contradict each other or the rest
        of ``config``; each setting's own values are checked against its Kind already. Nothing by default."""
