"""Device impulse responses (Morocutti et al., EUSIPCO 2023) as a method of the waveform place.

The convolution, and reading and checking the impulse response files, are data code
(datasets.impulse_responses.ImpulseResponseAugment); this module declares the method's settings and builds
it for a run, checking its domains against the training data before any cache is built.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from datasets.impulse_responses import ImpulseResponseAugment
from helpers.augment.method import Method, Place, RunContext, Setting
from helpers.setting_kinds import FOLDER, NAMES, PROBABILITY


class DeviceImpulseResponses(Method):
    """Training clips convolved with a random impulse response of ``dir_folder`` with probability dir_p."""

    name = "dir"
    place = Place.WAVEFORM
    settings = {
        "p": Setting(0.0, PROBABILITY, "probability a training clip is convolved with a device impulse response "
                     "from dir_folder; 0: off"),
        "folder": Setting(None, FOLDER, "folder of impulse response audio files (wav/flac/ogg/mp3, searched "
                          "recursively)"),
        "domains": Setting(None, NAMES, "domains whose training clips are convolved, e.g. [\"a\"] (the reference "
                           "device); None: all"),
    }
    named_configs = {"dir": (
        "Device impulse response augmentation, p 0.6 (Morocutti et al. 2023); needs dir_folder=FOLDER.",
        {"dir_p": 0.6})}

    @classmethod
    def build(cls, settings: Mapping[str, Any], context: RunContext) -> ImpulseResponseAugment:
        """The augmentation with every impulse response read (unusable files raise BadFilesError), its
        domains checked against the training data's."""
        dataset = context.dataset
        augment = ImpulseResponseAugment(settings["folder"], context.sample_rate, settings["p"], settings["domains"],
                                         dataset["skip_bad_files"], dataset["resample_quality"])
        augment.check_domains(context.seen_domains, context.domain_kind)
        return augment

    @classmethod
    def check(cls, settings: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        """A folder to read from, and waveform caches (the convolution needs audio)."""
        if not settings["folder"]:
            raise ValueError(f"dir_p={settings['p']} needs dir_folder=/path/to/impulse_responses (a folder of IR "
                             "audio files); the MicIRP collection of the paper is not bundled")
        if config["basedataset"].get("cache_format") == "spectrogram":
            raise ValueError("dir_p > 0 convolves training waveforms, but basedataset.cache_format='spectrogram' "
                             "caches log-mel frames; use cache_format='waveform' (the default) with impulse responses")
