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

from config_updates import CPU_TINY_ARCH, CPU_TINY_CLIP_LENGTH, add_named_configs  # noqa: E402
from datasets import dcase20  # noqa: E402
from helpers.experiment import add_commands, clip_frames  # noqa: E402

ex = Experiment("dcase20")


@ex.config
def default_config():
    """Defaults of the original FRITO TAU 2020 experiment; the demo preset without a dataset folder."""
    basedataset = dict(dcase20.DEFAULTS, clip_length=10.0)  # dataset options (datasets/dcase20/README.md)
    models = {
        "net": dict(  # keywords of models.passt.get_model
            arch="passt_s_swa_p16_128_ap476",
            pretrained=False,  # the original fine-tuned AudioSet weights: pretrained=True (or pretrained_path=...)
            pretrained_path=None,
            pretrained_source="audioset",
            pretrained_weights="auto",
            n_classes=10,
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
        max_epochs=10,
        devices=1,
        use_tensorboard_logger=False,  # TensorBoard logs in the run folder's tensorboard/
    )
    lr = 1e-5  # AdamW's base learning rate
    weight_decay = 1e-4  # AdamW's decoupled weight decay
    use_mixup = True  # spectrogram mixup
    mixup_alpha = 0.3  # mixup weights ~ Beta(alpha, alpha)
    batch_size = 64
    num_workers = min(16, os.cpu_count() or 1)  # data loading processes (0: in the training process)
    schedule_mode = "exp_lin"  # exponential warm-up, then linear ramp-down (per epoch)
    warm_up_len = 5  # epochs of warm-up
    ramp_down_start = 50  # last epoch at the full learning rate
    ramp_down_len = 50  # epochs of the linear ramp-down
    last_lr_value = 0.01  # factor of lr after the ramp-down
    swa = True  # keep a stochastic weight average (net_swa), evaluated beside the plain model
    swa_epoch_start = 2  # first epoch (0-based) averaged
    swa_freq = 1  # average every swa_freq epochs

    if basedataset["base_dir"] is None:
        # No dataset folder: the bundled demo data, with the cpu_tiny model and a short schedule.
        models["net"]["arch"] = CPU_TINY_ARCH
        basedataset["clip_length"] = CPU_TINY_CLIP_LENGTH
        trainer["max_epochs"] = 20
        lr = 1e-3
        batch_size = 16
        num_workers = 0
        warm_up_len = 2
        ramp_down_start = 8
        ramp_down_len = 12
        last_lr_value = 0.05
        swa_epoch_start = 14

    # Derived: the network's input follows the front-end and the clip length.
    models["mel"]["sr"] = basedataset["sample_rate"]
    models["net"]["input_fdim"] = models["mel"]["n_mels"]
    models["net"]["input_tdim"] = clip_frames(basedataset["clip_length"], basedataset["sample_rate"],
                                              models["mel"]["hopsize"])


add_commands(ex, dcase20)
add_named_configs(ex)

if __name__ == "__main__":
    ex.run_commandline()
