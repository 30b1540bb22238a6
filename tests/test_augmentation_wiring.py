"""Freq-MixStyle and device impulse responses as a run applies them: to training data only, before the
network (and before mixup), from the config keys; bad settings and files stopped before training."""

import numpy as np
import pytest
import soundfile
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from errors import UserError
from helpers.augment.places import TrainingMethods
from helpers.training.classifier import AudioClassifier
from helpers.training.data import AugmentedWaveforms
from helpers.training.schedule import lr_schedule
from helpers.training.trainer import build_trainer
from models.audio_model import AudioModel


class RecordingNet(nn.Module):
    """Logits from the spectrogram's mean; records every input it sees, by mode."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(2))
        self.seen = {"train": [], "eval": []}

    def forward(self, x):
        self.seen["train" if self.training else "eval"].append(x.detach().clone())
        logits = x.mean(dim=(1, 2, 3))[:, None] * self.weight
        return logits, logits


class Shift:
    """A stand-in for FreqMixStyle that adds 100 to the batch."""

    def __call__(self, x):
        return x + 100.0


class Spectrograms(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, index):
        return {"spectrogram": torch.zeros(3, 5), "label": index % 2, "domain": 0, "index": index}


def test_freq_mixstyle_reaches_the_network_in_training_steps_only(tmp_path):
    net = RecordingNet()
    module = AudioClassifier(AudioModel(nn.Identity(), net), ["x", "y"], ["a"], ["a"], lr=1e-3, weight_decay=0.0,
                             lr_factor=lr_schedule("exp_lin", 0, 5, 5, 0.1), methods=TrainingMethods([Shift()]),
                             swa=None)
    loader = DataLoader(Spectrograms(), batch_size=2)
    trainer = build_trainer({"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False,
                             "num_sanity_val_steps": 0}, tmp_path, checkpoints=False)
    trainer.fit(module, loader, [loader, loader])
    assert net.seen["train"] and all(float(x.min()) == 100.0 for x in net.seen["train"])
    assert net.seen["eval"] and all(float(x.abs().max()) == 0.0 for x in net.seen["eval"])
    assert list(tmp_path.iterdir()) == []  # checkpoints=False: no checkpoint written


class Waveforms(Dataset):
    def __init__(self, domains):
        self.domains = domains

    def __len__(self):
        return len(self.domains)

    def __getitem__(self, index):
        return {"waveform": torch.full((8,), float(index)), "label": 0, "domain": self.domains[index],
                "index": index}


def test_training_waveforms_pass_through_the_augmentation_with_their_domain_name():
    calls = []

    def augment(waveform, domain):
        calls.append(domain)
        return waveform * 2 if domain == "a" else waveform

    wrapped = AugmentedWaveforms(Waveforms([0, 1, 0]), [augment], ["a", "b"])
    items = [wrapped[index] for index in range(3)]
    assert calls == ["a", "b", "a"]
    assert [float(item["waveform"][0]) for item in items] == [0.0, 1.0, 4.0]
    assert items[1]["waveform"].dtype == torch.float32 and items[2]["index"] == 2


@pytest.fixture
def impulse_responses(tmp_path):
    folder = tmp_path / "irs"
    folder.mkdir()
    for index, delay in enumerate((0, 40)):
        response = np.zeros(400)
        response[delay] = 1.0
        response[delay + 10] = 0.3
        soundfile.write(folder / f"mic{index}.wav", response, 32000)
    return folder


@pytest.mark.slow
def test_a_run_trains_with_both_methods_and_frito(tmp_path, frito, impulse_responses):
    frito("ex_dcase20.py", "-F", "runs", "with", "freq_mixstyle", "dir", f"dir_folder={impulse_responses}",
          "dir_domains=['a']", "models.net.rf_norm_t=row_overlap_2", "mini_train", "trainer.max_epochs=1",
          cwd=tmp_path)
    assert (tmp_path / "runs" / "1" / "results.json").is_file()


def test_impulse_response_settings_are_checked_before_any_work(in_tmp, cache_dir, load_experiment, monkeypatch,
                                                               impulse_responses):
    monkeypatch.setenv("FRITO_CACHE_DIR", str(cache_dir))
    ex = load_experiment("ex_dcase20")  # the command line's path in this process (tests/test_user_errors.py types it)

    def main(**updates):
        return ex.run("main", config_updates=updates, named_configs=["dir"], options={"--capture": "sys"})

    with pytest.raises(UserError, match="dir_p=0.6 needs dir_folder"):
        main()
    with pytest.raises(UserError, match=r"\['A'\] are not devices of the training data"):
        main(dir_folder=str(impulse_responses), dir_domains=["A"])
    (in_tmp / "empty").mkdir()
    with pytest.raises(UserError, match="dir_folder"):
        main(dir_folder=str(in_tmp / "empty"))
    assert not list(in_tmp.glob("runs/*/checkpoints"))  # nothing trained
