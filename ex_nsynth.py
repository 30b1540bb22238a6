"""NSynth: 10 instrument families, domain = instrument source (acoustic, electronic, synthetic).

Trains on acoustic instruments and reports accuracy per source, in-domain (acoustic) against
out-of-domain (electronic, synthetic). Without basedataset.base_dir it trains on the bundled demo data
with a CPU-sized preset.

    python ex_nsynth.py -F runs/ with models.net.rf_norm_t=high_low
"""

# Sacred reads the config scope's local variables as config entries:
# ruff: noqa: F841

import os
import warnings

warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)  # raised by importing sacred 0.8.7

from sacred import Experiment  # noqa: E402

from config_updates import add_named_configs  # noqa: E402
from datasets import nsynth  # noqa: E402
from helpers.experiment.commands import add_commands  # noqa: E402
from helpers.experiment.defaults import add_config  # noqa: E402


def default_config(models, trainer):
    """Defaults of the original FRITO NSynth experiment; the demo preset without a dataset folder."""
    basedataset = dict(  # dataset options (datasets/nsynth/README.md)
        nsynth.DEFAULTS,
        clip_length=4.0,
        train_domains=["acoustic"],  # as the original: trained on acoustic instruments, tested on all sources
    )
    models = dict(
        models,
        mel=dict(models["mel"], fmin_aug_range=0, fmax_aug_range=0),  # no filterbank jitter
    )
    trainer = dict(trainer, max_epochs=128)
    lr = 1e-3  # AdamW's base learning rate
    weight_decay = 0.0  # AdamW's decoupled weight decay (the original used Adam without it)
    specaugment_p = 0.0  # no SpecAugment masks
    batch_size = 8
    num_workers = min(8, os.cpu_count() or 1)  # data loading processes (0: in the training process)
    warm_up_len = 100  # epochs of warm-up
    ramp_down_start = 250  # last epoch at the full learning rate
    ramp_down_len = 400  # epochs of the linear ramp-down
    last_lr_value = 0.005  # factor of lr after the ramp-down
    swa_epoch_start = 2  # first epoch averaged, counted from 0 as in PaSST's recipes: 'epoch 3' in the output


DATASET = nsynth  # the package of datasets/ it trains on (helpers.api reads it)
ex = Experiment("nsynth")
add_config(ex, DATASET, default_config)
add_commands(ex, DATASET)
add_named_configs(ex, DATASET)

if __name__ == "__main__":
    ex.run_commandline()
