"""The one resolved description of a run's audio model: what the checkpoint stores, what builds the model.

The user's config holds what the user chooses (``models.net``, ``models.mel``, ``basedataset``). What
follows from those is resolved here, once, into a :class:`ModelSpec`:

- the front-end's sample rate is the data's (``basedataset.sample_rate``);
- the clip length is ``basedataset.clip_length``, or the dataset's own when that is None;
- the network's input height is the front-end's mel bins, its input length the frames of one clip (a longer
  ``models.net.input_tdim`` given by the user is kept);
- the patch strides are the architecture's own unless ``models.net.fstride``/``tstride`` are given;
- the number of classes is the data's unless ``models.net.n_classes`` is given (and then must agree).

A value the user gives that contradicts the resolution is refused (:class:`SettingsError`) before any work.
The spec is what a checkpoint's "frito" entry records (:meth:`ModelSpec.entry`), what builds the
:class:`~models.audio_model.AudioModel` (:meth:`ModelSpec.build`, the one factory: training, evaluation,
inference, export and the speed test use it) and what ``print_config`` shows (:meth:`ModelSpec.derived`).
Where a network's first weights come from (``models.net.pretrained*``) is not part of the spec: it is a
start (:class:`Start`, see :func:`helpers.checkpoint.pretrained_start`) that :meth:`ModelSpec.build` applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from inspect import signature
from typing import Any, Protocol

from errors import ConfigurationError
from helpers.augment.registry import active_settings, config_defaults, input_transform
from models.architectures import architecture
from models.audio_model import AudioModel
from models.passt import PaSST, get_model, patch_grid
from models.preprocess import AugmentMelSTFT, clip_frames

# models.net keys that say where the first weights come from, not what the network is
PRETRAINED_KEYS = ("pretrained", "pretrained_path", "pretrained_source", "pretrained_weights")


class SettingsError(ConfigurationError):
    """A model setting that contradicts what the data or another setting implies."""


class Start(Protocol):
    """Initial weights for a freshly built network (a published release, a file, a frito checkpoint)."""

    def load_into(self, network: PaSST) -> None: ...


@dataclass(frozen=True)
class ModelSpec:
    """The audio model, every value resolved.

    net: keywords of models.network.get_model as the network is built (input size, strides, classes filled
        in; no pretrained-weight options).
    mel: keywords of models.preprocess.AugmentMelSTFT (``sr`` the data's sample rate).
    sample_rate: Hz of the waveforms the model takes.
    clip_length: seconds of one training and evaluation clip.
    augment: the settings of the DG methods trained with (helpers.augment.registry.active_settings: name ->
        setting -> value); those of the input place are part of the model (its input transform).
    """

    net: Mapping[str, Any]
    mel: Mapping[str, Any]
    sample_rate: int
    clip_length: float
    augment: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def __post_init__(self):
        object.__setattr__(self, "net", dict(self.net))
        object.__setattr__(self, "mel", dict(self.mel))
        object.__setattr__(self, "augment", {name: dict(settings) for name, settings in self.augment.items()})

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, clip_length: float | None = None) -> ModelSpec:
        """The spec of a run's config, its number of classes the configured one (None: the data's, see
        :meth:`with_class_count`).

        clip_length: the data's clip length in seconds (the dataset resolves ``basedataset.clip_length=None``
            to its own length); by default ``basedataset.clip_length``, which must then be given.
        """
        basedataset = config["basedataset"]
        sample_rate = basedataset["sample_rate"]
        seconds = _clip_length(basedataset["clip_length"] if clip_length is None else clip_length)
        mel = dict(config["models"]["mel"])
        if mel.get("sr", sample_rate) != sample_rate:
            raise SettingsError(
                f"models.mel.sr={mel['sr']} differs from basedataset.sample_rate={sample_rate}: the front-end reads "
                "the dataset's audio at basedataset.sample_rate; drop models.mel.sr (it follows the data)."
            )
        mel["sr"] = sample_rate
        net = {key: value for key, value in config["models"]["net"].items() if key not in PRETRAINED_KEYS}
        frames = clip_frames(seconds, sample_rate, mel["hopsize"])
        if net.get("input_fdim") is not None and net["input_fdim"] != mel["n_mels"]:
            raise SettingsError(
                f"models.net.input_fdim={net['input_fdim']} differs from models.mel.n_mels={mel['n_mels']}: the "
                "network's frequency axis is the mel axis; drop models.net.input_fdim (it follows models.mel.n_mels)."
            )
        if net.get("input_tdim") is not None and net["input_tdim"] < frames:
            raise SettingsError(
                f"models.net.input_tdim={net['input_tdim']} is shorter than the {frames} frames of a {seconds:g} s "
                f"clip; drop models.net.input_tdim (it follows the clip length) or raise it to {frames}."
            )
        arch = architecture(net["arch"])
        net.update(
            input_fdim=mel["n_mels"],
            input_tdim=net.get("input_tdim") or frames,
            fstride=arch.fstride if net.get("fstride") is None else net["fstride"],
            tstride=arch.tstride if net.get("tstride") is None else net["tstride"],
            n_classes=net.get("n_classes"),
        )
        return cls(net, mel, sample_rate, seconds, active_settings({**config_defaults(), **config}))

    @classmethod
    def of(cls, arch: str, clip_length: float, n_classes: int, sample_rate: int = 32000,
           mel: Mapping[str, Any] | None = None, **net) -> ModelSpec:
        """A spec from keywords (benchmarks, notebooks): ``net`` further keywords of models.network.get_model,
        ``mel`` keywords of the front-end that differ from its defaults."""
        front_end = {name: parameter.default for name, parameter in signature(AugmentMelSTFT).parameters.items()
                     if name != "sr"}  # the sample rate is the data's
        config = {"basedataset": {"sample_rate": sample_rate, "clip_length": clip_length},
                  "models": {"mel": {**front_end, **(mel or {})}, "net": {"arch": arch, "n_classes": n_classes, **net}}}
        return cls.from_config(config)

    def with_class_count(self, class_names: Sequence[str]) -> ModelSpec:
        """The spec with the data's number of classes: filled in when None, else checked (before any cache is
        built)."""
        configured, found = self.net.get("n_classes"), len(class_names)
        if configured is not None and configured != found:
            raise SettingsError(
                f"models.net.n_classes={configured} but the data has {found} classes ({', '.join(class_names)}); "
                f"drop models.net.n_classes (it follows the data) or set it to {found}."
            )
        return replace(self, net={**self.net, "n_classes": found})

    @classmethod
    def from_entry(cls, entry: Mapping[str, Any]) -> ModelSpec:
        """The spec a checkpoint's "frito" entry records (see :meth:`entry`)."""
        return cls(entry["net"], entry["mel"], entry["sample_rate"], entry["clip_length"], entry["augment"])

    def entry(self) -> dict[str, Any]:
        """The spec as a checkpoint records it: plain dicts and numbers."""
        return {"net": dict(self.net), "mel": dict(self.mel), "sample_rate": self.sample_rate,
                "clip_length": self.clip_length, "augment": dict(self.augment)}

    @property
    def clip_samples(self) -> int:
        """Samples of one clip."""
        return round(self.clip_length * self.sample_rate)

    @property
    def clip_frames(self) -> int:
        """Frames of the log-mel of one clip."""
        return clip_frames(self.clip_length, self.sample_rate, self.mel["hopsize"])

    @property
    def patch_grid(self) -> tuple[int, int]:
        """(frequency rows, time columns) of the network's patch grid over its longest input."""
        return patch_grid(self.net["input_fdim"], self.net["input_tdim"], self.net["fstride"], self.net["tstride"])

    def derived(self) -> dict[str, Any]:
        """The values taken from other settings, by dotted config key: what print_config adds to the config."""
        derived = {
            "basedataset.clip_length": self.clip_length,
            "models.mel.sr": self.mel["sr"],
            "models.net.input_fdim": self.net["input_fdim"],
            "models.net.input_tdim": self.net["input_tdim"],
            "models.net.fstride": self.net["fstride"],
            "models.net.tstride": self.net["tstride"],
        }
        if self.net.get("n_classes") is not None:
            derived["models.net.n_classes"] = self.net["n_classes"]
        return derived

    def build(self, start: Start | None = None) -> AudioModel:
        """The front-end, input transform and network, freshly initialised, then the network given the weights of
        ``start`` (if any)."""
        if self.net.get("n_classes") is None:
            raise SettingsError("the model's number of classes is unknown: it follows the data (or set "
                                "models.net.n_classes)")
        network = get_model(**self.net)
        if start is not None:
            start.load_into(network)
        return AudioModel(AugmentMelSTFT(**self.mel), network, input_transform(self.augment))


def _clip_length(seconds) -> float:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds <= 0:
        raise SettingsError(
            f"basedataset.clip_length={seconds!r}: the model needs the clip length in seconds (it sizes the "
            "network's input), e.g. basedataset.clip_length=10.0, or None for the dataset's own length."
        )
    return float(seconds)
