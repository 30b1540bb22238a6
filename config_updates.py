"""Named configs shared by the experiments: small diffs over an experiment's defaults.

``python ex_nsynth.py with cpu_tiny mini_train`` applies them in order; values given on the command line
win over them. ``print_named_configs`` lists each with its one-line docstring.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

from helpers.augment.registry import named_configs
from helpers.experiment.defaults import cpu_preset
from models.architectures import ARCHITECTURES


@dataclass(frozen=True)
class NamedConfig:
    """doc: the line print_named_configs shows; updates: the config diff."""

    doc: str
    updates: dict


def _net(**keys) -> dict:
    return {"models": {"net": keys}}


def _frito(rf_norm_t: str, what: str) -> NamedConfig:
    return NamedConfig(f"FRITO: rf_norm_t={rf_norm_t}, {what}", _net(rf_norm_t=rf_norm_t))


def _passt_s(arch: str, what: str) -> NamedConfig:
    spec = ARCHITECTURES[arch]  # its strides are the model's unless models.net.fstride/tstride are given
    return NamedConfig(f"PaSST-S {arch} (patch stride {spec.fstride}x{spec.tstride}; {what})", _net(arch=arch))


NAMED_CONFIGS: dict[str, NamedConfig] = {
    # the DG methods' own (mixup, nomixup, freq_mixstyle, dir, ...), as each method declares them
    **{name: NamedConfig(doc, updates) for name, (doc, updates) in named_configs().items()},
    "mini_train": NamedConfig("Only 5 training and 5 validation batches per epoch, for debugging.",
                              {"trainer": {"limit_train_batches": 5, "limit_val_batches": 5}}),
    "swa": NamedConfig("Stochastic weight averaging from epoch 2, evaluated beside the plain model.",
                       {"swa": True, "swa_epoch_start": 2, "swa_freq": 1}),
    "no_swa": NamedConfig("No stochastic weight averaging.", {"swa": False}),
    # FRITO forms of the paper's experiments
    "frito_row_overlap_8": _frito("row_overlap_8", "each row attends rows within 7 (TAU 2020)"),
    "frito_per_row_6": _frito("per_row_6", "clusters of 6 frequency rows"),
    "frito_high_low": _frito("high_low", "lower and upper half of the rows apart (NSynth)"),
    "frito_high_low_branch": _frito("high_low_branch", "halves apart, each with its own attention weights"),
    "frito_sparse_row_6": _frito("sparse_row_6", "clusters of 6 rows computed block by block (fast)"),
    # PaSST-S architectures of the original code
    "passt_s_ap476": _passt_s("passt_s_swa_p16_128_ap476", "AudioSet mAP .476 with SWA"),
    "passt_s_ap4761": _passt_s("passt_s_swa_p16_128_ap4761", "AudioSet mAP .4761 with SWA"),
    "passt_s_ap472": _passt_s("passt_s_p16_128_ap472", "AudioSet mAP .472"),
    "passt_s_p16_s16_128_ap468": _passt_s("passt_s_p16_s16_128_ap468", "no patch overlap, mAP .468"),
    "passt_s_swa_p16_s16_128_ap473": _passt_s("passt_s_swa_p16_s16_128_ap473", "no patch overlap, mAP .473 SWA"),
    "passt_s_swa_p16_s14_128_ap471": _passt_s("passt_s_swa_p16_s14_128_ap471", "mAP .471 with SWA"),
    "passt_s_p16_s14_128_ap469": _passt_s("passt_s_p16_s14_128_ap469", "mAP .469"),
    "passt_s_swa_p16_s12_128_ap473": _passt_s("passt_s_swa_p16_s12_128_ap473", "mAP .473 with SWA"),
    "passt_s_p16_s12_128_ap470": _passt_s("passt_s_p16_s12_128_ap470", "mAP .470"),
}


def cpu_tiny(dataset: ModuleType) -> NamedConfig:
    """The CPU preset for ``dataset`` (its clips no longer than the dataset's own), as a named config."""
    preset = cpu_preset(dataset)
    return NamedConfig(
        f"A small transformer ({preset['models']['net']['arch']}) on {preset['basedataset']['clip_length']:g} s "
        f"clips, {preset['trainer']['max_epochs']} epochs with a short schedule, lr {preset['lr']:g}, for a laptop "
        "CPU.",
        preset,
    )


def add_named_configs(ex, dataset: ModuleType) -> None:
    """Register every entry of NAMED_CONFIGS, and cpu_tiny for ``dataset`` (the package of datasets/ it trains
    on), on the Sacred experiment ``ex``."""
    for name, named in {**NAMED_CONFIGS, "cpu_tiny": cpu_tiny(dataset)}.items():
        ex.add_named_config(name, named.updates)
        ex.named_configs[name].__doc__ = named.doc
