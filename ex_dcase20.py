"""TAU Urban Acoustic Scenes 2020 Mobile: 10 acoustic scenes, domain = recording device.

Trains on devices a, b, c, s1-s3 and reports accuracy per device, seen against unseen (s4-s6).
Without basedataset.base_dir it trains on the bundled demo data with a CPU-sized preset.

    python ex_dcase20.py -F runs/ with models.net.rf_norm_t=row_overlap_8
"""

# Sacred reads the config scope's local variables as config entries:
# ruff: noqa: F841

import os
import warnings

warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)  # raised by importing sacred 0.8.7

from sacred import Experiment  # noqa: E402

from config_updates import add_named_configs  # noqa: E402
from datasets import dcase20  # noqa: E402
from helpers.experiment.commands import add_commands  # noqa: E402
from helpers.experiment.defaults import add_config  # noqa: E402


def default_config(trainer):
    """Defaults of the original FRITO TAU 2020 experiment; the demo preset without a dataset folder."""
    basedataset = dict(dcase20.DEFAULTS, clip_length=10.0)  # dataset options (datasets/dcase20/README.md)
    trainer = dict(trainer, max_epochs=10)
    lr = 1e-5  # AdamW's base learning rate
    weight_decay = 1e-4  # AdamW's decoupled weight decay
    mixup_p = 1.0  # every training batch mixed (mixup; the paper's use_mixup=True)
    batch_size = 64
    num_workers = min(16, os.cpu_count() or 1)  # data loading processes (0: in the training process)
    warm_up_len = 5  # epochs of warm-up
    ramp_down_start = 50  # last epoch at the full learning rate
    ramp_down_len = 50  # epochs of the linear ramp-down
    last_lr_value = 0.01  # factor of lr after the ramp-down
    swa_epoch_start = 2  # first epoch averaged, counted from 0 as in PaSST's recipes: 'epoch 3' in the output


def experiment(name: str = "dcase20") -> Experiment:
    """The TAU 2020 experiment (the development set: trained on its train split, selected and reported on its
    evaluate split) as a Sacred Experiment called ``name``: ex_dcase20_dev.py, the original FRITO file name,
    is this experiment under the name "dcase20_dev"."""
    ex = Experiment(name)
    add_config(ex, DATASET, default_config)
    add_commands(ex, DATASET)
    add_named_configs(ex, DATASET)
    return ex


DATASET = dcase20  # the package of datasets/ it trains on (helpers.api reads it)
ex = experiment()

if __name__ == "__main__":
    ex.run_commandline()
