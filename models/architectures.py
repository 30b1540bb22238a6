"""The architectures frito builds: transformer size and the patch strides each was trained with.

Each entry of :data:`ARCHITECTURES` is all that distinguishes one architecture: a new one is one entry.
The PaSST-S entries are the AudioSet releases of the original PaSST code (names as there); their
strides are the defaults of a model built from them (``models.net.fstride``/``tstride`` override them)
and tell how the release's position encodings are laid out.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class ArchSpec:
    """An architecture: transformer width, depth and heads, the patch strides along frequency (mel bins) and
    time (frames) its release was trained with, and where its AudioSet weights are published ("" for none)."""

    embed_dim: int
    depth: int
    num_heads: int
    fstride: int = 10
    tstride: int = 10
    url: str = ""


_RELEASES = "https://github.com/kkoutini/PaSST/releases/download/"


def _passt_s(url: str, stride: int = 10) -> ArchSpec:
    return ArchSpec(768, 12, 12, stride, stride, _RELEASES + url)


ARCHITECTURES: dict[str, ArchSpec] = {
    # PaSST-S (AudioSet releases of the original PaSST code)
    "passt_s_swa_p16_128_ap476": _passt_s("v0.0.1-audioset/passt-s-f128-p16-s10-ap.476-swa.pt"),
    "passt_s_swa_p16_128_ap4761": _passt_s("v0.0.2-audioset/passt-s-f128-p16-s10-ap.4761-swa.pt"),
    "passt_s_p16_128_ap472": _passt_s("v0.0.2-audioset/passt-s-f128-p16-s10-ap.472.pt"),
    "passt_s_p16_s16_128_ap468": _passt_s("v0.0.2-audioset/passt-s-f128-p16-s16-ap.468.pt", 16),
    "passt_s_swa_p16_s16_128_ap473": _passt_s("v0.0.2-audioset/passt-s-f128-p16-s16-ap.473-swa.pt", 16),
    "passt_s_swa_p16_s14_128_ap471": _passt_s("v0.0.2-audioset/passt-s-f128-p16-s14-ap.471-swa.pt", 14),
    "passt_s_p16_s14_128_ap469": _passt_s("v0.0.2-audioset/passt-s-f128-p16-s14-ap.469.pt", 14),
    "passt_s_swa_p16_s12_128_ap473": _passt_s("v0.0.2-audioset/passt-s-f128-p16-s12-ap.473-swa.pt", 12),
    "passt_s_p16_s12_128_ap470": _passt_s("v0.0.2-audioset/passt-s-f128-p16-s12-ap.470.pt", 12),
    "passt_s_swa_f128_stfthop100_p16_s10_ap473": _passt_s(
        "v0.0.3-audioset/passt-s-f128-stfthop100-p16-s10-ap.473-swa.pt"),
    "passt_s_swa_f128_stfthop160_p16_s10_ap473": _passt_s(
        "v0.0.3-audioset/passt-s-f128-stfthop160-p16-s10-ap.473-swa.pt"),
    "passt_s_f128_20sec_p16_s10_ap474_swa": _passt_s("v0.0.5/passt-s-f128-20sec-p16-s10-ap.474-swa.pt"),
    "passt_s_f128_30sec_p16_s10_ap473_swa": _passt_s("v0.0.5/passt-s-f128-30sec-p16-s10-ap.473-swa.pt"),
    # Small transformers that train on a laptop CPU (no published weights)
    "passt_tiny": ArchSpec(192, 4, 3),
    "passt_mini": ArchSpec(96, 2, 2),
}


def architecture(name: str) -> ArchSpec:
    """The spec of ``name``; ValueError naming the closest known architecture otherwise."""
    if name not in ARCHITECTURES:
        matches = difflib.get_close_matches(str(name), list(ARCHITECTURES), n=1, cutoff=0.6)
        hint = f" Did you mean {matches[0]!r}?" if matches else ""
        raise ValueError(f"Unknown arch {name!r}.{hint} Known architectures: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
