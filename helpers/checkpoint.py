"""The frito checkpoint format: its version, reading with validation, and the network it describes.

A frito checkpoint is a Lightning checkpoint of the training module (helpers.training_module) with a
"frito" entry: the network and front-end settings, class and domain names, the domains trained on, the
sample rate and clip length. Everything that reads one goes through this module.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from torch import Tensor

from models.conversion import NetworkWeights
from models.network import get_model
from models.passt import PaSST
from models.pretrained import fit_weights
from models.weight_files import PretrainedError, read_checkpoint

FRITO_VERSION = 1
CHECKPOINT_WEIGHTS = ("auto", "swa", "plain")
FRITO_PREFIXES = {"plain": "net.", "swa": "net_swa."}
PRETRAINED_KEYS = ("pretrained", "pretrained_path", "pretrained_source", "pretrained_weights")


def build_network(net_config: Mapping) -> PaSST:
    """The network of a run's ``models.net`` config, with its pretrained weights: the arch's release, a DeiT,
    or (``pretrained_path`` naming one) a checkpoint written by frito, whose ``pretrained_weights`` choose
    its plain or SWA network."""
    settings = {key: value for key, value in net_config.items() if key != "pretrained_weights"}
    weights = net_config.get("pretrained_weights", "auto")
    if weights not in CHECKPOINT_WEIGHTS:
        raise PretrainedError(f"pretrained weights choice {weights!r} is not one of {CHECKPOINT_WEIGHTS}")
    path = settings.get("pretrained_path")
    if not (settings.get("pretrained") and path is not None):
        return get_model(**settings)
    checkpoint = read_checkpoint(path)
    if not is_frito_checkpoint(checkpoint):
        return get_model(**settings)
    network = rebuild_network(settings)
    selected = frito_weights(checkpoint, weights, origin=str(path))
    fit_weights(network, _network_weights(selected), f"{settings['arch']} from {path}")
    return network


def rebuild_network(net_settings: Mapping) -> PaSST:
    """The network ``net_settings`` describe, freshly initialised (no pretrained weights are read)."""
    return get_model(**{key: value for key, value in net_settings.items() if key not in PRETRAINED_KEYS})


@dataclass(frozen=True)
class FritoCheckpoint:
    """The network weights and settings of a checkpoint written by frito's training module.

    state_dict: the network's parameters (prefix removed); weights: "plain" or "swa", the copy taken;
    meta: the checkpoint's "frito" entry (net and mel settings, class names, sample rate, clip length).
    """

    state_dict: dict[str, Tensor]
    weights: str
    meta: dict
    ignored: tuple[str, ...]


def frito_weights(checkpoint: Mapping, weights: str = "auto", origin: str = "checkpoint") -> FritoCheckpoint:
    """Pick the plain or SWA network of a frito Lightning checkpoint and validate its "frito" entry."""
    if weights not in CHECKPOINT_WEIGHTS:
        raise PretrainedError(f"weights={weights!r} is not one of {CHECKPOINT_WEIGHTS}")
    if not is_frito_checkpoint(checkpoint):
        raise PretrainedError(
            f"{origin} is not a frito checkpoint (expected a Lightning checkpoint with 'state_dict' and a "
            f"'frito' entry; top-level keys: {sorted(map(str, checkpoint))[:8]})"
        )
    meta = checkpoint["frito"]
    valid = isinstance(meta, Mapping) and meta.get("version") == FRITO_VERSION and isinstance(meta.get("net"), Mapping)
    if not valid:
        raise PretrainedError(
            f"{origin}: its 'frito' entry is not version {FRITO_VERSION} with a 'net' config dict; "
            "it was written by another frito version or edited"
        )
    state = checkpoint["state_dict"]
    available = [name for name, prefix in FRITO_PREFIXES.items() if any(key.startswith(prefix) for key in state)]
    averaged = state.get("swa_n_averaged")
    swa_is_average = "swa" in available and (averaged is None or int(averaged) > 0)
    if weights == "auto":
        weights = "swa" if swa_is_average else "plain"
    if weights not in available or (weights == "swa" and not swa_is_average):
        reason = "has no averaged SWA weights yet" if weights == "swa" and "swa" in available else "has no such weights"
        raise PretrainedError(
            f"{origin} {reason} ({FRITO_PREFIXES[weights]}*); it offers {available or 'no network weights'}: "
            "choose one of those, or 'auto'"
        )
    prefix = FRITO_PREFIXES[weights]
    selected = {key[len(prefix):]: value for key, value in state.items() if key.startswith(prefix)}
    ignored = tuple(key for key in state if not key.startswith(prefix))
    return FritoCheckpoint(selected, weights, dict(meta), ignored)


def is_frito_checkpoint(checkpoint: Mapping) -> bool:
    return isinstance(checkpoint.get("state_dict"), Mapping) and "frito" in checkpoint


def _network_weights(selected: FritoCheckpoint) -> NetworkWeights:
    net = selected.meta["net"]
    strides = (int(net.get("fstride", 10)), int(net.get("tstride", 10)))
    description = (
        f"frito checkpoint, {selected.weights} weights of {net.get('arch')} rf_norm_t={net.get('rf_norm_t', '')!r}, "
        f"strides {strides[0]}x{strides[1]}"
    )
    return NetworkWeights(selected.state_dict, description, strides, _prefix_counts(selected.ignored))


def _prefix_counts(keys: tuple[str, ...]) -> list[str]:
    """Keys grouped by their first component: ["net_swa.* (38 keys)", "swa_n_averaged"]."""
    groups: dict[str, int] = {}
    for key in keys:
        head, dot, _ = key.partition(".")
        name = head + ".*" if dot else head
        groups[name] = groups.get(name, 0) + 1
    return [f"{name} ({count} keys)" if name.endswith("*") else name for name, count in groups.items()]
