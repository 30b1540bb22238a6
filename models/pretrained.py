"""Pretrained weights for PaSST: AudioSet releases, ImageNet DeiT, and checkpoints written by frito.

:func:`read_pretrained` gets the checkpoint (a local file, or a download cached in the torch hub folder) and
:func:`load_pretrained` fills a freshly built :class:`models.passt.PaSST` from it; ``get_model(pretrained=True)``
calls both, reading before building. Three kinds of checkpoint are recognised by their contents:

- a PaSST AudioSet release (the original code's timm-style keys: ``new_pos_embed``,
  ``freq_new_pos_embed``, ``time_new_pos_embed``, ``head.0``/``head.1``, ``head_dist``), downloaded once
  into the torch hub cache from the arch's release URL, or read from ``pretrained_path``;
- an ImageNet DeiT (``deit_base_distilled_patch16_384`` in timm's naming; FB's ``{"model": ...}``
  wrapper and ``.safetensors`` files are accepted): its RGB patch weights are summed to the spectrogram's
  channel, and its square position grid is resized to the spectrogram's patch grid and split into
  frequency (mean over time) and time (mean over frequency) encodings;
- a Lightning checkpoint written by frito (``net.``/``net_swa.`` keys and a ``"frito"`` entry), with a
  choice between the plain and the SWA weights.

Adaptation to the model being built: frequency encodings are stretched (linear interpolation, first and
last rows kept) to another number of patch rows; time encodings keep each column's frame position,
so at the checkpoint's stride fewer columns are a crop and another stride is a resampling, while more
time than the checkpoint covers is a stretch of its encodings; the classifier output is re-initialised
when the number of classes differs. The distillation head (``head_dist``) has no counterpart: the model
classifies the mean of the cls and dist tokens with ``head``. The upper-half attention of
``high_low_branch`` starts from the same block's attention when the checkpoint has none. Every key is
listed once in a logged summary; anything else that does not fit is an error, never a partial load.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from timm.models import adapt_input_conv, get_pretrained_cfg
from torch import Tensor

from models.passt import ARCHITECTURES, N_GLOBAL_TOKENS, PaSST

logger = logging.getLogger(__name__)

DEIT_ARCH = "deit_base_distilled_patch16_384"
PRETRAINED_SOURCES = {
    "audioset": "the arch's PaSST AudioSet release",
    "imagenet": f"ImageNet {DEIT_ARCH} (timm)",
}
CHECKPOINT_WEIGHTS = ("auto", "swa", "plain")
FRITO_PREFIXES = {"plain": "net.", "swa": "net_swa."}
FRITO_VERSION = 1
PATH_KEY = "models.net.pretrained_path"
CLASSIFIER_KEYS = ("head.1.weight", "head.1.bias")
CONNECT_TIMEOUT_S = 5.0

_RELEASE_RENAMES = {
    "new_pos_embed": "global_pos_embed",
    "freq_new_pos_embed": "freq_pos_embed",
    "time_new_pos_embed": "time_pos_embed",
}
_BRANCH_FALLBACKS = ((re.compile(r"^(blocks\.\d+)\.norm1_upper\."), r"\1.norm1."),
                     (re.compile(r"^(blocks\.\d+)\.attn_upper\."), r"\1.attn."))
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


class PretrainedError(ValueError):
    """A pretrained checkpoint that cannot be fetched, read, or fitted to the model being built."""


def read_pretrained(arch: str, source: str = "audioset", path: str | os.PathLike | None = None) -> tuple[dict, str]:
    """The checkpoint to start ``arch`` from, and where it came from (a path or URL).

    Args:
        arch: a name in ARCHITECTURES; names the AudioSet release to download.
        source: what to download when ``path`` is None: "audioset" (the arch's release, into the torch hub
            cache) or "imagenet" (DeiT, timm's URL for it). A file's own contents decide its kind.
        path: a local checkpoint (``models.net.pretrained_path``), the offline route.
    """
    check_options(source)
    if path is not None:
        return read_checkpoint(path), str(path)
    if source == "audioset":
        url = ARCHITECTURES[arch].url
        if not url:
            raise PretrainedError(
                f"arch {arch!r} has no published pretrained weights; set {PATH_KEY}=FILE to a checkpoint of "
                "the same width and depth, or models.net.pretrained=False to train from scratch"
            )
        return fetch_checkpoint(url, f"AudioSet weights of {arch!r}"), url
    url = get_pretrained_cfg(DEIT_ARCH).url
    return fetch_checkpoint(url, f"ImageNet weights of {DEIT_ARCH}"), url


def load_pretrained(
    model: PaSST, arch: str, checkpoint: Mapping, origin: str = "checkpoint", weights: str = "auto"
) -> None:
    """Fill ``model``'s parameters from a checkpoint, adapting position encodings and classifier.

    Args:
        model: a freshly built network (its own initialisation is kept for re-initialised parts).
        arch: its name in ARCHITECTURES; a PaSST release is taken to have this arch's release strides.
        checkpoint: from :func:`read_pretrained` or :func:`read_checkpoint`; its contents tell its kind.
        origin: where it came from, for the log and errors.
        weights: for frito checkpoints, "swa", "plain", or "auto" (SWA when it holds an average).
    """
    weights_in = _source_weights(dict(checkpoint), arch, weights, model)
    fitted, summary = _fit(model, weights_in)
    model.load_state_dict(fitted, strict=True)
    logger.info("Pretrained weights for %s from %s (%s)\n%s", arch, origin, weights_in.description, summary)


def check_options(source: str = "audioset", weights: str = "auto") -> None:
    """Raise when ``pretrained_source`` or ``pretrained_weights`` is not an accepted name."""
    if source not in PRETRAINED_SOURCES:
        raise PretrainedError(
            f"models.net.pretrained_source={source!r} is not one of {sorted(PRETRAINED_SOURCES)} "
            f"({'; '.join(f'{name}: {what}' for name, what in PRETRAINED_SOURCES.items())})"
        )
    if weights not in CHECKPOINT_WEIGHTS:
        raise PretrainedError(f"pretrained weights choice {weights!r} is not one of {CHECKPOINT_WEIGHTS}")


def fetch_checkpoint(url: str, what: str) -> dict:
    """Read a checkpoint from the torch hub cache, downloading it there first if it is missing."""
    filename = os.path.basename(urlparse(url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        offline_fix = (
            f"Offline, fetch {url} on another machine and pass it with {PATH_KEY}=/path/to/{filename} "
            f"(or copy it to {cached}); or set models.net.pretrained=False to train from scratch."
        )
        host = urlparse(url).hostname
        try:
            socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as error:
            raise PretrainedError(f"cannot reach {host} to download the {what} ({error}). {offline_fix}") from error
        match = torch.hub.HASH_REGEX.search(filename)
        logger.info("Downloading the %s from %s to %s", what, url, cached)
        try:
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=match.group(1) if match else None)
        except (OSError, RuntimeError) as error:
            raise PretrainedError(f"downloading the {what} from {url} failed ({error}). {offline_fix}") from error
    try:
        return read_checkpoint(cached)
    except PretrainedError as error:
        raise PretrainedError(f"{error}. Delete the cached file {cached} to download it again.") from error


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file (torch pickle restricted to tensors and containers, or safetensors)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedError(f"pretrained checkpoint {path} does not exist; check {PATH_KEY}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint = load_file(str(path), device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if culprit:
            raise PretrainedError(
                f"{path} holds Python objects besides tensors and plain containers ({culprit.group(1)}), which "
                "are not loaded for safety. If you trust the file, load it with torch.load(..., weights_only=False) "
                "and re-save its tensors."
            ) from None
        raise PretrainedError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {error}") from None
    except (RuntimeError, EOFError, OSError, ValueError, LookupError, zipfile.BadZipFile) as error:
        raise PretrainedError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {error}") from None
    if not isinstance(checkpoint, Mapping):
        raise PretrainedError(f"{path} holds a {type(checkpoint).__name__}, not a state dict or checkpoint dict")
    return dict(checkpoint)


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


def adapt_freq_encodings(encodings: Tensor, n_rows: int) -> Tensor:
    """Stretch frequency encodings (1, E, rows, 1) to ``n_rows`` rows; first and last rows are kept."""
    return _interpolate(encodings, 2, _stretch_positions(encodings.shape[2], n_rows))


def adapt_time_encodings(encodings: Tensor, n_cols: int, source_stride: int, target_stride: int) -> Tensor:
    """Time encodings (1, E, 1, columns) of a checkpoint at ``source_stride`` for ``n_cols`` columns.

    Column j of the new model starts at frame j * target_stride, which is column
    j * target_stride / source_stride of the checkpoint: values are linearly interpolated there (at the
    same stride and with fewer columns this is a crop). When the new columns reach past the checkpoint's
    last one, the checkpoint's encodings are stretched over them instead (first and last kept).
    """
    n_source = encodings.shape[3]
    positions = torch.arange(n_cols, dtype=torch.float64) * (target_stride / source_stride)
    if positions[-1] > n_source - 1:
        positions = _stretch_positions(n_source, n_cols)
    return _interpolate(encodings, 3, positions)


def split_image_pos_grid(grid: Tensor, n_rows: int, n_cols: int) -> tuple[Tensor, Tensor]:
    """Image position grid (1, E, g, g) -> frequency (1, E, n_rows, 1) and time (1, E, 1, n_cols) encodings.

    The grid is resized bicubically (align_corners=False) to n_rows x n_cols; the frequency encodings are
    its means over time, the time encodings its means over frequency.
    """
    resized = F.interpolate(grid.float(), size=(n_rows, n_cols), mode="bicubic", align_corners=False)
    return resized.mean(dim=3, keepdim=True), resized.mean(dim=2, keepdim=True)


@dataclass
class _SourceWeights:
    """Checkpoint tensors renamed to the model's keys, before adaptation to its shapes.

    strides: (fstride, tstride) the position encodings were trained with; None when they are already
    at the model's grid (DeiT). adapted: notes on keys converted while renaming.
    """

    tensors: dict[str, Tensor]
    description: str
    strides: tuple[int, int] | None
    ignored: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)


def _source_weights(checkpoint: dict, arch: str, weights: str, model: PaSST) -> _SourceWeights:
    if is_frito_checkpoint(checkpoint):
        return _from_frito(checkpoint, weights)
    if "state_dict" in checkpoint:
        raise PretrainedError(
            "this Lightning checkpoint has no 'frito' entry, so it was not written by frito; pass a PaSST "
            "release, a DeiT state dict, or a frito checkpoint"
        )
    if isinstance(checkpoint.get("model"), Mapping):
        checkpoint = dict(checkpoint["model"])
    non_tensors = [key for key, value in checkpoint.items() if not isinstance(value, Tensor)]
    if non_tensors:
        raise PretrainedError(f"the checkpoint is not a state dict: entries {non_tensors[:5]} are not tensors")
    if "time_new_pos_embed" in checkpoint:
        return _from_release(checkpoint, arch)
    if "pos_embed" in checkpoint and "dist_token" in checkpoint:
        return _from_deit(checkpoint, model)
    raise PretrainedError(
        "unrecognised checkpoint: expected a PaSST release (time_new_pos_embed, freq_new_pos_embed, ...), "
        f"a distilled DeiT (pos_embed, dist_token, ...) or a frito checkpoint; its keys start {list(checkpoint)[:6]}"
    )


def _from_release(state: dict[str, Tensor], arch: str) -> _SourceWeights:
    spec = ARCHITECTURES[arch]
    tensors, ignored = {}, []
    for key, value in state.items():
        if key.startswith("head_dist."):
            ignored.append(key)
        else:
            tensors[_RELEASE_RENAMES.get(key, key)] = value
    description = f"PaSST release format, taken as trained with strides {spec.fstride}x{spec.tstride} of {arch}"
    return _SourceWeights(tensors, description, (spec.fstride, spec.tstride), ignored)


def _from_deit(state: dict[str, Tensor], model: PaSST) -> _SourceWeights:
    pos_embed = state["pos_embed"]
    grid_tokens = pos_embed.shape[1] - N_GLOBAL_TOKENS
    side = round(grid_tokens**0.5)
    if pos_embed.dim() != 3 or side * side != grid_tokens:
        raise PretrainedError(
            f"DeiT pos_embed of shape {tuple(pos_embed.shape)} is not {N_GLOBAL_TOKENS} tokens plus a square grid"
        )
    grid = pos_embed[:, N_GLOBAL_TOKENS:].reshape(1, side, side, -1).permute(0, 3, 1, 2)
    freq, time = split_image_pos_grid(grid, model.n_rows, model.n_cols)
    tensors, ignored = {}, []
    for key, value in state.items():
        if key.startswith(("head.", "head_dist.")):
            ignored.append(key)
        elif key != "pos_embed":
            tensors[key] = value
    in_channels = model.patch_embed.proj.in_channels
    tensors.update(
        global_pos_embed=pos_embed[:, :N_GLOBAL_TOKENS],
        freq_pos_embed=freq,
        time_pos_embed=time,
    )
    patch_weight = state["patch_embed.proj.weight"]
    tensors["patch_embed.proj.weight"] = adapt_input_conv(in_channels, patch_weight)
    grid_note = f"from pos_embed's {side}x{side} image grid, bicubic to {model.n_rows}x{model.n_cols}"
    adapted = {
        "global_pos_embed": "pos_embed's cls/dist entries",
        "freq_pos_embed": grid_note + ", mean over time",
        "time_pos_embed": grid_note + ", mean over frequency",
        "patch_embed.proj.weight": f"{patch_weight.shape[1]} image channels -> {in_channels} (timm adapt_input_conv)",
    }
    return _SourceWeights(tensors, f"ImageNet DeiT, {side}x{side} position grid", None, ignored, adapted)


def _from_frito(checkpoint: dict, weights: str) -> _SourceWeights:
    selected = frito_weights(checkpoint, weights)
    net = selected.meta["net"]
    strides = (int(net.get("fstride", 10)), int(net.get("tstride", 10)))
    description = (
        f"frito checkpoint, {selected.weights} weights of {net.get('arch')} rf_norm_t={net.get('rf_norm_t', '')!r}, "
        f"strides {strides[0]}x{strides[1]}"
    )
    return _SourceWeights(selected.state_dict, description, strides, _prefix_counts(selected.ignored))


def _fit(model: PaSST, source: _SourceWeights) -> tuple[dict[str, Tensor], str]:
    """The model's complete state dict from the source, with a summary of where each key came from."""
    expected = model.state_dict()
    unknown = [key for key in source.tensors if key not in expected]
    if unknown:
        hint = ""
        if any("_upper." in key for key in unknown):
            hint = " The checkpoint has high_low_branch weights: build the model with rf_norm_t='high_low_branch'."
        raise PretrainedError(
            f"the checkpoint has {len(unknown)} keys this model lacks: {_compact(unknown)[:6]}; it was trained "
            f"with another architecture (depth or attention form).{hint}"
        )
    fitted: dict[str, Tensor] = {}
    loaded, copied, reinitialised, missing, mismatched = [], [], [], [], []
    adapted = dict(source.adapted)
    fstride, tstride = model.patch_embed.proj.stride
    for key, current in expected.items():
        value = source.tensors.get(key)
        origin = key
        if value is None:
            origin = _branch_fallback(key)
            value = source.tensors.get(origin) if origin else None
        if value is None:
            if key.startswith("head."):
                fitted[key] = current
                reinitialised.append(f"{key} (not in the checkpoint)")
            else:
                missing.append(key)
            continue
        stride_changed = key == "time_pos_embed" and source.strides is not None and source.strides[1] != tstride
        if source.strides is not None and key in ("freq_pos_embed", "time_pos_embed") and (
            value.shape != current.shape or stride_changed
        ):
            value, note = _adapt_encodings(key, value, current, source.strides, (fstride, tstride))
            if note:
                adapted[key] = note
        if value.shape != current.shape and key in CLASSIFIER_KEYS and value.shape[1:] == current.shape[1:]:
            fitted[key] = current
            reinitialised.append(f"{key} ({value.shape[0]} classes in the checkpoint, {current.shape[0]} here)")
            continue
        if value.shape != current.shape:
            mismatched.append(f"{key}: checkpoint {tuple(value.shape)}, model {tuple(current.shape)}")
            continue
        fitted[key] = value.to(current.dtype)
        if origin != key:
            copied.append(key)
        elif key not in adapted:
            loaded.append(key)
    if missing or mismatched:
        problems = [f"shapes that differ: {mismatched[:6]}"] if mismatched else []
        if missing:
            problems.append(f"missing from the checkpoint: {_compact(missing)}")
        raise PretrainedError(
            "the checkpoint does not fit this model (" + "; ".join(problems) + "); check models.net.arch "
            "(embedding width, depth) and in_channels against the checkpoint's"
        )
    for key, note in adapted.items():
        if key in ("freq_pos_embed", "time_pos_embed") and source.strides is not None:
            logger.warning("Pretrained %s %s", key, note)
    if copied:
        logger.info("high_low_branch: the upper-half attention of every block starts from the block's attention")
    sections = [
        ("loaded", _compact(loaded)),
        ("adapted", [f"{key} ({note})" for key, note in adapted.items()]),
        ("copied from the same block's norm1/attn", _compact(copied)),
        ("re-initialised", reinitialised),
        ("ignored", _compact(source.ignored)),
    ]
    summary = "\n".join(f"  {title} ({len(items)}): {', '.join(items)}" for title, items in sections if items)
    return fitted, summary


def _adapt_encodings(
    key: str, value: Tensor, current: Tensor, strides: tuple[int, int], model_strides: tuple[int, int]
) -> tuple[Tensor, str]:
    if key == "freq_pos_embed":
        if value.shape[:2] != current.shape[:2] or value.shape[3] != 1:
            return value, ""
        adapted = adapt_freq_encodings(value, current.shape[2])
        return adapted, f"interpolated from {value.shape[2]} to {current.shape[2]} frequency rows"
    if value.shape[:3] != current.shape[:3]:
        return value, ""
    n_source, n_cols = value.shape[3], current.shape[3]
    source_stride, target_stride = strides[1], model_strides[1]
    adapted = adapt_time_encodings(value, n_cols, source_stride, target_stride)
    if (n_cols - 1) * target_stride > (n_source - 1) * source_stride:
        how = "stretched: the model covers more time than the checkpoint's encodings"
    elif source_stride == target_stride:
        how = "cropped to the first columns"
    else:
        how = "resampled at the new column positions"
    return adapted, (
        f"from {n_source} columns at time stride {source_stride} to {n_cols} columns at stride {target_stride}, {how}"
    )


def _prefix_counts(keys: tuple[str, ...]) -> list[str]:
    """Keys grouped by their first component: ["net_swa.* (38 keys)", "swa_n_averaged"]."""
    groups: dict[str, int] = {}
    for key in keys:
        head, dot, _ = key.partition(".")
        name = head + ".*" if dot else head
        groups[name] = groups.get(name, 0) + 1
    return [f"{name} ({count} keys)" if name.endswith("*") else name for name, count in groups.items()]


def _branch_fallback(key: str) -> str | None:
    for pattern, replacement in _BRANCH_FALLBACKS:
        if pattern.match(key):
            return pattern.sub(replacement, key)
    return None


def _stretch_positions(n_source: int, n_target: int) -> Tensor:
    if n_target == 1:
        return torch.zeros(1, dtype=torch.float64)
    return torch.arange(n_target, dtype=torch.float64) * ((n_source - 1) / (n_target - 1))


def _interpolate(values: Tensor, dim: int, positions: Tensor) -> Tensor:
    """Linear interpolation of ``values`` along ``dim`` at fractional indices ``positions``."""
    last = values.shape[dim] - 1
    positions = positions.clamp(0, last)
    lower = positions.floor().long().clamp(max=last)
    upper = (lower + 1).clamp(max=last)
    shape = [1] * values.dim()
    shape[dim] = -1
    weight = (positions - lower).view(shape)
    source = values.double()
    blended = source.index_select(dim, lower) * (1 - weight) + source.index_select(dim, upper) * weight
    return blended.to(values.dtype)


def _compact(keys: list[str]) -> list[str]:
    """Keys with per-block duplicates folded: blocks.0.attn.qkv.weight ... -> blocks.[0-11].attn.qkv.weight."""
    blocks: dict[str, list[int]] = {}
    order: list[str] = []
    for key in keys:
        match = _BLOCK_KEY.match(key)
        if match is None:
            order.append(key)
            continue
        rest = match.group(2)
        template = "blocks.{}." + rest
        if template not in blocks:
            blocks[template] = []
            order.append(template)
        blocks[template].append(int(match.group(1)))
    return [key if key not in blocks else key.format(_index_range(blocks[key])) for key in order]


def _index_range(indices: list[int]) -> str:
    indices = sorted(set(indices))
    if len(indices) == 1:
        return str(indices[0])
    if indices == list(range(indices[0], indices[-1] + 1)):
        return f"[{indices[0]}-{indices[-1]}]"
    return "[" + ",".join(map(str, indices)) + "]"
