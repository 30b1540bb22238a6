"""DANN (helpers.augment.dann): the reversed gradient's sign and scale and the domain classifier's figures
against a numpy derivation, the refusal of a single training domain, and a real training in which the
domain classifier sees training clips only, logs its figures, and whose checkpoint evaluate_only loads."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from errors import ConfigurationError, UserError
from helpers import api
from helpers.augment.dann import DomainAdversarial, reverse_gradient
from helpers.augment.method import Place, RunContext
from helpers.augment.places import TrainingMethods
from helpers.augment.registry import METHODS, active_settings, build_methods, check_settings, config_defaults
from models.passt import get_model

DOMAINS = ["a", "b", "c", "s1"]
SEEN = ["b", "c", "s1"]  # the classifier's outputs 0, 1, 2 in this order; "a" is never trained on


def context(seen=SEEN, embedding_size=5):
    return RunContext(sample_rate=32000, dataset={}, domain_names=DOMAINS, seen_domains=seen, domain_kind="device",
                      embedding_size=embedding_size)


def built(weight=1.0, **settings):
    active = {"dann": {"weight": weight, "width": 4, "depth": 2, "dropout": 0.0, **settings}}
    return build_methods(active, context(), [Place.LOSS])[Place.LOSS][0]


def numpy_reference(method, embedding, seen_targets):
    """Cross-entropy, accuracy and d(loss)/d(embedding) of the depth-2 MLP relu(z W1' + b1) W2' + b2, by hand."""
    first, second = method.classifier[0], method.classifier[-1]
    w1, b1 = first.weight.detach().double().numpy(), first.bias.detach().double().numpy()
    w2, b2 = second.weight.detach().double().numpy(), second.bias.detach().double().numpy()
    z = embedding.detach().double().numpy()
    pre = z @ w1.T + b1
    hidden = np.maximum(pre, 0)
    logits = hidden @ w2.T + b2
    probabilities = np.exp(logits - logits.max(axis=1, keepdims=True))
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    n = len(z)
    one_hot = np.eye(logits.shape[1])[seen_targets]
    loss = -np.log(probabilities[np.arange(n), seen_targets]).mean()
    accuracy = np.mean(logits.argmax(axis=1) == seen_targets)
    d_logits = (probabilities - one_hot) / n
    d_embedding = ((d_logits @ w2) * (pre > 0)) @ w1
    return loss, accuracy, d_embedding


@pytest.mark.parametrize("weight", [0.1, 1.0, 3.0])
def test_the_embedding_receives_minus_weight_times_the_domain_loss_gradient(weight):
    torch.manual_seed(0)
    method = built(weight).double()
    embedding = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    domains = torch.tensor([1, 2, 3, 3, 1, 2])  # indices of DOMAINS: b, c, s1, s1, b, c
    loss, _ = method(embedding, {"domain": domains})
    loss.backward()
    expected_loss, _, d_embedding = numpy_reference(method, embedding, np.array([0, 1, 2, 2, 0, 1]))
    assert float(loss.detach()) == pytest.approx(expected_loss, rel=1e-12)
    np.testing.assert_allclose(embedding.grad.numpy(), -weight * d_embedding, rtol=1e-10, atol=1e-14)

    # the domain classifier itself descends the domain loss: its gradients are those of the loss unreversed
    plain = [parameter.grad.clone() for parameter in method.parameters()]
    method.zero_grad()
    F.cross_entropy(method.classifier(embedding.detach()), torch.tensor([0, 1, 2, 2, 0, 1])).backward()
    for reversed_grad, parameter in zip(plain, method.parameters(), strict=True):
        torch.testing.assert_close(reversed_grad, parameter.grad)


def test_the_reversal_layer_is_the_identity_forward():
    x = torch.randn(3, 4, requires_grad=True)
    y = reverse_gradient(x, 2.5)
    assert torch.equal(y, x)
    (y * torch.arange(4.0)).sum().backward()
    torch.testing.assert_close(x.grad, -2.5 * torch.arange(4.0).expand(3, 4))


def test_the_figures_are_the_domain_classifier_s_loss_and_accuracy_over_the_training_domains():
    torch.manual_seed(1)
    method = built().double()
    embedding = torch.randn(40, 5, dtype=torch.float64)
    domains = torch.randint(1, 4, (40,))  # training domains only
    loss, figures = method(embedding, {"domain": domains})
    expected_loss, expected_accuracy, _ = numpy_reference(method, embedding, domains.numpy() - 1)
    assert set(figures) == {"domain_loss", "domain_acc"}
    assert float(figures["domain_loss"]) == pytest.approx(expected_loss) == float(loss.detach())
    assert float(figures["domain_acc"]) == pytest.approx(expected_accuracy)
    assert not figures["domain_loss"].requires_grad


def test_a_domain_not_trained_on_never_reaches_the_classifier():
    with pytest.raises(ValueError, match=r"outside the training domains \['b', 'c', 's1'\]"):
        built()(torch.randn(2, 5), {"domain": torch.tensor([1, 0])})  # 0: "a"


def test_domainbed_s_classifier_and_defaults():
    method = built(width=256, depth=3)
    linears = [layer for layer in method.classifier if isinstance(layer, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linears] == [(5, 256), (256, 256), (256, 3)]
    defaults = config_defaults()
    assert (defaults["dann_weight"], defaults["dann_width"], defaults["dann_depth"], defaults["dann_dropout"]) == (
        0.0, 256, 3, 0.0)
    assert "dann" not in active_settings(defaults)  # off by default
    assert METHODS["dann"].named_configs["dann"][1] == {"dann_weight": 1.0}


@pytest.mark.parametrize("form", ["", "per_row", "per_row_3", "high_low", "row_overlap_2", "row_overlap_8",
                                  "sparse_row_6", "high_low_branch"])
def test_dann_with_freq_mixstyle_and_mixup_trains_every_parameter_of_every_rf_norm_t_form(form):
    torch.manual_seed(0)
    net = get_model(arch="passt_mini", n_classes=4, input_fdim=64, input_tdim=200, rf_norm_t=form).train()
    settings = config(freq_mixstyle_p=1.0, mixup_p=1.0, dann_weight=0.5, dann_width=16)
    methods = build_methods(active_settings(settings), context(embedding_size=net.embed_dim),
                            (Place.SPECTROGRAM, Place.BATCH, Place.LOSS))
    assert [type(method) for method in methods[Place.LOSS]] == [DomainAdversarial]
    training = TrainingMethods(methods[Place.SPECTROGRAM], methods[Place.BATCH], methods[Place.LOSS])
    x, criterion = training.augment(torch.randn(4, 1, 64, 200))
    logits, embedding = net(x)
    batch = {"label": torch.tensor([0, 3, 1, 2]), "domain": torch.tensor([1, 2, 3, 1])}
    extra_loss, figures = training.extra_loss(embedding, batch)
    (criterion(logits, batch["label"]).mean() + extra_loss).backward()
    assert set(figures) == {"domain_loss", "domain_acc"}
    for name, parameter in [*net.named_parameters(), *training.named_parameters()]:
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name


def config(**changes):
    return {**config_defaults(), "basedataset": {"cache_format": "waveform"}, **changes}


def test_one_training_domain_is_refused_naming_the_fix():
    with pytest.raises(ConfigurationError, match=r"trains on \['acoustic'\] alone.*basedataset.train_domains"):
        check_settings(config(dann_weight=1.0, basedataset={"train_domains": ["acoustic"]}))
    check_settings(config(dann_weight=1.0, basedataset={"train_domains": ["acoustic", "electronic"]}))
    check_settings(config(basedataset={"train_domains": ["acoustic"]}))  # off: nothing to refuse
    with pytest.raises(ConfigurationError, match=r"trains on \['b'\] alone.*dann_weight=0"):  # None: counted here
        build_methods({"dann": dict(weight=1.0, width=4, depth=2, dropout=0.0)}, context(seen=["b"]), [Place.LOSS])
    with pytest.raises(ConfigurationError, match=r"dann_depth=1: expected a whole number >= 2"):
        check_settings(config(dann_depth=1))


def test_a_single_domain_run_stops_before_any_work(in_tmp, cache_dir, monkeypatch):
    monkeypatch.setenv("FRITO_CACHE_DIR", str(cache_dir))
    with pytest.raises(UserError, match=r"\['acoustic'\] alone.*basedataset.train_domains"):  # ex_nsynth's default
        api.train("nsynth", named_configs=["cpu_tiny", "dann"], run_dir=in_tmp / "run")
    assert list(in_tmp.iterdir()) == []


@pytest.mark.slow
def test_a_dann_training_sees_training_clips_only_and_its_checkpoint_evaluates(in_tmp, cache_dir, monkeypatch):
    monkeypatch.setenv("FRITO_CACHE_DIR", str(cache_dir))
    seen_files: list[str] = []
    forward = DomainAdversarial.forward

    def recording(self, embedding, batch):
        seen_files.extend(batch["file_name"])
        return forward(self, embedding, batch)

    monkeypatch.setattr(DomainAdversarial, "forward", recording)
    short = {"trainer.max_epochs": 1, "trainer.limit_train_batches": 2, "trainer.limit_val_batches": 2}
    run_dir = in_tmp / "run"
    api.train("nsynth", updates={**short, "basedataset.train_domains": ["acoustic", "electronic"]},
              named_configs=["cpu_tiny", "dann"], run_dir=run_dir)

    splits = json.loads((run_dir / "splits.json").read_text())
    assert seen_files and set(seen_files) <= set(splits["train"])
    assert not set(seen_files) & (set(splits["validation"]) | set(splits["test"]))
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert len(metrics["train/domain_loss"]["values"]) == len(metrics["train/domain_acc"]["values"]) == 1
    assert metrics["train/domain_loss"]["values"][0] > 0 and 0 <= metrics["train/domain_acc"]["values"][0] <= 1

    checkpoint = run_dir / "checkpoints" / "best.ckpt"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert saved["frito"]["augment"]["dann"] == {"weight": 1.0, "width": 256, "depth": 3, "dropout": 0.0}
    assert "methods.losses.0.classifier.0.weight" in saved["state_dict"]
    seen_files.clear()  # evaluated with the experiment's own settings (no dann): the classifier's weights load
    figures = api.evaluate("nsynth", checkpoint, updates={"trainer.limit_val_batches": 2}, out_dir=in_tmp / "evaluated")
    assert 0 <= figures["checkpoint/net/acc"] <= 1 and seen_files == []
