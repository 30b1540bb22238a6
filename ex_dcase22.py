"""TAU Urban Acoustic Scenes 2022 Mobile: 10 acoustic scenes in 1 s clips, domain = recording device.

Trains on devices a, b, c, s1-s3 and reports accuracy per device, seen against unseen (s4-s6); the DCASE 2024
Task 1 subsets train on a published share of the training split (basedataset.split_csv). Without
basedataset.base_dir it trains on the bundled demo data with a CPU-sized preset.

    python ex_dcase22.py -F runs/ with basedataset.base_dir=/data/tau2022 basedataset.split_csv=split_setup/split25.csv
"""

# Sacred reads the config scope's local variables as config entries:
# ruff: noqa: F841

import os
import warnings

warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)  # raised by importing sacred 0.8.7

from sacred import Experiment  # noqa: E402

from config_updates import add_named_configs  # noqa: E402
from datasets import dcase22  # noqa: E402
from helpers.experiment.commands import add_commands  # noqa: E402
from helpers.experiment.defaults import add_config  # noqa: E402


def default_config(trainer):
    """The FRITO TAU 2020 recipe on TAU 2022's 1 s clips (the clip length, and with it the network's input length
    and patch grid, follow the data); the demo preset without a dataset folder."""
    basedataset = dict(dcase22.DEFAULTS)  # dataset options (datasets/dcase22/README.md)
    trainer = dict(trainer, max_epochs=10)
    lr = 1e-5  # AdamW's base learning rate
    weight_decay = 1e-4  # AdamW's decoupled weight decay
    mixup_p = 1.0  # every training batch mixed (mixup)
    batch_size = 64
    num_workers = min(16, os.cpu_count() or 1)  # data loading processes (0: in the training process)
    warm_up_len = 5  # epochs of warm-up
    ramp_down_start = 50  # last epoch at the full learning rate
    ramp_down_len = 50  # epochs of the linear ramp-down
    last_lr_value = 0.01  # factor of lr after the ramp-down
    swa_epoch_start = 2  # first epoch averaged, counted from 0 as in PaSST's recipes: 'epoch 3' in the output


DATASET = dcase22  # the package of datasets/ it trains on (helpers.api reads it)
ex = Experiment("dcase22")
add_config(ex, DATASET, default_config)
add_commands(ex, DATASET)
add_named_configs(ex, DATASET)

if __name__ == "__main__":
    ex.run_commandline()
