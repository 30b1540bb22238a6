"""Starting a PaSST from pretrained weights: fetching them, and fitting them to the model being built.

:func:`read_pretrained` gets the checkpoint of an architecture (a local file, or the published release
downloaded once into the torch hub cache: :mod:`models.weight_files`) and :func:`load_pretrained` fills a
freshly built :class:`models.transformer.PaSST` from it; ``get_model(pretrained=True)`` calls both, reading
before building. What the checkpoint holds is converted to the model's key names by
:mod:`models.conversion` (PaSST releases, ImageNet DeiT); other sources (a checkpoint written by frito,
read by helpers.checkpoint) hand :func:`fit_weights` their :class:`~models.conversion.NetworkWeights`.

Adaptation to the model being built: frequency encodings are stretched (linear interpolation, first and
last rows kept) to another number of patch rows; time encodings keep each column's frame position,
so at the checkpoint's stride fewer columns are a crop and another stride is a resampling, while more
time than the checkpoint covers is a stretch of its encodings; the classifier output is re-initialised
when the number of classes differs. The upper-half attention of ``high_low_branch`` starts from the
same block's attention when the checkpoint has none. Every key is listed once in a logged summary;
anything else that does not fit is an error, never a partial load.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

import torch
from timm.models import get_pretrained_cfg
from torch import Tensor

from models.architectures import ARCHITECTURES, architecture
from models.conversion import NetworkWeights, network_weights
from models.transformer import PaSST
from models.weight_files import PATH_KEY, PretrainedError, cached_path, fetch_checkpoint, read_checkpoint

logger = logging.getLogger(__name__)

DEIT_ARCH = "deit_base_distilled_patch16_384"
PRETRAINED_SOURCES = {
    "audioset": "the arch's PaSST AudioSet release",
    "imagenet": f"ImageNet {DEIT_ARCH} (timm)",
}
CLASSIFIER_KEYS = ("head.1.weight", "head.1.bias")

_BRANCH_FALLBACKS = ((re.compile(r"^(blocks\.\d+)\.norm1_upper\."), r"\1.norm1."),
                     (re.compile(r"^(blocks\.\d+)\.attn_upper\."), r"\1.attn."))
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def read_pretrained(arch: str, source: str = "audioset", path: str | os.PathLike | None = None) -> tuple[dict, str]:
    """The checkpoint to start ``arch`` from, and where it came from (a path or URL).

    Args:
        arch: a name in models.architectures.ARCHITECTURES; names the AudioSet release to download.
        source: what to download when ``path`` is None: "audioset" (the arch's release, into the torch hub
            cache) or "imagenet" (DeiT, timm's URL for it). A file's own contents decide its kind.
        path: a local checkpoint (``models.net.pretrained_path``), the offline route.
    """
    check_source(source)
    if path is not None:
        return read_checkpoint(path), str(path)
    if source == "audioset":
        url = architecture(arch).url
        if not url:
            raise PretrainedError(
                f"arch {arch!r} has no published pretrained weights; set {PATH_KEY}=FILE to a checkpoint of "
                "the same width and depth, or models.net.pretrained=False to train from scratch"
            )
        return fetch_checkpoint(url, f"AudioSet weights of {arch!r}"), url
    url = get_pretrained_cfg(DEIT_ARCH).url
    return fetch_checkpoint(url, f"ImageNet weights of {DEIT_ARCH}"), url


def release_is_cached(arch: str) -> bool:
    """Whether the AudioSet release of ``arch`` is on this machine already (in the torch hub cache), so that
    starting from it needs no download; False for an arch without a release or an unknown one."""
    return arch in ARCHITECTURES and bool(ARCHITECTURES[arch].url) and cached_path(ARCHITECTURES[arch].url).is_file()


def load_pretrained(model: PaSST, arch: str, checkpoint: Mapping, origin: str = "checkpoint") -> None:
    """Fill ``model``'s parameters from a PaSST release or DeiT checkpoint, adapting position encodings and
    classifier.

    Args:
        model: a freshly built network (its own initialisation is kept for re-initialised parts).
        arch: its name in ARCHITECTURES; a PaSST release is taken to have this arch's release strides.
        checkpoint: from :func:`read_pretrained`; its contents tell its kind.
        origin: where it came from, for the log and errors.
    """
    fit_weights(model, network_weights(checkpoint, arch, model), f"{arch} from {origin}")


def fit_weights(model: PaSST, weights: NetworkWeights, origin: str) -> None:
    """Fill ``model`` from ``weights``, adapting position encodings and classifier (see the module
    docstring); logs a summary of every key, naming ``origin``."""
    fitted, summary = _fit(model, weights)
    model.load_state_dict(fitted, strict=True)
    logger.info("Pretrained weights for %s (%s)\n%s", origin, weights.description, summary)


def check_source(source: str) -> None:
    """Raise when ``pretrained_source`` is not an accepted name."""
    if source not in PRETRAINED_SOURCES:
        raise PretrainedError(
            f"models.net.pretrained_source={source!r} is not one of {sorted(PRETRAINED_SOURCES)} "
            f"({'; '.join(f'{name}: {what}' for name, what in PRETRAINED_SOURCES.items())})"
        )


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



def _fit(model: PaSST, source: NetworkWeights) -> tuple[dict[str, Tensor], str]:
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
