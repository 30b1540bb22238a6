"""The data of a run as a LightningDataModule: caches prepared once per machine, and the loaders.

Lightning calls :meth:`AudioDataModule.prepare_data` in one process per machine (the dataset's HDF5
caches are built there, under the datasets' own per-file locks, so that concurrent runs never build one
twice) and :meth:`~AudioDataModule.setup` in every process, after the others have waited for it.

Three roles of data: the training loader, and two evaluation loaders, in this order: the validation split
(training domains only; the epoch is selected on it) and the test split (every domain; reported).

Loader worker processes ignore SIGTERM and SIGINT: sent to the whole process group (``timeout``, SLURM, Ctrl-C
in some shells), they would kill the workers mid-batch and end the training with "DataLoader worker ... is
killed by signal"; the training process alone handles them (it stops at the next batch, keeping last.ckpt)
and stops its workers itself.
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.utilities.seed import pl_worker_init_function
from pytorch_lightning.utilities import rank_zero_only
from torch.utils.data import DataLoader, Dataset

WaveformAugment = Callable[[np.ndarray, str], np.ndarray]


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

        ``waveform_methods``, none here, may be set before setup: the DG methods of the waveform place
        (helpers.augment.method), applied in order to each training example's waveform (e.g. device impulse
        responses) as (waveform (samples,) float32, its domain's name) -> waveform; they are made after the
        module, as they check the names of the data's domains. Validation and test clips never pass them.
        """
        super().__init__()
        self.data = dataset.Data(**settings, mel=dict(mel))
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.waveform_methods: Sequence[WaveformAugment] = ()
        self._sets: dict[str, Dataset] = {}

    @property
    def class_names(self) -> list[str]:
        return self.data.class_names

    @property
    def domain_names(self) -> list[str]:
        return self.data.domain_names

    @property
    def domain_kind(self) -> str | None:
        """What a domain is: "device", "instrument_source", ...; None for a dataset without domains."""
        return self.data.domain_kind

    @property
    def group_names(self) -> tuple[str, str] | tuple[()]:
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
            train = self.data.train_set()
            if self.waveform_methods:
                train = AugmentedWaveforms(train, self.waveform_methods, self.domain_names)
            self._sets["train"] = train
        self._sets["validation"] = self.data.validation_set()
        self._sets["test"] = self.data.test_set()

    def roles(self) -> dict[str, list[str]]:
        """Role ("train", "validation", "test") -> the file names it serves (after setup)."""
        return self.data.roles()

    def test_file_names(self) -> list[str]:
        """The test split's file names in its order, the order of its evaluated examples (after setup)."""
        return self._sets["test"].file_names()

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches. Its worker processes restart each epoch, seeded from the main process's
        generator: a resumed run (whose generators the checkpoint restores) then crops exactly as the
        uninterrupted one."""
        return self._loader(self._sets["train"], shuffle=True)

    def val_dataloader(self) -> list[DataLoader]:
        """The validation and the test split in order (helpers.results.selection.ROLES), workers kept between epochs."""
        return [self._loader(self._sets[role], shuffle=False, persistent_workers=self.num_workers > 0)
                for role in ("validation", "test")]

    def _loader(self, dataset: Dataset, **options) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, num_workers=self.num_workers,
                          pin_memory=torch.cuda.is_available(),
                          worker_init_fn=functools.partial(start_worker, rank=int(rank_zero_only.rank)), **options)


def start_worker(worker_id: int, rank: int) -> None:
    """A loader worker's start: SIGTERM and SIGINT left to the training process (see the module's docstring),
    and seeded as Lightning seeds the workers of a run seeded with workers=True (which it does only for loaders
    without a worker_init_fn of their own)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if int(os.environ.get("PL_SEED_WORKERS", 0)):
        pl_worker_init_function(worker_id, rank)


class AugmentedWaveforms(Dataset):
    """The items of a dataset with their waveform passed through ``methods`` in order (in the loader
    workers), each called with the item's domain name."""

    def __init__(self, dataset: Dataset, methods: Sequence[WaveformAugment], domain_names: Sequence[str]):
        self.dataset = dataset
        self.methods = list(methods)
        self.domain_names = list(domain_names)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        item = self.dataset[index]
        waveform, domain = item["waveform"].numpy(), self.domain_names[item["domain"]]
        for method in self.methods:
            waveform = method(waveform, domain)
        return {**item, "waveform": torch.as_tensor(waveform)}
