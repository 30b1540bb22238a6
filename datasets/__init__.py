"""Datasets read from their real on-disk layouts into HDF5 caches.

One package per dataset (dcase20: TAU Urban Acoustic Scenes 2020 Mobile; dcase22: its 2022 release in 1 s
clips, with the DCASE 2024 subsets; nsynth: NSynth; folder: your own audio files and a CSV), each exporting
DEFAULTS (the experiments' `basedataset` config) and Data, which serves three roles: train_set(),
validation_set() (training domains only, for model selection) and test_set() (every domain, reported).
Shared parts: audio (decoding), cache (HDF5 files), locking (one process builds a file, others wait), base
(settings, roles, demo data, the torch Dataset), metadata (reading tables), synthesis (demo signals),
tau_mobile (the layout the TAU Mobile releases share). Caches are prepared with `python -m datasets.prepare
<dataset> ...` or on first use.
"""
