"""Mel front-end tests; expected values come from a plain numpy re-derivation of the pipeline."""

import numpy as np
import pytest
import torch

from models import preprocess
from models.preprocess import AugmentMelSTFT, kaldi_mel_bank


def numpy_kaldi_bank(n_mels, n_fft, sr, fmin, fmax):
    """Kaldi's filterbank written out filter by filter, plus the zero Nyquist column."""
    def mel(f):
        return 1127.0 * np.log(1.0 + np.asarray(f, dtype=np.float64) / 700.0)

    delta = (mel(fmax) - mel(fmin)) / (n_mels + 1)
    bins_mel = mel(np.arange(n_fft // 2 + 1) * sr / n_fft)
    bank = np.zeros((n_mels, n_fft // 2 + 1))
    for i in range(n_mels):
        left, center, right = (mel(fmin) + (i + j) * delta for j in range(3))
        for k, m in enumerate(bins_mel[:-1]):
            if left < m <= center:
                bank[i, k] = (m - left) / (center - left)
            elif center < m < right:
                bank[i, k] = (right - m) / (right - center)
    return bank


def numpy_logmel(wave, n_mels=128, sr=32000, win_length=800, hop=320, n_fft=1024, fmin=0.0, fmax=15000.0):
    """The eval-mode pipeline for one waveform, frame by frame in float64."""
    emphasised = wave[1:] - 0.97 * wave[:-1]
    padded = np.pad(emphasised, n_fft // 2, mode="reflect")
    window = np.zeros(n_fft)
    offset = (n_fft - win_length) // 2  # torch.stft centres the shorter window inside n_fft
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_length) / (win_length - 1))  # symmetric
    window[offset:offset + win_length] = hann
    n_frames = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[t * hop:t * hop + n_fft] * window for t in range(n_frames)], axis=1)
    power = np.abs(np.fft.rfft(frames, axis=0)) ** 2
    mel = numpy_kaldi_bank(n_mels, n_fft, sr, fmin, fmax) @ power
    return (np.log(mel + 1e-5) + 4.5) / 5.0


@pytest.fixture
def waves():
    return torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (3, 32000)).astype(np.float32))


@pytest.mark.parametrize("n_mels, sr, n_fft, fmin, fmax", [
    (128, 32000, 1024, 0.0, 15000.0),
    (128, 32000, 1024, 7.0, 16000.0),  # fmax at Nyquist: the last column must still be zero
    (64, 16000, 512, 50.0, 7600.0),
    (40, 22050, 2048, 20.5, 9000.25),
])
def test_filterbank_matches_numpy_kaldi_formula(n_mels, sr, n_fft, fmin, fmax):
    bank = kaldi_mel_bank(n_mels, n_fft, sr, fmin, fmax)
    expected = numpy_kaldi_bank(n_mels, n_fft, sr, fmin, fmax)
    assert bank.shape == (n_mels, n_fft // 2 + 1) and bank.dtype == torch.float32
    np.testing.assert_allclose(bank.numpy(), expected, atol=1e-6)
    assert (bank[:, -1] == 0).all()


def test_eval_logmel_matches_numpy_pipeline(waves):
    module = AugmentMelSTFT().eval()
    out = module(waves)
    for wave, spec in zip(waves.double().numpy(), out, strict=True):
        np.testing.assert_allclose(spec.numpy(), numpy_logmel(wave), atol=1e-4)


def test_eval_logmel_matches_numpy_with_other_settings(waves):
    settings = dict(n_mels=64, sr=16000, win_length=400, hop=160, n_fft=512, fmin=50.0, fmax=7000.0)
    module = AugmentMelSTFT(n_mels=64, sr=16000, win_length=400, hopsize=160, n_fft=512, fmin=50.0,
                            fmax=7000.0, fmax_aug_range=1000).eval()
    expected = numpy_logmel(waves[0].double().numpy(), **settings)
    np.testing.assert_allclose(module(waves[:1])[0].numpy(), expected, atol=1e-4)


def test_sine_peaks_in_the_mel_band_centred_on_its_frequency():
    sr, n_mels, fmax, band = 32000, 128, 15000.0, 80
    mel_top = 1127 * np.log(1 + fmax / 700)
    freq = 700 * (np.exp((band + 1) * mel_top / (n_mels + 1) / 1127) - 1)  # centre of filter `band`
    wave = np.sin(2 * np.pi * freq * np.arange(sr) / sr).astype(np.float32)
    out = AugmentMelSTFT().eval()(torch.from_numpy(wave)[None])
    assert out[0, :, 5:-5].mean(dim=1).argmax().item() == band


@pytest.mark.parametrize("n_samples, frames", [
    (320000, 1000),  # 10 s at 32 kHz: pre-emphasis leaves 319999 samples, 1 + 319999 // 320 = 1000
    (320001, 1001),
    (32000, 100),
    (514, 2),  # shortest input: 513 emphasised samples exceed the 512-sample reflect padding
])
def test_output_shape_and_frames_for(n_samples, frames):
    module = AugmentMelSTFT().eval()
    assert module.frames_for(n_samples) == frames
    assert module(torch.zeros(2, n_samples)).shape == (2, 128, frames)


def test_bad_inputs_are_rejected():
    module = AugmentMelSTFT()
    with pytest.raises(ValueError, match="at least 514 samples"):
        module.frames_for(513)
    with pytest.raises(ValueError, match="at least 514 samples"):
        module(torch.zeros(1, 513))
    with pytest.raises(ValueError, match=r"\(batch, samples\)"):
        module(torch.zeros(32000))


def test_eval_is_deterministic(waves):
    module = AugmentMelSTFT().eval()
    torch.testing.assert_close(module(waves), module(waves), rtol=0, atol=0)


def test_fmin_fmax_jitter_changes_output_within_range(waves, monkeypatch):
    edges = []

    def recording_bank(n_mels, n_fft, sr, fmin, fmax):
        edges.append((fmin, fmax))
        return kaldi_mel_bank(n_mels, n_fft, sr, fmin, fmax)

    torch.manual_seed(2)
    module = AugmentMelSTFT()
    monkeypatch.setattr(preprocess, "kaldi_mel_bank", recording_bank)
    reference = module.eval()(waves)
    module.train()
    assert not torch.equal(module(waves), reference)
    for _ in range(50):
        module(waves)
    fmins, fmaxs = zip(*edges, strict=True)
    assert set(fmins) <= set(range(0, 10)) and len(set(fmins)) > 1
    assert all(14000 < fmax <= 16000 for fmax in fmaxs) and len(set(fmaxs)) > 1


def test_banks_are_cached_and_bounded(waves, monkeypatch):
    builds = []

    def counting_bank(*args):
        builds.append(args)
        return kaldi_mel_bank(*args)

    module = AugmentMelSTFT(fmin_aug_range=2, fmax_aug_range=2)
    monkeypatch.setattr(preprocess, "kaldi_mel_bank", counting_bank)
    for _ in range(5):
        module.eval()(waves[:1])
    assert builds == []  # the eval bank was built once at construction
    for _ in range(40):
        module.train()(waves[:1])
    assert len(builds) <= 4  # only 2 x 2 distinct jittered edge pairs exist
    module.fmin_aug_range = module.fmax_aug_range = 1000
    for _ in range(3 * module.max_cached_banks):
        module(waves[:1, :1000])
    assert len(module._train_banks) <= module.max_cached_banks


@pytest.mark.parametrize("cast", [torch.float64, torch.float16, torch.bfloat16])
def test_cast_module_still_computes_in_float32(waves, cast):
    expected = AugmentMelSTFT().eval()(waves)
    module = AugmentMelSTFT().to(cast).eval()
    assert module.window.dtype == module.eval_bank.dtype == torch.float32
    out = module(waves.to(cast))
    assert out.dtype == torch.float32
    if cast == torch.float64:
        torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(module(waves), expected, rtol=0, atol=0)


def test_autocast_does_not_lower_precision(waves):
    module = AugmentMelSTFT().eval()
    expected = module(waves)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(waves)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_output_on_input_device(waves):
    module = AugmentMelSTFT()
    expected = module.eval()(waves)
    module.to("cuda")
    out = module(waves.to("cuda"))
    assert out.device.type == "cuda"
    torch.testing.assert_close(out.cpu(), expected, atol=1e-4, rtol=0)
    module.train()(waves.to("cuda"))
    assert all(bank.device.type == "cuda" for bank in module._train_banks.values())
    module.to("cpu")
    assert module.eval_bank.device.type == "cpu" and not module._train_banks


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_mels=0), "n_mels must be a positive integer"),
    (dict(hopsize=-320), "hopsize must be a positive integer"),
    (dict(sr=32000.5), "sr must be a positive integer"),
    (dict(n_fft=1023, win_length=800), "n_fft must be even"),
    (dict(win_length=1100), "win_length=1100 exceeds n_fft=1024"),
    (dict(fmin_aug_range=-1), "fmin_aug_range must be a non-negative integer"),
    (dict(fmax=17000.0), "exceeds the Nyquist"),
    (dict(fmax=16000.0), "exceeds the Nyquist"),  # fmax + fmax_aug_range / 2 would pass Nyquist
    (dict(fmin=-1.0), "fmin=-1.0 Hz is negative"),
    (dict(fmin=9000.0, fmax=8000.0), "band is empty"),
    (dict(fmin=7000.0, fmax=8000.0), "band is empty"),  # only empty under jitter
    (dict(htk=True), "htk=True is not supported"),
    (dict(norm="slaney"), "norm='slaney' is not supported"),
])
def test_construction_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AugmentMelSTFT(**kwargs)
