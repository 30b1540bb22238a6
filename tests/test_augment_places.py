"""A new DG method needs one class and one registration: toy methods at each of the five places, registered
here (not in production), reach their place in a real training run, and the input place reaches
evaluation, predict and export from the checkpoint alone."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.augment import registry
from helpers.augment.method import Method, Place, RunContext, Setting
from helpers.export import export
from helpers.inference import load_model
from helpers.setting_kinds import PROBABILITY, WEIGHT

QUICK = {"max_epochs": 1, "limit_train_batches": 3, "limit_val_batches": 2, "enable_progress_bar": False,
         "enable_model_summary": False, "num_sanity_val_steps": 0}
CALLS: list[tuple] = []  # (place, detail) in the order the toy methods were called


class ToyWaveform(Method):
    name, place = "toy_wave", Place.WAVEFORM
    settings = {"p": Setting(0.0, PROBABILITY, "toy waveform method")}

    @classmethod
    def build(cls, settings, context):
        def record(waveform, domain):
            CALLS.append(("waveform", domain))
            return waveform

        return record


class ToySpectrogram(Method):
    name, place = "toy_spec", Place.SPECTROGRAM
    settings = {"p": Setting(0.0, PROBABILITY, "toy spectrogram method")}

    def __init__(self, p):
        self.p = p

    def __call__(self, x):
        CALLS.append(("spectrogram", tuple(x.shape[1:2])))
        return x


class ToyBatch(Method):
    name, place = "toy_batch", Place.BATCH
    settings = {"p": Setting(0.0, PROBABILITY, "toy batch method")}

    def __init__(self, p):
        self.p = p

    def __call__(self, x, criterion):
        CALLS.append(("batch", None))
        return x, lambda logits, labels: 2.0 * criterion(logits, labels)


class ToyInput(Method, nn.Module):
    """Adds ``weight`` to the network's input, so an export without it would not match."""

    name, place, strength = "toy_input", Place.INPUT, "weight"
    settings = {"weight": Setting(0.0, WEIGHT, "toy input method: added to the network's input")}

    def __init__(self, weight):
        nn.Module.__init__(self)
        self.weight = weight

    def forward(self, x):
        CALLS.append(("input", "train" if self.training else "eval"))
        return x + self.weight


class ToyLoss(Method, nn.Module):
    """A domain classifier on the embedding, as domain-adversarial training would add."""

    name, place, strength = "toy_loss", Place.LOSS, "weight"
    settings = {"weight": Setting(0.0, WEIGHT, "toy loss method: weight of a domain classification loss")}

    def __init__(self, weight, embedding_size, n_domains):
        nn.Module.__init__(self)
        self.weight = weight
        self.classifier = nn.Linear(embedding_size, n_domains)

    @classmethod
    def build(cls, settings, context):
        return cls(settings["weight"], context.embedding_size, len(context.domain_names))

    def forward(self, embedding, batch):
        CALLS.append(("loss", tuple(batch["domain"].tolist())))
        loss = F.cross_entropy(self.classifier(embedding), batch["domain"])
        return self.weight * loss, {"toy_domain_loss": loss}


TOYS = (ToyWaveform, ToySpectrogram, ToyBatch, ToyInput, ToyLoss)


@pytest.fixture
def toy_methods(monkeypatch):
    for toy in TOYS:  # the one registration line each
        monkeypatch.setitem(registry.METHODS, toy.name, toy)
    CALLS.clear()
    yield
    CALLS.clear()


def test_a_toy_method_is_built_only_where_its_place_is_asked_for(toy_methods):
    context = RunContext(16000, {}, ["a", "b"], ["a"], "device", embedding_size=4)
    active = registry.active_settings({**registry.config_defaults(), "toy_spec_p": 1.0, "toy_loss_weight": 0.5})
    built = registry.build_methods(active, context, (Place.WAVEFORM, Place.LOSS))
    assert built[Place.WAVEFORM] == [] and [type(method) for method in built[Place.LOSS]] == [ToyLoss]
    assert registry.input_transform(active) is None
    assert isinstance(registry.input_transform({"toy_input": {"weight": 0.5}}), ToyInput)


@pytest.mark.slow
def test_toy_methods_registered_in_a_test_reach_their_places(toy_methods, cache_dir, in_tmp, load_experiment):
    ex = load_experiment("ex_nsynth")
    updates = {"toy_wave_p": 1.0, "toy_spec_p": 1.0, "toy_batch_p": 1.0, "toy_input_weight": 0.5,
               "toy_loss_weight": 0.1, "trainer": dict(QUICK), "basedataset": {"cache_dir": str(cache_dir)}}
    ex.run("main", config_updates=updates, options={"--capture": "sys"})
    places = [place for place, _ in CALLS]
    steps = places.count("spectrogram")
    assert steps == QUICK["limit_train_batches"] == places.count("batch") == places.count("loss")
    assert CALLS.count(("input", "train")) == steps and CALLS.count(("input", "eval")) > 0
    # waveform: training clips only (NSynth trains on acoustic instruments; the test split has all sources)
    assert {detail for place, detail in CALLS if place == "waveform"} == {"acoustic"}
    # loss: training batches only, domain indices of acoustic (0) alone
    assert {domain for place, domains in CALLS if place == "loss" for domain in domains} == {0}
    for step in range(steps):  # within a step: spectrogram, batch, input, loss
        start = [index for index, (place, _) in enumerate(CALLS) if place == "spectrogram"][step]
        assert [place for place, _ in CALLS[start:start + 4]] == ["spectrogram", "batch", "input", "loss"]

    checkpoint = next(in_tmp.glob("runs/*/checkpoints/last.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["frito"]["augment"]["toy_input"] == {"weight": 0.5}
    CALLS.clear()  # evaluated without the toy settings: the checkpoint's loss parameters and input method load
    ex.run("evaluate_only", config_updates={"checkpoint": str(checkpoint), "trainer": dict(QUICK),
                                            "basedataset": {"cache_dir": str(cache_dir)}}, options={"--capture": "sys"})
    assert set(CALLS) == {("input", "eval")}
    CALLS.clear()
    predictor = load_model(checkpoint, device="cpu")
    assert isinstance(predictor.model.input_transform, ToyInput)
    predictor.predict(np.zeros(32000, dtype=np.float32), 32000)
    assert ("input", "eval") in CALLS
    files = export(predictor, in_tmp / "export", formats=("torchscript",))  # checked against PyTorch's outputs
    exported = torch.jit.load(str(files["torchscript"]))
    waveform = torch.randn(1, 64000) * 0.1
    with torch.no_grad():
        expected = predictor.model.cpu()(waveform)[0]
        without_input = predictor.model.classify(predictor.model.spectrogram(waveform) - 0.5)[0]
    torch.testing.assert_close(exported(waveform)[0], expected, atol=1e-3, rtol=0)
    assert not torch.allclose(exported(waveform)[0], without_input, atol=1e-3)
