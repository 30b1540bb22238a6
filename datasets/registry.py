"""The datasets by name: the packages of datasets/ that ``python -m datasets.prepare`` and the benchmarks can
name. A new dataset is its folder (datasets/<name>/) plus one entry here and its experiment (ex_<name>.py)."""

from datasets import dcase20, esc50, folder, nsynth

DATASETS = {"dcase20": dcase20, "esc50": esc50, "folder": folder, "nsynth": nsynth}
