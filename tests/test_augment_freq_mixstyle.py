"""Frequency-wise MixStyle: the output's per-frequency statistics against numpy, gradients, dtypes, draws."""

import numpy as np
import pytest
import torch

from helpers.augment.freq_mixstyle import EPS, FreqMixStyle, freq_mixstyle, mix_frequency_statistics


def _batch(batch=6, channels=2, n_mels=5, frames=40, seed=0, dtype=torch.float32):
    """Spectrograms whose rows differ in offset and spread from example to example (like devices)."""
    rng = np.random.default_rng(seed)
    offsets = rng.uniform(-8, 2, (batch, 1, n_mels, 1))
    spreads = rng.uniform(0.5, 3, (batch, 1, n_mels, 1))
    values = offsets + spreads * rng.standard_normal((batch, channels, n_mels, frames))
    return torch.tensor(values, dtype=dtype)


def _row_statistics(x: np.ndarray):
    """Per-example, per-frequency mean and population variance over channels and time, in float64."""
    x = x.astype(np.float64)
    return x.mean(axis=(1, 3)), x.var(axis=(1, 3))


def _expected(x: np.ndarray, permutation: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """The mixed batch written out in numpy from the module's formula."""
    mean, var = _row_statistics(x)
    std = np.sqrt(var + EPS)
    lam = lam.astype(np.float64)[:, None]
    mixed_mean = lam * mean + (1 - lam) * mean[permutation]
    mixed_std = lam * std + (1 - lam) * std[permutation]
    normalised = (x - mean[:, None, :, None]) / std[:, None, :, None]
    return normalised * mixed_std[:, None, :, None] + mixed_mean[:, None, :, None]


def test_output_statistics_are_the_mixed_statistics():
    x = _batch()
    torch.manual_seed(3)
    out = freq_mixstyle(x, p=1.0, alpha=0.3)
    torch.manual_seed(3)
    permutation, lam = FreqMixStyle(1.0, 0.3).draw(len(x))
    assert sorted(permutation.tolist()) == list(range(len(x)))
    assert not torch.equal(permutation, torch.arange(len(x)))  # the seed gives a case where examples swap

    mean, var = _row_statistics(x.numpy())
    std = np.sqrt(var + EPS)
    p, weight = permutation.numpy(), lam.numpy().astype(np.float64)[:, None]
    out_mean, out_var = _row_statistics(out.numpy())
    np.testing.assert_allclose(out_mean, weight * mean + (1 - weight) * mean[p], rtol=1e-5, atol=1e-5)
    # the own standard deviation includes epsilon, so the output's is the mixed one times sqrt(var / (var + eps))
    expected_std = (weight * std + (1 - weight) * std[p]) * np.sqrt(var / (var + EPS))
    np.testing.assert_allclose(np.sqrt(out_var), expected_std, rtol=1e-5)


def test_mix_frequency_statistics_matches_numpy_for_given_weights():
    x = _batch(batch=3, channels=1, n_mels=4, frames=7, seed=1, dtype=torch.float64)
    permutation = torch.tensor([2, 0, 1])
    lam = torch.tensor([0.0, 0.25, 1.0])
    out = mix_frequency_statistics(x, permutation, lam)
    np.testing.assert_allclose(out.numpy(), _expected(x.numpy(), permutation.numpy(), lam.numpy()), rtol=1e-12)
    # lam 1 keeps the example (up to epsilon); lam 0 gives it example 2's row statistics entirely
    np.testing.assert_allclose(out[2].numpy(), x[2].numpy(), atol=1e-5)
    np.testing.assert_allclose(out[0].mean(dim=(0, 2)).numpy(), x[2].mean(dim=(0, 2)).numpy(), atol=1e-10)


def test_p_zero_is_identity_and_draws_nothing():
    x = _batch()
    torch.manual_seed(0)
    state = torch.get_rng_state()
    out = freq_mixstyle(x, p=0.0, alpha=0.3)
    assert out is x
    assert torch.equal(torch.get_rng_state(), state)


def test_p_one_always_mixes():
    x = _batch()
    torch.manual_seed(0)
    for _ in range(20):
        out = freq_mixstyle(x, p=1.0, alpha=0.3)
        assert not torch.allclose(out, x, atol=1e-3)


def test_batches_are_mixed_with_probability_p():
    torch.manual_seed(0)
    mixer = FreqMixStyle(0.4, 0.3)
    n = 4000
    mixed = sum(mixer.draw(4) is not None for _ in range(n))
    # binomial(4000, 0.4): standard deviation 31; allow 4 of them
    assert abs(mixed - 0.4 * n) < 4 * np.sqrt(n * 0.4 * 0.6)


def test_weights_follow_beta_alpha_alpha():
    """lam is not folded (unlike mixup): compare mean, spread and quantiles with numpy's Beta(0.3, 0.3)."""
    torch.manual_seed(0)
    lams = torch.cat([FreqMixStyle(1.0, 0.3).draw(5000)[1] for _ in range(20)]).numpy()
    draws = np.random.default_rng(0).beta(0.3, 0.3, size=200_000)
    assert lams.min() >= 0 and lams.max() <= 1
    assert lams.mean() == pytest.approx(0.5, abs=0.01)
    assert lams.std() == pytest.approx(draws.std(), abs=0.01)
    for q in (0.1, 0.25, 0.75, 0.9):
        assert np.quantile(lams, q) == pytest.approx(np.quantile(draws, q), abs=0.015)


def test_gradient_reaches_the_input_through_the_normalised_values_only():
    """With the statistics detached, d out / d x = mixed_std / own_std for every value of the row."""
    x = _batch(batch=4, seed=2, dtype=torch.float64).requires_grad_(True)
    permutation, lam = torch.tensor([1, 2, 3, 0]), torch.tensor([0.2, 0.5, 0.9, 0.4])
    mix_frequency_statistics(x, permutation, lam).sum().backward()
    _, var = _row_statistics(x.detach().numpy())
    std = np.sqrt(var + EPS)
    weight = lam.numpy().astype(np.float64)[:, None]
    ratio = (weight * std + (1 - weight) * std[permutation.numpy()]) / std
    expected = np.broadcast_to(ratio[:, None, :, None], x.shape)
    np.testing.assert_allclose(x.grad.numpy(), expected, rtol=1e-10)


def test_gradient_flows_through_the_public_function():
    x = _batch().requires_grad_(True)
    torch.manual_seed(0)
    freq_mixstyle(x, p=1.0, alpha=0.3).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("dtype", "tolerance"),
    [(torch.float32, 1e-5), (torch.float64, 1e-12), (torch.bfloat16, 2e-2), (torch.float16, 2e-3)],
)
def test_shape_dtype_and_values_are_kept_for_every_float_dtype(dtype, tolerance):
    """16-bit input is mixed with float32 statistics: the result equals the float64 computation on the
    same (rounded) input within one rounding of the dtype, relative to the values' scale."""
    x = _batch(dtype=dtype)
    permutation, lam = torch.tensor([3, 0, 5, 1, 2, 4]), torch.tensor([0.1, 0.9, 0.5, 0.3, 0.7, 0.0])
    out = mix_frequency_statistics(x, permutation, lam)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    expected = _expected(x.double().numpy(), permutation.numpy(), lam.numpy())
    assert np.isfinite(out.double().numpy()).all()
    np.testing.assert_allclose(out.double().numpy(), expected, atol=tolerance * np.abs(expected).max())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_batch_draws_from_the_cpu_generator_and_matches_the_cpu_result():
    x = _batch()
    torch.manual_seed(7)
    on_cpu = freq_mixstyle(x, 1.0, 0.3)
    cuda_state = torch.cuda.get_rng_state()
    torch.manual_seed(7)
    on_cuda = freq_mixstyle(x.cuda(), 1.0, 0.3)
    assert on_cuda.device.type == "cuda"
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=1e-5, atol=1e-5)
    assert torch.equal(torch.cuda.get_rng_state(), cuda_state)


def test_seeded_calls_repeat_and_other_seeds_differ():
    x = _batch()
    torch.manual_seed(5)
    first = freq_mixstyle(x, 0.5, 0.3)
    torch.manual_seed(5)
    second = freq_mixstyle(x, 0.5, 0.3)
    assert torch.equal(first, second)
    outputs = []
    for seed in range(6):
        torch.manual_seed(seed)
        outputs.append(freq_mixstyle(x, 1.0, 0.3))
    assert not all(torch.equal(outputs[0], other) for other in outputs[1:])


def test_a_batch_of_one_and_a_single_frame_stay_finite():
    single = _batch(batch=1)
    torch.manual_seed(0)
    np.testing.assert_allclose(freq_mixstyle(single, 1.0, 0.3).numpy(), single.numpy(), atol=1e-4)
    one_frame = _batch(batch=3, channels=1, frames=1)
    assert torch.isfinite(freq_mixstyle(one_frame, 1.0, 0.3)).all()


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), "0.4", True])
def test_invalid_p_names_the_key_and_the_range(p):
    with pytest.raises(ValueError, match=r"freq_mixstyle_p=.*\[0, 1\]"):
        FreqMixStyle(p, 0.3)


@pytest.mark.parametrize("alpha", [0, -0.3, float("nan"), float("inf")])
def test_invalid_alpha_names_the_key_and_how_to_turn_it_off(alpha):
    with pytest.raises(ValueError, match=r"freq_mixstyle_alpha=.*> 0.*freq_mixstyle_p=0"):
        FreqMixStyle(0.4, alpha)


@pytest.mark.parametrize("x", [torch.zeros(2, 5, 40), torch.zeros(2, 1, 5, 40, dtype=torch.long)])
def test_input_that_is_not_a_float_spectrogram_batch_is_rejected(x):
    with pytest.raises(ValueError, match=r"\(batch, channels, n_mels, frames\)"):
        freq_mixstyle(x, 1.0, 0.3)
