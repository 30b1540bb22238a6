"""PaSST, the model: ``from models.passt import get_model`` as in the code of PaSST, FRITO and hear21passt.

``get_model`` builds a PaSST network from an architecture name and the original FRITO code's keywords, so
``models.net.<key>=...`` command lines carry over; the architecture (:mod:`models.architectures`) supplies the
transformer size and the default patch strides. The network's modules live in :mod:`models.transformer`;
this module exposes them under the names the original code uses (``PaSST``, ``PatchEmbed``, ``Block``).
"""

from __future__ import annotations

from models.architectures import architecture
from models.patterns import parse_rf_norm_t
from models.pretrained import check_source, load_pretrained, read_pretrained
from models.transformer import N_GLOBAL_TOKENS, PATCH_SIZE, Block, PaSST, PatchEmbed, patch_grid
from models.weight_files import PretrainedError

__all__ = ["get_model", "PaSST", "PatchEmbed", "Block", "patch_grid", "PATCH_SIZE", "N_GLOBAL_TOKENS"]


def get_model(
    arch: str = "passt_s_swa_p16_128_ap476",
    pretrained: bool = False,
    n_classes: int = 527,
    in_channels: int = 1,
    fstride: int | None = None,
    tstride: int | None = None,
    input_fdim: int = 128,
    input_tdim: int = 998,
    u_patchout: int = 0,
    s_patchout_t: int = 0,
    s_patchout_f: int = 0,
    rf_norm_t: str = "",
    attention_impl: str = "auto",
    pretrained_path: str | None = None,
    pretrained_source: str = "audioset",
) -> PaSST:
    """Build a PaSST network.

    Args:
        arch: a name in models.architectures.ARCHITECTURES (transformer width, depth, heads, strides).
        pretrained: start from pretrained weights (see models.pretrained): the arch's AudioSet release,
            downloaded once into the torch hub cache, or the file pretrained_path.
        n_classes: classifier outputs.
        in_channels: spectrogram channels (1 for a log-mel spectrogram).
        fstride, tstride: patch strides along frequency (mel bins) and time (frames); None: the arch's own.
        input_fdim, input_tdim: mel bins and frames of the longest input; sizes the positional encodings.
        u_patchout: patch tokens dropped at random while training (unstructured patchout).
        s_patchout_t, s_patchout_f: time columns / frequency rows of the patch grid dropped while training.
        rf_norm_t: frequency restriction of attention ("" for none; see models.patterns.ACCEPTED_FORMS).
        attention_impl: execution of the restriction: "auto" (the dense masked call or the block-sparse
            executor, whichever models.sparse_choice models faster for the input), "sparse", "masked" or "flex"
            (FlexAttention; no CPU training, no attention dropout; see models.attention.RESTRICTED_EXECUTORS).
        pretrained_path: a local checkpoint to start from (the offline route): a PaSST release or an
            ImageNet DeiT state dict; its contents tell which.
        pretrained_source: what to download without pretrained_path: "audioset" or "imagenet" (DeiT).
    """
    spec = architecture(arch)
    pattern = parse_rf_norm_t(rf_norm_t)
    check_source(pretrained_source)
    if pretrained_path is not None and not pretrained:
        raise PretrainedError(
            f"models.net.pretrained_path={pretrained_path!r} is set but models.net.pretrained=False: set "
            "pretrained=True to start from that file, or drop pretrained_path to train from scratch"
        )
    checkpoint, origin = read_pretrained(arch, pretrained_source, pretrained_path) if pretrained else (None, "")
    model = PaSST(
        n_classes=n_classes,
        in_channels=in_channels,
        fstride=spec.fstride if fstride is None else fstride,
        tstride=spec.tstride if tstride is None else tstride,
        input_fdim=input_fdim,
        input_tdim=input_tdim,
        embed_dim=spec.embed_dim,
        depth=spec.depth,
        num_heads=spec.num_heads,
        u_patchout=u_patchout,
        s_patchout_t=s_patchout_t,
        s_patchout_f=s_patchout_f,
        pattern=pattern,
        attention_impl=attention_impl,
    )
    if checkpoint is not None:
        load_pretrained(model, arch, checkpoint, origin)
    return model
