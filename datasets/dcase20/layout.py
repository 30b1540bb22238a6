"""TAU Urban Acoustic Scenes 2020 Mobile (development set) as downloaded from zenodo: its folder, record and
file names. The layout it shares with TAU 2022, and the validation locations, are read by datasets/tau_mobile.py.
"""

from datasets.tau_mobile import Release

DATASET_FOLDER = "TAU-urban-acoustic-scenes-2020-mobile-development"
RELEASE = Release(
    title="TAU Urban Acoustic Scenes 2020 Mobile",
    folder=DATASET_FOLDER,
    zenodo="https://zenodo.org/record/3819968",
    example="airport-barcelona-0-0-a.wav",
)
