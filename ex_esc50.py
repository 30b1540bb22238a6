"""ESC-50: 50 classes of environmental sounds, five folds; no domains, so it reports accuracy.

Tests on one fold (basedataset.fold) and trains on the other four, less the source recordings held out for
validation; basedataset.esc10=True takes the ESC-10 subset. Without basedataset.base_dir it trains on the bundled
demo data with a CPU-sized preset. PaSST's published ESC-50 recipe is the named config passt_esc50.

    python ex_esc50.py -F runs/ with basedataset.base_dir=/data/ESC-50-master basedataset.fold=1 passt_esc50
"""

# Sacred reads the config scope's local variables as config entries:
# ruff: noqa: F841

import os
import warnings

warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)  # raised by importing sacred 0.8.7

from sacred import Experiment  # noqa: E402

from config_updates import add_named_configs  # noqa: E402
from datasets import esc50  # noqa: E402
from helpers.experiment.commands import add_commands  # noqa: E402
from helpers.experiment.defaults import add_config  # noqa: E402


def default_config(trainer):
    """Fine-tuning defaults for ESC-50 (PaSST-S; AudioSet weights with models.net.pretrained=True)."""
    basedataset = dict(esc50.DEFAULTS, clip_length=5.0)  # dataset options (datasets/esc50/README.md)
    trainer = dict(trainer, max_epochs=20)
    lr = 1e-5  # AdamW's base learning rate (fine-tuning a pretrained network)
    weight_decay = 1e-4  # AdamW's decoupled weight decay
    mixup_p = 1.0  # every training batch mixed (mixup)
    batch_size = 12
    num_workers = min(8, os.cpu_count() or 1)  # data loading processes (0: in the training process)
    warm_up_len = 3  # epochs of warm-up
    ramp_down_start = 8  # last epoch at the full learning rate
    ramp_down_len = 10  # epochs of the linear ramp-down
    last_lr_value = 0.01  # factor of lr after the ramp-down
    swa_epoch_start = 10  # first epoch averaged, counted from 0 as in PaSST's recipes: 'epoch 11' in the output


# PaSST's published ESC-50 recipe on frito's keys. From kkoutini/PaSST: ex_esc50.py (default_conf: models.net
# n_classes=50, s_patchout_t=10; trainer max_epochs=10; lr=0.00001; use_mixup=True, mixup_alpha=0.3; the training
# loader's batch_size=12; get_optimizer: AdamW, weight_decay=0.0001; get_scheduler_lambda: exp_lin, warm_up_len=5,
# ramp_down_start=50, ramp_down_len=50, last_lr_value=0.01; get_extra_swa_callback: swa=True, swa_epoch_start=2,
# swa_freq=1; the mel front-end freqm=48, timem=80, fmin_aug_range=10, fmax_aug_range=2000, as frito's defaults),
# esc50/README.md (the command: models.net.s_patchout_t=10 models.net.s_patchout_f=5 basedataset.fold=1),
# esc50/dataset.py (5 s clips at 32 kHz) and models/passt.py (get_model: pretrained=True, strides 10). The
# architecture is frito's default passt_s_swa_p16_128_ap476, the one esc50/README.md loads its released ESC-50
# weights into. Not carried over: esc50/dataset.py's waveform roll (roll=True) and random gain (gain_augment=7),
# which frito does not have; and PaSST evaluates the test fold every epoch, where frito selects the epoch on
# validation source recordings held out of the training folds.
PASST_ESC50 = {
    "models": {"net": {"arch": "passt_s_swa_p16_128_ap476", "pretrained": True, "s_patchout_t": 10,
                       "s_patchout_f": 5}},
    "basedataset": {"clip_length": 5.0, "sample_rate": 32000},
    "trainer": {"max_epochs": 10},
    "lr": 1e-5,
    "weight_decay": 1e-4,
    "batch_size": 12,
    "use_mixup": True,
    "mixup_alpha": 0.3,
    "specaugment_p": 1.0,
    "specaugment_freqm": 48,
    "specaugment_timem": 80,
    "schedule_mode": "exp_lin",
    "warm_up_len": 5,
    "ramp_down_start": 50,
    "ramp_down_len": 50,
    "last_lr_value": 0.01,
    "swa": True,
    "swa_epoch_start": 2,
    "swa_freq": 1,
}

DATASET = esc50  # the package of datasets/ it trains on (helpers.api reads it)
ex = Experiment("esc50")
add_config(ex, DATASET, default_config)
add_commands(ex, DATASET)
add_named_configs(ex, DATASET)
ex.add_named_config("passt_esc50", PASST_ESC50)
ex.named_configs["passt_esc50"].__doc__ = (
    "PaSST's published ESC-50 recipe (kkoutini/PaSST ex_esc50.py, esc50/README.md): AudioSet PaSST-S, patchout "
    "t 10 / f 5, 10 epochs, lr 1e-5, batch 12, mixup alpha 0.3, SWA from epoch 2, 5 s clips; fetches the weights."
)

if __name__ == "__main__":
    ex.run_commandline()
