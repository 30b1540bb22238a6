"""Converting published weights to frito's PaSST parameter names: PaSST releases and ImageNet DeiT.

Each converter turns a state dict into :class:`NetworkWeights`: tensors under the names of
:class:`models.transformer.PaSST`, with the patch strides their position encodings were trained at, the keys
that have no counterpart (ignored) and notes on keys converted on the way. :func:`network_weights` tells
the kind of a checkpoint by its contents. Fitting the result to a model of other shapes is
:mod:`models.pretrained`'s work.

- a PaSST AudioSet release (the original code's timm-style keys: ``new_pos_embed``,
  ``freq_new_pos_embed``, ``time_new_pos_embed``, ``head.0``/``head.1``, ``head_dist``): renamed; the
  distillation head (``head_dist``) has no counterpart, since the model classifies the mean of the cls
  and dist tokens with ``head``;
- an ImageNet DeiT (``deit_base_distilled_patch16_384`` in timm's naming; FB's ``{"model": ...}``
  wrapper accepted): its RGB patch weights are summed to the spectrogram's channel, and its square
  position grid is resized to the spectrogram's patch grid and split into frequency (mean over time)
  and time (mean over frequency) encodings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch.nn.functional as F
from timm.models import adapt_input_conv
from torch import Tensor

from models.architectures import architecture
from models.transformer import N_GLOBAL_TOKENS, PaSST
from models.weight_files import PretrainedError

_RELEASE_RENAMES = {
    "new_pos_embed": "global_pos_embed",
    "freq_new_pos_embed": "freq_pos_embed",
    "time_new_pos_embed": "time_pos_embed",
}


@dataclass
class NetworkWeights:
    """Checkpoint tensors under the model's key names, before they are fitted to its shapes.

    tensors: key -> tensor; description: what they are, for the log.
    strides: (fstride, tstride) the position encodings were trained with; None when they are already
        laid out on the model's grid (DeiT).
    ignored: keys of the checkpoint that were left out; adapted: notes on keys converted while renaming.
    """

    tensors: dict[str, Tensor]
    description: str
    strides: tuple[int, int] | None
    ignored: list[str] = field(default_factory=list)
    adapted: dict[str, str] = field(default_factory=dict)


def network_weights(checkpoint: Mapping, arch: str, model: PaSST) -> NetworkWeights:
    """The weights of a PaSST release or a DeiT state dict, told apart by their keys."""
    checkpoint = dict(checkpoint)
    if "state_dict" in checkpoint:
        raise PretrainedError(
            "this is a Lightning checkpoint, not a PaSST release or DeiT state dict. A checkpoint written by "
            "frito is read by the experiments (models.net.pretrained_path=...) or, in Python, by "
            "helpers.checkpoint.read_checkpoint(path).network_weights()"
        )
    if isinstance(checkpoint.get("model"), Mapping):
        checkpoint = dict(checkpoint["model"])
    non_tensors = [key for key, value in checkpoint.items() if not isinstance(value, Tensor)]
    if non_tensors:
        raise PretrainedError(f"the checkpoint is not a state dict: entries {non_tensors[:5]} are not tensors")
    if "time_new_pos_embed" in checkpoint:
        return from_passt_release(checkpoint, arch)
    if "pos_embed" in checkpoint and "dist_token" in checkpoint:
        return from_deit(checkpoint, model)
    raise PretrainedError(
        "unrecognised checkpoint: expected a PaSST release (time_new_pos_embed, freq_new_pos_embed, ...), "
        f"a distilled DeiT (pos_embed, dist_token, ...) or a frito checkpoint; its keys start {list(checkpoint)[:6]}"
    )


def from_passt_release(state: Mapping[str, Tensor], arch: str) -> NetworkWeights:
    """A PaSST AudioSet release, taken as trained with the strides of ``arch``'s release."""
    spec = architecture(arch)
    tensors, ignored = {}, []
    for key, value in state.items():
        if key.startswith("head_dist."):
            ignored.append(key)
        else:
            tensors[_RELEASE_RENAMES.get(key, key)] = value
    description = f"PaSST release format, taken as trained with strides {spec.fstride}x{spec.tstride} of {arch}"
    return NetworkWeights(tensors, description, (spec.fstride, spec.tstride), ignored)


def from_deit(state: Mapping[str, Tensor], model: PaSST) -> NetworkWeights:
    """A distilled DeiT, its image position grid resized to ``model``'s patch grid."""
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
    return NetworkWeights(tensors, f"ImageNet DeiT, {side}x{side} position grid", None, ignored, adapted)


def split_image_pos_grid(grid: Tensor, n_rows: int, n_cols: int) -> tuple[Tensor, Tensor]:
    """Image position grid (1, E, g, g) -> frequency (1, E, n_rows, 1) and time (1, E, 1, n_cols) encodings.

    The grid is resized bicubically (align_corners=False) to n_rows x n_cols; the frequency encodings are
    its means over time, the time encodings its means over frequency.
    """
    resized = F.interpolate(grid.float(), size=(n_rows, n_cols), mode="bicubic", align_corners=False)
    return resized.mean(dim=3, keepdim=True), resized.mean(dim=2, keepdim=True)
