"""TAU Urban Acoustic Scenes 2020 Mobile, development set: the experiment of ex_dcase20.py under the original
FRITO file name, so the seed's command line works as written:

    python ex_dcase20_dev.py with models.net.rf_norm_t=row_overlap_8 use_mixup=True mixup_alpha=0.3 \
        trainer.use_tensorboard_logger=True -p --debug

Same config, named configs, dataset and commands as ex_dcase20.py; runs are recorded as experiment "dcase20_dev".
"""

import warnings

warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)  # raised by importing sacred 0.8.7

from ex_dcase20 import DATASET, experiment  # noqa: E402, F401 (DATASET: helpers.api reads it)

ex = experiment("dcase20_dev")

if __name__ == "__main__":
    ex.run_commandline()
