"""TAU Urban Acoustic Scenes 2022 Mobile (development set) as downloaded from zenodo: its folder, record and
file names. It is TAU 2020 Mobile's layout (read by datasets/tau_mobile.py) with every 10 s file cut into ten
1 s files, audio/<scene>-<city>-<location>-<segment>-<part 0-9>-<device>.wav."""

from datasets.tau_mobile import Release

DATASET_FOLDER = "TAU-urban-acoustic-scenes-2022-mobile-development"
SUBSETS_FOLDER = "split_setup"  # where the DCASE 2024 Task 1 baseline keeps the subsets' CSVs, and the demo too
RELEASE = Release(
    title="TAU Urban Acoustic Scenes 2022 Mobile",
    folder=DATASET_FOLDER,
    zenodo="https://zenodo.org/record/6337421",
    example="airport-barcelona-0-0-0-a.wav",
    optional=f"{SUBSETS_FOLDER}/              optional: DCASE 2024 Task 1 subsets split5.csv ... split100.csv",
)
