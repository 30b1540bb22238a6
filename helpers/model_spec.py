"""The audio model a run's config describes: its settings as the model is built, and the model itself.

The user's config holds what the user chooses (``models.net``, ``models.mel``, ``basedataset``). What
follows from those is derived here, where the model is built, rather than written into the config:

- the front-end's sample rate is the data's (``basedataset.sample_rate``);
- the network's input height is the front-end's mel bins, its input length the frames of a clip of
  ``basedataset.clip_length`` seconds (a longer ``models.net.input_tdim`` given by the user is kept);
- the patch strides are the architecture's own unless ``models.net.fstride``/``tstride`` are given.

A value the user gives that contradicts the derivation is refused before any work. ``print_config``
shows the derived values beside the config (:func:`derived_settings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from errors import ConfigurationError
from helpers.checkpoint import CHECKPOINT_WEIGHTS, checkpoint_from_contents, rebuild_network
from models.architectures import architecture
from models.audio_model import AudioModel
from models.passt import PaSST, get_model
from models.preprocess import AugmentMelSTFT, clip_frames
from models.pretrained import fit_weights, load_pretrained
from models.weight_files import PretrainedError
from models.weight_files import read_checkpoint as read_weights_file


class SettingsError(ConfigurationError):
    """A model setting that contradicts what the data or another setting implies."""


def mel_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keywords of AugmentMelSTFT: ``models.mel`` at the data's sample rate."""
    mel, sample_rate = dict(config["models"]["mel"]), config["basedataset"]["sample_rate"]
    if mel.get("sr", sample_rate) != sample_rate:
        raise SettingsError(
            f"models.mel.sr={mel['sr']} differs from basedataset.sample_rate={sample_rate}: the front-end reads the "
            "dataset's audio at basedataset.sample_rate; drop models.mel.sr (it follows the data)."
        )
    return {**mel, "sr": sample_rate}


def net_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """Keywords of models.passt.get_model (and pretrained_weights): ``models.net`` with the input size of
    the front-end and clip length and the architecture's strides filled in."""
    net, mel = dict(config["models"]["net"]), config["models"]["mel"]
    n_mels, frames = mel["n_mels"], clip_length_frames(config)
    if net.get("input_fdim") is not None and net["input_fdim"] != n_mels:
        raise SettingsError(
            f"models.net.input_fdim={net['input_fdim']} differs from models.mel.n_mels={n_mels}: the network's "
            "frequency axis is the mel axis; drop models.net.input_fdim (it follows models.mel.n_mels)."
        )
    if net.get("input_tdim") is not None and net["input_tdim"] < frames:
        raise SettingsError(
            f"models.net.input_tdim={net['input_tdim']} is shorter than the {frames} frames of a "
            f"{config['basedataset']['clip_length']} s clip; drop models.net.input_tdim (it follows the clip "
            f"length) or raise it to {frames}."
        )
    spec = architecture(net["arch"])
    return {
        **net,
        "input_fdim": n_mels,
        "input_tdim": net.get("input_tdim") or frames,
        "fstride": spec.fstride if net.get("fstride") is None else net["fstride"],
        "tstride": spec.tstride if net.get("tstride") is None else net["tstride"],
    }


def clip_length_frames(config: Mapping[str, Any]) -> int:
    """Frames of the log-mel of one clip of ``basedataset.clip_length`` seconds."""
    clip_length = config["basedataset"]["clip_length"]
    if isinstance(clip_length, bool) or not isinstance(clip_length, int | float) or clip_length <= 0:
        raise SettingsError(
            f"basedataset.clip_length={clip_length!r}: the experiments need the clip length in seconds "
            "(it sizes the network's input), e.g. basedataset.clip_length=10.0."
        )
    return clip_frames(clip_length, config["basedataset"]["sample_rate"], config["models"]["mel"]["hopsize"])


def derived_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The values the model takes from other settings, by dotted key: what print_config adds to the config."""
    net = net_settings(config)
    return {
        "models.mel.sr": mel_settings(config)["sr"],
        "models.net.input_fdim": net["input_fdim"],
        "models.net.input_tdim": net["input_tdim"],
        "models.net.fstride": net["fstride"],
        "models.net.tstride": net["tstride"],
    }


def build_audio_model(config: Mapping[str, Any]) -> AudioModel:
    """The front-end and network of a run's config, with the network's pretrained weights."""
    return AudioModel(AugmentMelSTFT(**mel_settings(config)), build_network(net_settings(config)))


def build_network(settings: Mapping[str, Any]) -> PaSST:
    """The network of resolved ``models.net`` settings, with its pretrained weights: the arch's release, a
    DeiT, or (``pretrained_path`` naming one) a checkpoint written by frito, whose plain or SWA network
    ``pretrained_weights`` chooses."""
    choice = settings.get("pretrained_weights", "auto")
    if choice not in CHECKPOINT_WEIGHTS:
        raise PretrainedError(
            f"models.net.pretrained_weights={choice!r} is not one of {CHECKPOINT_WEIGHTS} (which network of a "
            "frito checkpoint to start from; auto: the SWA average when it holds one)"
        )
    path = settings.get("pretrained_path")
    if not (settings.get("pretrained") and path is not None):  # from scratch, or the arch's published weights
        return get_model(**{key: value for key, value in settings.items() if key != "pretrained_weights"})
    contents = read_weights_file(path)
    network = rebuild_network(settings)
    if "state_dict" in contents:  # a Lightning checkpoint: frito's, or refused with the reason
        weights = checkpoint_from_contents(contents, path).network_weights(choice)
        fit_weights(network, weights, f"{settings['arch']} from {path}")
    else:
        load_pretrained(network, settings["arch"], contents, str(path))
    return network
