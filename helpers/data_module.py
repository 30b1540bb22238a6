"""The data of a run as a LightningDataModule: caches prepared once per machine, and the loaders.

Lightning calls :meth:`AudioDataModule.prepare_data` in one process per machine (the dataset's HDF5
caches are built there, under the datasets' own per-file locks, so that concurrent runs never build one
twice) and :meth:`~AudioDataModule.setup` in every process, after the others have waited for it.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import ModuleType
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset


class AudioDataModule(pl.LightningDataModule):
    """A dataset of ``datasets/`` with the batch size and loader processes of a run.

    The dataset is read from its folder (its layout: files, classes, domains) when the module is made, so
    its classes are known before any cache is built; the audio is decoded into caches by prepare_data.
    """

    def __init__(self, dataset: ModuleType, settings: Mapping[str, Any], mel: Mapping[str, Any], batch_size: int,
                 num_workers: int):
        """
        dataset: a package of datasets/ (its Data reads the dataset's folder).
        settings: the ``basedataset`` config (keywords of the package's Data).
        mel: the front-end's settings (the spectrogram cache format stores its output).
        batch_size: examples per batch of every loader; num_workers: loader processes (0: this process).
        """
        super().__init__()
        self.data = dataset.Data(**settings, mel=dict(mel))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self._sets: dict[str, Dataset] = {}

    @property
    def class_names(self) -> list[str]:
        return self.data.class_names

    @property
    def domain_names(self) -> list[str]:
        return self.data.domain_names

    @property
    def domain_kind(self) -> str:
        """What a domain is: "device", "instrument_source", ..."""
        return self.data.domain_kind

    @property
    def group_names(self) -> tuple[str, str]:
        """How reports name the domains trained on, and the others."""
        return self.data.group_names

    @property
    def seen_domains(self) -> list[str]:
        """The domains of the training data; the others are reported as unseen."""
        return self.data.seen_domains

    def prepare_data(self) -> None:
        self.data.prepare()

    def setup(self, stage: str) -> None:
        if stage == "fit":
            self._sets["train"] = self.data.train_set()
        self._sets["eval"] = self.data.eval_set()

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches. Its worker processes restart each epoch, seeded from the main process's
        generator: a resumed run (whose generators the checkpoint restores) then crops exactly as the
        uninterrupted one."""
        return self._loader(self._sets["train"], shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """The evaluation split in order, with workers kept between epochs."""
        return self._loader(self._sets["eval"], shuffle=False, persistent_workers=self.num_workers > 0)

    def _loader(self, dataset: Dataset, **options) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(), **options)
