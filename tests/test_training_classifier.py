"""The shared LightningModule on a small fake dataset and a transparent fake network."""

import pytest
import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from helpers.augment.mixup import Mixup
from helpers.augment.places import TrainingMethods
from helpers.training.classifier import AudioClassifier
from helpers.training.schedule import lr_schedule
from helpers.training.swa import SwaSchedule
from helpers.training.trainer import build_trainer
from models.audio_model import AudioModel

CLASSES = ("low", "mid", "high")
DOMAINS = ("a", "b", "c")


class LookupNet(nn.Module):
    """Predicts the class written into the spectrogram's first cell (logit 5 there, 0 elsewhere)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))
        self.pos_embed = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        code = x[:, 0, 0, 0].round().long()
        logits = 5.0 * nn.functional.one_hot(code, len(CLASSES)).float() * self.scale + self.pos_embed
        return logits, logits

    def no_weight_decay(self):
        return {"pos_embed"}


class NoMel(nn.Module):
    def forward(self, waveform):
        raise AssertionError("batches with a spectrogram must not pass through the mel front-end")


class Spectrograms(Dataset):
    """(label, prediction code, domain) rows as dataset items carrying a spectrogram."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        label, code, domain = self.rows[index]
        spectrogram = torch.zeros(4, 6)
        spectrogram[0, 0] = code
        return {"spectrogram": spectrogram, "label": label, "domain": domain, "file_name": f"clip{index}.wav"}


# 7 examples: domain a 2/3 right, b 1/2, c 0/2 -> accuracy 3/7
ROWS = [(0, 0, 0), (1, 1, 0), (2, 0, 0), (0, 0, 1), (1, 2, 1), (2, 1, 2), (0, 2, 2)]


def module(net=None, swa=None, mixup_alpha=None):
    return AudioClassifier(
        model=AudioModel(NoMel(), net or LookupNet()), class_names=CLASSES, domain_names=DOMAINS,
        seen_domains=("a", "b"), lr=1e-3, weight_decay=0.1, lr_factor=lr_schedule("exp_lin", 0, 10, 10, 0.1),
        methods=TrainingMethods(batch=[Mixup(p=1.0, alpha=mixup_alpha)]) if mixup_alpha else None, swa=swa,
        checkpoint_entry={"version": 2, "net": {"arch": "lookup"}},
    )


def quiet_trainer(tmp_path, **keys):
    config = {"max_epochs": 1, "enable_progress_bar": False, "enable_model_summary": False, **keys}
    return build_trainer(config, tmp_path)


def test_validation_figures_cover_the_whole_split_once(tmp_path):
    classifier = module()
    loader = DataLoader(Spectrograms(ROWS), batch_size=3)  # uneven last batch
    quiet_trainer(tmp_path, num_sanity_val_steps=0).validate(classifier, loader, verbose=False)
    result = classifier.evaluations["val"]["net"]
    assert result.n_examples == 7
    assert result.accuracy == pytest.approx(3 / 7)
    assert result.domain_accuracy == pytest.approx({"a": 2 / 3, "b": 1 / 2, "c": 0.0})
    assert result.group_accuracy(seen=True) == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert result.group_accuracy(seen=False) == 0.0
    logged = classifier.trainer.callback_metrics
    assert float(logged["val/acc"]) == pytest.approx(3 / 7)
    assert float(logged["val/domain/b"]) == pytest.approx(1 / 2)
    assert float(logged["val/acc_unseen"]) == 0.0


def test_the_second_loader_is_the_test_split_and_is_logged_apart(tmp_path):
    classifier = module()
    validation = DataLoader(Spectrograms(ROWS[:3]), batch_size=2)  # domain a: 2 of 3 right
    test = DataLoader(Spectrograms(ROWS), batch_size=3)
    quiet_trainer(tmp_path, num_sanity_val_steps=0).validate(classifier, [validation, test], verbose=False)
    assert classifier.evaluations["val"]["net"].n_examples == 3
    assert classifier.evaluations["test"]["net"].n_examples == 7
    logged = classifier.trainer.callback_metrics
    assert float(logged["val/acc"]) == pytest.approx(2 / 3) and float(logged["test/acc"]) == pytest.approx(3 / 7)
    assert float(logged["test/domain/c"]) == 0.0 and "val/domain/c" not in logged


def test_optimizer_skips_weight_decay_for_the_nets_exceptions():
    classifier = module()
    decayed, exempt = classifier.configure_optimizers()["optimizer"].param_groups
    assert decayed["weight_decay"] == 0.1 and exempt["weight_decay"] == 0.0
    assert decayed["params"] == [classifier.model.net.scale]
    assert exempt["params"] == [classifier.model.net.pos_embed]


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(24, len(CLASSES))

    def forward(self, x):
        logits = self.linear(x.flatten(1))
        return logits, logits


class Snapshots(pl.Callback):
    def __init__(self):
        self.weights = []

    def on_train_epoch_end(self, trainer, pl_module):
        self.weights.append(pl_module.model.net.linear.weight.detach().clone())


def test_swa_copy_is_the_mean_of_the_averaged_epochs(tmp_path):
    torch.manual_seed(0)
    classifier = module(net=TinyNet(), swa=SwaSchedule(epoch_start=1, freq=1), mixup_alpha=0.3)
    snapshots = Snapshots()
    loader = DataLoader(Spectrograms(ROWS), batch_size=3, shuffle=True)
    trainer = build_trainer({"max_epochs": 3, "enable_progress_bar": False, "enable_model_summary": False,
                             "num_sanity_val_steps": 0}, tmp_path, callbacks=(snapshots,))
    evaluation_loaders = [DataLoader(Spectrograms(ROWS), batch_size=4), DataLoader(Spectrograms(ROWS), batch_size=4)]
    trainer.fit(classifier, loader, evaluation_loaders)
    assert int(classifier.net_swa.n_averaged) == 2
    expected = (snapshots.weights[1] + snapshots.weights[2]) / 2  # epochs 1 and 2 (0-based)
    assert torch.allclose(classifier.net_swa.module.linear.weight, expected, atol=1e-6)
    assert set(classifier.evaluations["test"]) == {"net", "net_swa"}
    assert [entry["epoch"] for entry in classifier.selection.history] == [1, 2, 3]  # numbered from 1

    checkpoint = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["frito"]["version"] == 2
    keys = set(checkpoint["state_dict"])
    assert {"model.net.linear.weight", "net_swa.module.linear.weight", "net_swa.n_averaged"} <= keys
    best = torch.load(tmp_path / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["epoch"] + 1 == classifier.selection.selected_epoch  # Lightning counts finished epochs from 0


@pytest.mark.parametrize("epoch, expected", [(0, False), (1, False), (2, True), (3, False), (4, True), (6, True)])
def test_swa_schedule(epoch, expected):
    assert SwaSchedule(epoch_start=2, freq=2).averages_after(epoch) is expected
