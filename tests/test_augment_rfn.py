"""Relaxed instance frequency-wise normalisation (an input-place method): values against numpy, shape and dtype,
the same in training and evaluation, every rf_norm_t form and the other methods beside it, and a trained
checkpoint that applies it."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from errors import ConfigurationError
from helpers.augment.method import Place, RunContext
from helpers.augment.places import TrainingMethods
from helpers.augment.registry import active_settings, build_methods, check_settings, config_defaults, input_transform
from helpers.augment.rfn import EPS, RFN
from helpers.inference import load_model
from helpers.model_spec import ModelSpec

FORMS = ["", "per_row_1", "per_row_3", "high_low", "row_overlap_2", "sparse_row_2", "high_low_branch"]
CONTEXT = RunContext(sample_rate=32000, dataset={}, domain_names=["a", "b"], seen_domains=["a"], domain_kind="device",
                     embedding_size=96)


def _batch(batch=4, channels=1, n_mels=6, frames=30, seed=0, dtype=torch.float32):
    """Spectrograms whose mel bins differ in offset and spread from example to example (like devices)."""
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-3, 2, (batch, 1, n_mels, 1))
    spreads = rng.uniform(0.3, 2, (batch, 1, n_mels, 1))
    return torch.tensor(offsets + spreads * rng.standard_normal((batch, channels, n_mels, frames)), dtype=dtype)


def rfn(x: np.ndarray, lam: float = 0.5, weight: float = 1.0) -> np.ndarray:
    """lam IFN + (1 - lam) LN written out in float64 numpy, one example (and one mel bin) at a time."""
    x = x.astype(np.float64)
    ifn, ln = np.empty_like(x), np.empty_like(x)
    for i in range(x.shape[0]):
        example = x[i]
        ln[i] = (example - example.mean()) / np.sqrt(example.var() + EPS)
        for f in range(x.shape[2]):
            values = example[:, f, :]
            ifn[i, :, f, :] = (values - values.mean()) / np.sqrt(values.var() + EPS)
    normalised = lam * ifn + (1 - lam) * ln
    return x + weight * (normalised - x)


def config(**changes):
    return {**config_defaults(), "basedataset": {"cache_format": "waveform"}, **changes}


@pytest.mark.parametrize("lam", [0.0, 0.3, 0.5, 1.0])
@pytest.mark.parametrize("weight", [1.0, 0.25])
@pytest.mark.parametrize("channels", [1, 3])
def test_output_matches_numpy(lam, weight, channels):
    x = _batch(channels=channels, dtype=torch.float64)
    np.testing.assert_allclose(RFN(weight, lam)(x).numpy(), rfn(x.numpy(), lam, weight), rtol=1e-12, atol=1e-12)


def test_lam_one_is_instance_frequency_normalisation_and_zero_layer_normalisation():
    """Hand-derived properties: IFN gives every mel bin mean 0 and variance ~1 over time; LN the whole example."""
    x = _batch()
    ifn, ln = RFN(1.0, 1.0)(x), RFN(1.0, 0.0)(x)
    np.testing.assert_allclose(ifn.mean(dim=3).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(ifn.var(dim=3, correction=0).numpy(), 1.0, atol=1e-3)
    np.testing.assert_allclose(ln.mean(dim=(1, 2, 3)).numpy(), 0.0, atol=1e-5)
    np.testing.assert_allclose(ln.var(dim=(1, 2, 3), correction=0).numpy(), 1.0, atol=1e-3)
    offset = torch.linspace(-2, 2, x.shape[2]).reshape(1, 1, -1, 1)  # a device's gain per mel bin
    torch.testing.assert_close(RFN(1.0, 1.0)(x + offset), ifn, atol=1e-4, rtol=0)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_shape_and_dtype_are_kept(dtype, tolerance):
    x = _batch(dtype=dtype)
    out = RFN(1.0, 0.5)(x)
    assert out.shape == x.shape and out.dtype == dtype
    expected = rfn(x.double().numpy())
    np.testing.assert_allclose(out.double().numpy(), expected, atol=tolerance * np.abs(expected).max())


def test_the_same_in_training_and_evaluation():
    x = _batch()
    method = RFN(1.0, 0.5)
    train_out = method.train()(x)
    assert torch.equal(method.eval()(x), train_out)


def test_weight_zero_is_the_identity_and_off_in_the_config():
    x = _batch()
    torch.testing.assert_close(RFN(0.0, 0.5)(x), x, rtol=0, atol=0)
    assert "rfn" not in active_settings(config())


def test_the_checkpoint_record_rebuilds_it_without_trained_state_and_after_frequency_centering():
    active = active_settings(config(rfn_weight=1.0))
    assert active["rfn"] == {"weight": 1.0, "lam": 0.5}
    rebuilt = input_transform(active)
    assert isinstance(rebuilt, RFN) and (rebuilt.weight, rebuilt.lam) == (1.0, 0.5)
    assert list(rebuilt.parameters()) == [] and rebuilt.state_dict() == {}
    both = input_transform(active_settings(config(rfn_weight=1.0, freq_centering_weight=1.0)))
    assert [type(module).__name__ for module in both] == ["FreqCentering", "RFN"]


@pytest.mark.parametrize("change, message", [
    (dict(rfn_weight=-0.5), r"rfn_weight=-0.5: expected a weight >= 0"),
    (dict(rfn_weight=1.0, rfn_lam=1.5), r"rfn_lam=1.5: expected a number in \[0, 1\]"),
])
def test_bad_settings_are_named(change, message):
    with pytest.raises(ConfigurationError, match=message):
        check_settings(config(**change))


def test_input_that_is_not_a_spectrogram_batch_is_refused():
    with pytest.raises(ValueError, match=r"\(batch, channels, n_mels, frames\)"):
        RFN(1.0, 0.5)(torch.zeros(2, 6, 30))


@pytest.mark.parametrize("form", FORMS)
def test_a_training_step_with_every_form_and_the_other_methods(form):
    """SpecAugment, Freq-MixStyle and mixup on the batch, then frequency-centering and RFN and the network: every
    parameter gets a finite gradient."""
    settings = config(rfn_weight=1.0, freq_centering_weight=1.0, freq_mixstyle_p=1.0, mixup_p=1.0,
                      specaugment_freqm=8, specaugment_timem=10)
    active = active_settings(settings)
    spec = replace(ModelSpec.of("passt_mini", 1.0, n_classes=3, rf_norm_t=form), augment=active)
    model = spec.build().train()
    built = build_methods(active, CONTEXT, (Place.SPECTROGRAM, Place.BATCH))
    torch.manual_seed(0)
    x, criterion = TrainingMethods(built[Place.SPECTROGRAM], built[Place.BATCH]).augment(
        model.spectrogram(torch.randn(4, spec.clip_samples) * 0.1))
    logits, _ = model.classify(x)
    criterion(logits, torch.tensor([0, 1, 2, 0])).mean().backward()
    for name, parameter in model.net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.slow
def test_a_trained_checkpoint_applies_rfn(frito, tmp_path):
    frito("ex_nsynth.py", "with", "cpu_tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
          "trainer.limit_val_batches=2", "rfn", cwd=tmp_path)
    checkpoint = next(tmp_path.glob("runs/*/checkpoints/last.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["frito"]["augment"]["rfn"] == {"weight": 1.0, "lam": 0.5}
    predictor = load_model(checkpoint, device="cpu")
    model = predictor.model
    assert isinstance(model.input_transform, RFN) and not model.training
    waveform = torch.randn(2, predictor.window_samples) * 0.1
    with torch.no_grad():
        spectrogram = model.spectrogram(waveform)
        expected = model.net(torch.from_numpy(rfn(spectrogram.numpy())).float())[0]
        torch.testing.assert_close(model(waveform)[0], expected, atol=1e-4, rtol=1e-4)


def test_a_traced_module_gives_the_same_values():
    """Export traces the model: the traced method equals the method, on another input than the traced one."""
    method = RFN(1.0, 0.5).eval()
    traced = torch.jit.trace(method, _batch(seed=1))
    x = _batch(seed=2)
    torch.testing.assert_close(traced(x), method(x), rtol=0, atol=0)
