"""Your own dataset: a folder of audio files and a CSV of filename, label, and optionally domain and split.

Reports accuracy per domain (the CSV's domain column), seen against unseen when basedataset.train_domains
leaves some out. The number of classes is read from the CSV. There is no demo data: basedataset.base_dir
is required (see datasets/folder/README.md for the CSV format and fine-tuning from the AudioSet weights).

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
from datasets.metadata import LayoutError  # noqa: E402
from helpers.config_check import ConfigurationError  # noqa: E402
from helpers.experiment import add_commands, clip_frames  # noqa: E402

# Commands that work without the dataset (from a checkpoint, or printing the config).
WITHOUT_DATASET = ("predict", "export", "print_config", "print_dependencies", "save_config", "print_named_configs")

ex = Experiment("folder")


@ex.config
def default_config():
    """Fine-tuning defaults for a dataset of your own (PaSST-S; AudioSet weights with models.net.pretrained=True)."""
    basedataset = dict(folder.DEFAULTS, clip_length=10.0)  # dataset options (datasets/folder/README.md)
    models = {
        "net": dict(  # keywords of models.passt.get_model
            arch="passt_s_swa_p16_128_ap476",
            pretrained=False,  # True: start from the arch's AudioSet weights (or pretrained_path=FILE, offline)
            pretrained_path=None,
            pretrained_source="audioset",
            pretrained_weights="auto",
            n_classes=None,  # None: the number of labels in the CSV
            in_channels=1,
            fstride=10,
            tstride=10,
            u_patchout=0,
            s_patchout_t=0,
            s_patchout_f=0,
            rf_norm_t="",
            attention_impl="auto",
        ),
        "mel": dict(  # keywords of models.preprocess.AugmentMelSTFT
            n_mels=128, win_length=800, hopsize=320, n_fft=1024, freqm=48, timem=80, htk=False,
            fmin=0.0, fmax=None, norm=1, fmin_aug_range=10, fmax_aug_range=2000,
        ),
    }
    trainer = dict(  # pl.Trainer keywords (and the Lightning 1.x keys, translated)
        max_epochs=20,
        devices=1,
        use_tensorboard_logger=False,  # TensorBoard logs in the run folder's tensorboard/
    )
    lr = 1e-5  # AdamW's base learning rate (fine-tuning a pretrained network; from scratch try 1e-4)
    weight_decay = 1e-4  # AdamW's decoupled weight decay
    use_mixup = True  # spectrogram mixup
    mixup_alpha = 0.3  # mixup weights ~ Beta(alpha, alpha)
    batch_size = 32
    num_workers = min(8, os.cpu_count() or 1)  # data loading processes (0: in the training process)
    schedule_mode = "exp_lin"  # exponential warm-up, then linear ramp-down (per epoch)
    warm_up_len = 3  # epochs of warm-up
    ramp_down_start = 8  # last epoch at the full learning rate
    ramp_down_len = 10  # epochs of the linear ramp-down
    last_lr_value = 0.01  # factor of lr after the ramp-down
    swa = True  # keep a stochastic weight average (net_swa), evaluated beside the plain model
    swa_epoch_start = 10  # first epoch (0-based) averaged
    swa_freq = 1  # average every swa_freq epochs

    # Derived: the classes come from the CSV; the network's input follows the front-end and the clip length.
    if models["net"]["n_classes"] is None and basedataset["base_dir"] is not None:
        try:
            models["net"]["n_classes"] = len(folder.read_class_names(basedataset["base_dir"], basedataset["csv"]))
        except LayoutError as error:
            raise ConfigurationError(str(error)) from None
    models["mel"]["sr"] = basedataset["sample_rate"]
    models["net"]["input_fdim"] = models["mel"]["n_mels"]
    models["net"]["input_tdim"] = clip_frames(basedataset["clip_length"], basedataset["sample_rate"],
                                              models["mel"]["hopsize"])


@ex.config_hook
def require_base_dir(config, command_name, logger):
    """Every command that reads the data (or needs the number of classes) needs basedataset.base_dir."""
    if config["basedataset"]["base_dir"] is None and command_name not in WITHOUT_DATASET:
        raise ConfigurationError(
            f"{command_name}: basedataset.base_dir is required, the folder dataset has no demo data; add "
            "basedataset.base_dir=/path/to/your/audio (holding metadata.csv; see datasets/folder/README.md)"
        )
    return {}


add_commands(ex, folder)
add_named_configs(ex)

if __name__ == "__main__":
    ex.run_commandline()
