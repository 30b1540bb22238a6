"""Your own dataset: a folder of audio files and a CSV of filename, label, and optionally domain and split.

Reports accuracy per domain (the CSV's domain column), seen against unseen when basedataset.train_domains
leaves some out. The classes are the CSV's labels. There is no demo data: basedataset.base_dir
is required (see datasets/folder/README.md for the CSV format). PaSST-S is fine-tuned from its AudioSet weights
when they are on this machine (the torch hub cache); else it trains from scratch, with a warning before
training: models.net.pretrained=True downloads them once.

    python ex_folder.py -F runs/ with basedataset.base_dir=/data/mine models.net.pretrained=True
"""

# Sacred reads the config scope's local variables as config entries:
# ruff: noqa: F841

import os
import warnings

warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)  # raised by importing sacred 0.8.7

from sacred import Experiment  # noqa: E402

from config_updates import add_named_configs  # noqa: E402
from datasets import folder  # noqa: E402
from helpers.experiment.commands import add_commands  # noqa: E402
from helpers.experiment.defaults import add_config  # noqa: E402
from models.pretrained import release_is_cached  # noqa: E402


def default_config(models, trainer):
    """Fine-tuning defaults for a dataset of your own: PaSST-S from its AudioSet weights when they are here."""
    # net.pretrained: True when the arch's AudioSet weights are in the torch hub cache, or pretrained_path is given
    models = dict(models, net=dict(models["net"], pretrained=models["net"]["pretrained_path"] is not None
                                   or release_is_cached(models["net"]["arch"])))
    basedataset = dict(folder.DEFAULTS, clip_length=10.0)  # dataset options (datasets/folder/README.md)
    trainer = dict(trainer, max_epochs=20)
    lr = 1e-5  # AdamW's base learning rate (fine-tuning a pretrained network; from scratch try 1e-4)
    weight_decay = 1e-4  # AdamW's decoupled weight decay
    mixup_p = 1.0  # every training batch mixed (mixup; the paper's use_mixup=True)
    batch_size = 32
    num_workers = min(8, os.cpu_count() or 1)  # data loading processes (0: in the training process)
    warm_up_len = 3  # epochs of warm-up
    ramp_down_start = 8  # last epoch at the full learning rate
    ramp_down_len = 10  # epochs of the linear ramp-down
    last_lr_value = 0.01  # factor of lr after the ramp-down
    swa_epoch_start = 10  # first epoch averaged, counted from 0 as in PaSST's recipes: 'epoch 11' in the output


DATASET = folder  # the package of datasets/ it trains on (helpers.api reads it)
ex = Experiment("folder")
add_config(ex, DATASET, default_config)
add_commands(ex, DATASET)
add_named_configs(ex, DATASET)

if __name__ == "__main__":
    ex.run_commandline()
