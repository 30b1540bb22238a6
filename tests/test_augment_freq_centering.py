"""Frequency-centering (an input-place method): values against numpy, shape and dtype, the same in training and
evaluation, every rf_norm_t form and the other methods beside it, and a trained checkpoint that applies it."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from errors import ConfigurationError
from helpers.augment.freq_centering import EPS, FreqCentering
from helpers.augment.method import Place, RunContext
from helpers.augment.places import TrainingMethods
from helpers.augment.registry import active_settings, build_methods, check_settings, config_defaults, input_transform
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


def centred(x: np.ndarray, scale: bool = False, weight: float = 1.0) -> np.ndarray:
    """The method written out in float64 numpy, one example and one mel bin at a time."""
    x = x.astype(np.float64)
    out = np.empty_like(x)
    for i in range(x.shape[0]):
        for f in range(x.shape[2]):
            values = x[i, :, f, :]
            normalised = values - values.mean()
            if scale:
                normalised = normalised / np.sqrt(values.var() + EPS)
            out[i, :, f, :] = values + weight * (normalised - values)
    return out


def config(**changes):
    return {**config_defaults(), "basedataset": {"cache_format": "waveform"}, **changes}


@pytest.mark.parametrize("scale", [False, True])
@pytest.mark.parametrize("weight", [1.0, 0.5])
def test_output_matches_numpy(scale, weight):
    x = _batch(channels=2, dtype=torch.float64)
    out = FreqCentering(weight, scale)(x)
    np.testing.assert_allclose(out.numpy(), centred(x.numpy(), scale, weight), rtol=1e-12, atol=1e-12)


def test_every_mel_bin_has_mean_zero_over_time_and_a_device_offset_is_removed():
    x = _batch()
    out = FreqCentering(1.0)(x)
    np.testing.assert_allclose(out.mean(dim=3).numpy(), 0.0, atol=1e-5)
    offset = torch.linspace(-2, 2, x.shape[2]).reshape(1, 1, -1, 1)  # a device's gain per mel bin
    torch.testing.assert_close(FreqCentering(1.0)(x + offset), out, atol=1e-5, rtol=0)


@pytest.mark.parametrize(("dtype", "tolerance"), [(torch.float32, 1e-5), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)])
def test_shape_and_dtype_are_kept(dtype, tolerance):
    x = _batch(dtype=dtype)
    out = FreqCentering(1.0, True)(x)
    assert out.shape == x.shape and out.dtype == dtype
    expected = centred(x.double().numpy(), scale=True)
    np.testing.assert_allclose(out.double().numpy(), expected, atol=tolerance * np.abs(expected).max())


def test_the_same_in_training_and_evaluation():
    x = _batch()
    method = FreqCentering(1.0)
    train_out = method.train()(x)
    assert torch.equal(method.eval()(x), train_out)


def test_weight_zero_is_the_identity_and_off_in_the_config():
    x = _batch()
    torch.testing.assert_close(FreqCentering(0.0)(x), x, rtol=0, atol=0)
    assert "freq_centering" not in active_settings(config())
    assert input_transform(active_settings(config())) is None


def test_the_named_config_and_the_checkpoint_record_rebuild_it():
    active = active_settings(config(freq_centering_weight=1.0))
    assert active["freq_centering"] == {"weight": 1.0, "scale": False}
    rebuilt = input_transform(active)
    assert isinstance(rebuilt, FreqCentering) and (rebuilt.weight, rebuilt.scale) == (1.0, False)
    assert list(rebuilt.parameters()) == [] and rebuilt.state_dict() == {}  # nothing trained


@pytest.mark.parametrize("change, message", [
    (dict(freq_centering_weight=-1.0), r"freq_centering_weight=-1.0: expected a weight >= 0"),
    (dict(freq_centering_weight=1.0, freq_centering_scale="yes"), r"freq_centering_scale='yes': expected True or"),
])
def test_bad_settings_are_named(change, message):
    with pytest.raises(ConfigurationError, match=message):
        check_settings(config(**change))


def test_input_that_is_not_a_spectrogram_batch_is_refused():
    with pytest.raises(ValueError, match=r"\(batch, channels, n_mels, frames\)"):
        FreqCentering(1.0)(torch.zeros(2, 6, 30))


@pytest.mark.parametrize("form", FORMS)
def test_a_training_step_with_every_form_and_the_other_methods(form):
    """SpecAugment, Freq-MixStyle and mixup on the batch, then the input transform and the network: every
    parameter gets a finite gradient."""
    settings = config(freq_centering_weight=1.0, freq_mixstyle_p=1.0, mixup_p=1.0, specaugment_freqm=8,
                      specaugment_timem=10)
    active = active_settings(settings)
    spec = replace(ModelSpec.of("passt_mini", 1.0, n_classes=3, rf_norm_t=form), augment=active)
    model = spec.build().train()
    assert isinstance(model.input_transform, FreqCentering)
    built = build_methods(active, CONTEXT, (Place.SPECTROGRAM, Place.BATCH))
    torch.manual_seed(0)
    x, criterion = TrainingMethods(built[Place.SPECTROGRAM], built[Place.BATCH]).augment(
        model.spectrogram(torch.randn(4, spec.clip_samples) * 0.1))
    logits, _ = model.classify(x)
    criterion(logits, torch.tensor([0, 1, 2, 0])).mean().backward()
    for name, parameter in model.net.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.slow
def test_a_trained_checkpoint_applies_frequency_centering(frito, tmp_path):
    frito("ex_nsynth.py", "with", "cpu_tiny", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
          "trainer.limit_val_batches=2", "freq_centering", cwd=tmp_path)
    checkpoint = next(tmp_path.glob("runs/*/checkpoints/last.ckpt"))
    assert torch.load(checkpoint, weights_only=True)["frito"]["augment"]["freq_centering"] == {
        "weight": 1.0, "scale": False}
    predictor = load_model(checkpoint, device="cpu")
    model = predictor.model
    assert isinstance(model.input_transform, FreqCentering) and not model.training
    waveform = torch.randn(2, predictor.window_samples) * 0.1
    with torch.no_grad():
        spectrogram = model.spectrogram(waveform)
        expected = model.net(torch.from_numpy(centred(spectrogram.numpy())).float())[0]
        torch.testing.assert_close(model(waveform)[0], expected, atol=1e-4, rtol=1e-4)


def test_a_traced_module_gives_the_same_values():
    """Export traces the model: the traced method equals the method, on another input than the traced one."""
    method = FreqCentering(1.0, True).eval()
    traced = torch.jit.trace(method, _batch(seed=1))
    x = _batch(seed=2)
    torch.testing.assert_close(traced(x), method(x), rtol=0, atol=0)
