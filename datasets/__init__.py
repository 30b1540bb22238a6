"""Datasets read from their real on-disk layouts into HDF5 caches.

One package per dataset (dcase20: TAU Urban Acoustic Scenes 2020 Mobile; nsynth: NSynth), each exporting
DEFAULTS (the experiments' `basedataset` config) and Data. Shared parts: audio (decoding), cache (HDF5
files), base (settings, demo data, the torch Dataset), metadata (reading tables), synthesis (demo signals).
Caches are prepared with `python -m datasets.prepare <dataset> ...` or on first use.
"""
