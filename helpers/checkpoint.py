"""The frito checkpoint format: its version, writing, reading with validation, and the model it describes.

A frito checkpoint is a Lightning checkpoint of the training module (helpers.training.classifier) with a
"frito" entry: the model spec it was trained as (helpers.model_spec.ModelSpec.entry) and its data::

    {"version": 3,
     "net": {...},           # keywords of models.passt.get_model as the network was built (resolved)
     "mel": {...},           # keywords of models.preprocess.AugmentMelSTFT (sample rate included)
     "class_names": [...], "domain_names": [...], "seen_domains": [...],   # seen: the domains trained on
     "sample_rate": 32000, "clip_length": 10.0,
     "augment": {...},       # the active DG methods' settings (helpers.augment.registry.active_settings)
     "dataset": "nsynth"}    # the dataset trained on (datasets/<name>); checkpoints written before it was
                             # recorded lack it, and are read all the same

and the weights under ``model.net.`` (the network), ``net_swa.module.`` and ``net_swa.n_averaged`` (the
stochastic weight average, when the run keeps one). Only this version is read: a checkpoint of another
version is refused with a message naming the version found (frito has had no release before this format).

Everything that reads or writes a checkpoint goes through this module: training writes through
:class:`CheckpointIO` (atomically), resume, evaluate_only, predict, export and
``models.net.pretrained_path=<frito checkpoint>`` read through :func:`read_checkpoint`, which validates
once and names the file and the fix in every error (:class:`CheckpointError`).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from torch import Tensor

from errors import UserError
from helpers.files import atomic_write
from helpers.model_spec import ModelSpec, Start
from models.audio_model import AudioModel
from models.conversion import NetworkWeights
from models.passt import PaSST
from models.pretrained import check_source, fit_weights, load_pretrained, read_pretrained
from models.weight_files import PretrainedError
from models.weight_files import read_checkpoint as read_weights_file

FORMAT_VERSION = 3
ENTRY = "frito"  # the checkpoint's entry describing model and data
CHECKPOINT_WEIGHTS = ("auto", "swa", "plain")
NETWORK_PREFIXES = {"plain": "model.net.", "swa": "net_swa.module."}
SWA_COUNT = "net_swa.n_averaged"
REQUIRED_KEYS = ("net", "mel", "augment", "class_names", "domain_names", "seen_domains", "sample_rate",
                 "clip_length")
_RESUME_SETTINGS = (("net", "models.net"), ("mel", "models.mel"), ("class_names", "classes"),
                    ("domain_names", "domains"), ("sample_rate", "basedataset.sample_rate"),
                    ("clip_length", "basedataset.clip_length"), ("seen_domains", "basedataset.train_domains"))


class CheckpointError(UserError, ValueError):
    """A checkpoint that is missing, unreadable, not frito's, or does not fit what it is used for."""


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """The frito checkpoint at ``path``, read once and validated."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist; give the path of a .ckpt file, e.g. "
                              "runs/<id>/checkpoints/best.ckpt")
    try:
        contents = read_weights_file(path)
    except PretrainedError as error:
        raise CheckpointError(f"checkpoint {path} is not a readable checkpoint (truncated?): {error}") from None
    return checkpoint_from_contents(contents, path)


def checkpoint_from_contents(contents: Mapping, path: str | os.PathLike) -> Checkpoint:
    """The frito checkpoint in ``contents``, the dict read from the file ``path``, validated."""
    entry = contents.get(ENTRY)
    version = entry.get("version") if isinstance(entry, Mapping) else None
    if version is None:
        raise CheckpointError(
            f"checkpoint {path} is not a frito checkpoint (it has no '{ENTRY}' entry): give checkpoints/best.ckpt or "
            "last.ckpt of a frito run (a PaSST release or DeiT weights go to models.net.pretrained_path instead)."
        )
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {path} is in frito's checkpoint format version {version!r}; this frito reads version "
            f"{FORMAT_VERSION} only: train the model again with this frito, or use the frito that wrote it."
        )
    missing = [key for key in REQUIRED_KEYS if key not in entry]
    if not isinstance(contents.get("state_dict"), Mapping):
        missing.append("state_dict (the weights)")
    if missing or not isinstance(entry["net"], Mapping):
        raise CheckpointError(f"checkpoint {path}: its '{ENTRY}' entry lacks {missing or ['net']}; it was edited or "
                              "written by another program")
    return Checkpoint(Path(path), dict(contents))


def checkpoint_entry(spec: ModelSpec, class_names, domain_names, seen_domains, dataset: str) -> dict[str, Any]:
    """The "frito" entry of the checkpoints of a training (see the module docstring): the model spec, and the
    dataset's name, classes and domains."""
    return {
        "version": FORMAT_VERSION,
        **spec.entry(),
        "class_names": list(class_names),
        "domain_names": list(domain_names),
        "seen_domains": list(seen_domains),
        "dataset": dataset,
    }


def pretrained_start(net: Mapping[str, Any]) -> Start | None:
    """Where a new network's first weights come from, by the pretrained options of ``models.net``: None (from
    scratch); the arch's published AudioSet release or an ImageNet DeiT (downloaded once); a release or DeiT
    file (``pretrained_path``, offline); or a frito checkpoint (``pretrained_path``), whose plain or SWA network
    ``pretrained_weights`` chooses. The file is read here, so a missing one stops a run before any data."""
    choice = net.get("pretrained_weights", "auto")
    if choice not in CHECKPOINT_WEIGHTS:
        raise PretrainedError(
            f"models.net.pretrained_weights={choice!r} is not one of {CHECKPOINT_WEIGHTS} (which network of a "
            "frito checkpoint to start from; auto: the SWA average when it holds one)"
        )
    path, source = net.get("pretrained_path"), net.get("pretrained_source", "audioset")
    check_source(source)
    if not net.get("pretrained"):
        if path is not None:
            raise PretrainedError(
                f"models.net.pretrained_path={path!r} is set but models.net.pretrained=False: set pretrained=True "
                "to start from that file, or drop pretrained_path to train from scratch"
            )
        return None
    if path is not None:
        contents = read_weights_file(path)
        if "state_dict" in contents:  # a Lightning checkpoint: frito's, or refused with the reason
            weights = checkpoint_from_contents(contents, path).network_weights(choice)
            return _FritoStart(weights, f"{net['arch']} from {path}")
    contents, origin = read_pretrained(net["arch"], source, path)
    return _ReleaseStart(net["arch"], contents, origin)


@dataclass(frozen=True)
class Checkpoint:
    """A validated frito checkpoint: ``lightning`` is the whole dict Lightning wrote (current key names),
    for resuming; ``entry`` its "frito" entry; ``state_dict`` the training module's weights."""

    path: Path
    lightning: dict

    @property
    def entry(self) -> dict:
        return self.lightning[ENTRY]

    @property
    def dataset(self) -> str | None:
        """The name of the dataset it was trained on (datasets/<name>); None when not recorded."""
        return self.entry.get("dataset")

    @property
    def spec(self) -> ModelSpec:
        """The model the checkpoint was trained as."""
        return ModelSpec.from_entry(self.entry)

    @property
    def state_dict(self) -> dict[str, Tensor]:
        return self.lightning["state_dict"]

    @property
    def can_resume(self) -> bool:
        """Whether it holds the optimizer and loop state a training continues from (not weights only)."""
        return "optimizer_states" in self.lightning and "loops" in self.lightning

    @property
    def has_swa(self) -> bool:
        """Whether the run kept a stochastic weight average (averaged yet or not)."""
        return any(key.startswith(NETWORK_PREFIXES["swa"]) for key in self.state_dict)

    def choose_weights(self, weights: str = "auto") -> str:
        """"plain" or "swa": the network ``weights`` ("auto": the SWA average when it holds one) selects."""
        if weights not in CHECKPOINT_WEIGHTS:
            raise CheckpointError(f"weights={weights!r} is not one of {CHECKPOINT_WEIGHTS}")
        averaged = self.has_swa and int(self.state_dict.get(SWA_COUNT, 1)) > 0
        available = ["plain", "swa"] if self.has_swa else ["plain"]
        if weights == "auto":
            return "swa" if averaged else "plain"
        if weights == "swa" and not averaged:
            reason = "has no averaged SWA weights yet" if self.has_swa else "has no such weights"
            raise CheckpointError(f"{self.path} {reason} ({NETWORK_PREFIXES['swa']}*); it offers {available}: "
                                  "choose one of those, or 'auto'")
        return weights

    def network_state(self, weights: str = "auto") -> dict[str, Tensor]:
        """The state dict of the plain or SWA network (see :meth:`choose_weights`)."""
        prefix = NETWORK_PREFIXES[self.choose_weights(weights)]
        return {key[len(prefix):]: value for key, value in self.state_dict.items() if key.startswith(prefix)}

    def network_weights(self, weights: str = "auto") -> NetworkWeights:
        """The plain or SWA network as pretrained weights for another model (models.pretrained.fit_weights)."""
        choice = self.choose_weights(weights)
        net = self.entry["net"]
        strides = (net["fstride"], net["tstride"])
        description = (f"frito checkpoint, {choice} weights of {net['arch']} rf_norm_t={net.get('rf_norm_t', '')!r}, "
                       f"strides {strides[0]}x{strides[1]}")
        other = NETWORK_PREFIXES["swa" if choice == "plain" else "plain"]
        ignored = [f"{other}* ({sum(key.startswith(other) for key in self.state_dict)} keys)"] if self.has_swa else []
        return NetworkWeights(self.network_state(choice), description, strides, ignored)

    def build_model(self, weights: str = "auto") -> AudioModel:
        """The front-end and the plain or SWA network the checkpoint describes, with its weights."""
        model = self.untrained_model()
        try:
            model.net.load_state_dict(self.network_state(weights), strict=True)
        except RuntimeError as error:
            raise CheckpointError(f"{self.path}: the {self.choose_weights(weights)} weights do not fit the network "
                                  f"its '{ENTRY}' entry describes ({error})") from None
        return model

    def untrained_model(self) -> AudioModel:
        """The front-end and network the checkpoint describes, freshly initialised (for :meth:`load_into`)."""
        return self.spec.build()

    def load_into(self, module: torch.nn.Module) -> None:
        """Load the weights into a training module built with the checkpoint's settings."""
        mismatch = weight_mismatch(module.state_dict(), self.state_dict)
        if mismatch:
            raise CheckpointError(f"checkpoint {self.path} does not fit the model rebuilt from its own settings: "
                                  f"{mismatch}.")
        module.load_state_dict(self.state_dict)

    def resume_differences(self, entry: Mapping, module: torch.nn.Module, keeps_swa: bool) -> list[str]:
        """Why a training configured as ``entry`` (with or without SWA) cannot continue from this checkpoint:
        each setting that differs, named as in the config; empty when it can."""
        differences = [
            f"{name}: checkpoint {saved!r}, config {wanted!r}"
            for key, setting in _RESUME_SETTINGS
            for name, saved, wanted in _differences(setting, self.entry.get(key), entry.get(key))
        ]
        if self.has_swa != keeps_swa:
            differences.append(f"swa: checkpoint {self.has_swa}, config {keeps_swa}")
        else:
            mismatch = weight_mismatch(module.state_dict(), self.state_dict)
            if mismatch:
                differences.append(f"weights: {mismatch}")
        return differences


class CheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint files, written atomically (a temporary file in the folder, renamed into place,
    so a crash never leaves a half-written checkpoint) and, for the checkpoint a training resumes from,
    read once: the one :func:`read_checkpoint` validated already is handed over instead of read again."""

    def __init__(self, resumed: Checkpoint | None = None):
        super().__init__()
        self._resumed = resumed

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        atomic_write(Path(path), lambda stream: torch.save(checkpoint, stream))

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict[str, Any]:
        if self._resumed is not None and Path(path).resolve() == self._resumed.path.resolve():
            return self._resumed.lightning
        return read_checkpoint(path).lightning


def weight_mismatch(own: Mapping[str, Tensor], state: Mapping[str, Tensor]) -> str:
    """How a state dict differs from a module's (missing, unexpected, reshaped keys); empty when it fits."""
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(key for key in set(own) & set(state) if own[key].shape != state[key].shape)
    if not (missing or unexpected or mismatched):
        return ""
    return f"missing {missing[:5]}, unexpected {unexpected[:5]}, different shapes {mismatched[:5]}"


@dataclass(frozen=True)
class _ReleaseStart:
    """A published PaSST release or ImageNet DeiT (models.pretrained), fitted to the network."""

    arch: str
    contents: Mapping
    origin: str

    def load_into(self, network: PaSST) -> None:
        load_pretrained(network, self.arch, self.contents, self.origin)


@dataclass(frozen=True)
class _FritoStart:
    """The plain or SWA network of a frito checkpoint, fitted to the network."""

    weights: NetworkWeights
    origin: str

    def load_into(self, network: PaSST) -> None:
        fit_weights(network, self.weights, self.origin)


def _differences(name: str, saved, wanted) -> Iterator[tuple[str, Any, Any]]:
    """(dotted name, saved, wanted) for each setting that differs, descending into dicts."""
    if isinstance(saved, Mapping) and isinstance(wanted, Mapping):
        for key in sorted(set(saved) | set(wanted)):
            yield from _differences(f"{name}.{key}", saved.get(key), wanted.get(key))
    elif saved != wanted:
        yield name, saved, wanted

