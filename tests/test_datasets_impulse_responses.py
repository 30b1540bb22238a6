"""Device impulse response augmentation: convolution against np.convolve, folders, bad files, draws."""

import logging

import numpy as np
import pytest
import soundfile
import torch
from torch.utils.data import DataLoader, Dataset

from datasets.cache import BadFilesError
from datasets.impulse_responses import (
    BadImpulseResponsesError,
    ImpulseResponseAugment,
    convolve,
    find_impulse_response_files,
    load_impulse_responses,
)

RATE = 16000


def _write(path, samples, rate=RATE, **options):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, rate, **options)


def _gain_folder(tmp_path, gains=(0.5, 1.0, 2.0)):
    """One-sample impulse responses (a gain each, exact in float): the output reveals which was drawn."""
    folder = tmp_path / "irs"
    for i, gain in enumerate(gains):
        _write(folder / f"ir{i}.wav", np.array([gain, 0.0, 0.0], dtype=np.float32), subtype="FLOAT")
    return folder


def _drawn_gain(augment, waveform, domain="a"):
    out = augment(waveform, domain)
    return None if out is waveform else float(out[0] / waveform[0])


@pytest.mark.parametrize(("n_samples", "n_taps"), [(1000, 37), (1000, 1), (300, 1500), (4096, 4096), (1, 5)])
def test_convolution_equals_direct_convolution_cut_to_length(n_samples, n_taps):
    rng = np.random.default_rng(n_samples + n_taps)
    waveform = rng.uniform(-1, 1, n_samples).astype(np.float32)
    impulse_response = (rng.standard_normal(n_taps) * np.exp(-np.arange(n_taps) / 50)).astype(np.float32)
    expected = np.convolve(waveform.astype(np.float64), impulse_response.astype(np.float64))[:n_samples]
    out = convolve(waveform, impulse_response)
    assert out.dtype == np.float32 and out.shape == (n_samples,)
    np.testing.assert_allclose(out, expected, atol=1e-5 * np.abs(expected).max())


def test_a_delayed_impulse_delays_the_clip_without_realignment():
    """The paper's code keeps the first samples of the full convolution: a peak at d delays the clip by d."""
    waveform = np.arange(1, 11, dtype=np.float32)
    impulse_response = np.zeros(4, dtype=np.float32)
    impulse_response[3] = 0.5
    np.testing.assert_allclose(convolve(waveform, impulse_response), [0, 0, 0, 0.5, 1, 1.5, 2, 2.5, 3, 3.5], atol=1e-6)


def test_files_are_found_recursively_sorted_with_hidden_and_other_files_ignored(tmp_path):
    folder = tmp_path / "irs"
    tone = np.full(8, 0.25, dtype=np.float32)
    for name in ("b/x.flac", "a.wav", "b/a.WAV", "c/d/deep.ogg"):
        _write(folder / name, tone, format="OGG" if name.endswith("ogg") else None,
               subtype="VORBIS" if name.endswith("ogg") else None)
    (folder / "README.txt").write_text("MicIRP")
    (folder / ".hidden.wav").write_bytes(b"")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._a.wav").write_bytes(b"\x00\x05\x16\x07")
    names = [path.relative_to(folder).as_posix() for path in find_impulse_response_files(folder)]
    assert names == ["a.wav", "b/a.WAV", "b/x.flac", "c/d/deep.ogg"]


def test_loading_gives_mono_float32_at_the_data_rate(tmp_path):
    folder = tmp_path / "irs"
    samples = np.random.default_rng(0).integers(-20000, 20000, 800).astype(np.int16)
    _write(folder / "exact.wav", samples, subtype="PCM_16")
    left, right = np.linspace(0.1, 0.9, 480), np.linspace(-0.5, 0.3, 480)
    _write(folder / "stereo_48k.wav", np.stack([left, right], axis=1), rate=48000, subtype="FLOAT")
    loaded = {ir.name: ir.samples for ir in load_impulse_responses(folder, RATE)}
    assert list(loaded) == ["exact.wav", "stereo_48k.wav"]
    np.testing.assert_array_equal(loaded["exact.wav"], samples / 32768.0)
    assert loaded["stereo_48k.wav"].dtype == np.float32
    assert abs(len(loaded["stereo_48k.wav"]) - 480 * RATE // 48000) <= 1


@pytest.mark.parametrize("make", ["missing", "file", "empty", "only_other_files"])
def test_an_unusable_folder_is_rejected_at_construction(tmp_path, make):
    folder = tmp_path / "irs"
    if make == "file":
        folder.write_text("not a folder")
    elif make == "empty":
        folder.mkdir()
    elif make == "only_other_files":
        (folder / "sub").mkdir(parents=True)
        (folder / "sub" / "notes.txt").write_text("no audio here")
    with pytest.raises(ValueError, match="dir_folder"):
        ImpulseResponseAugment(folder, RATE, p=0.6)


def _bad_folder(tmp_path):
    folder = _gain_folder(tmp_path, gains=(1.0,))
    (folder / "zero_bytes.wav").write_bytes(b"")
    (folder / "garbage.flac").write_bytes(b"not audio at all" * 10)
    _write(folder / "silent.wav", np.zeros(64, dtype=np.int16), subtype="PCM_16")
    (folder / "dangling.wav").symlink_to(tmp_path / "nowhere.wav")
    return folder


def test_bad_files_are_listed_together_with_the_fix(tmp_path):
    with pytest.raises(BadImpulseResponsesError) as caught:
        ImpulseResponseAugment(_bad_folder(tmp_path), RATE, p=0.6)
    message = str(caught.value)
    assert isinstance(caught.value, BadFilesError)  # caught wherever bad dataset audio is
    assert "4 of 5 impulse response files" in message
    for name, reason in [("zero_bytes.wav", "empty"), ("garbage.flac", "not readable"), ("silent.wav", "zero"),
                         ("dangling.wav", "not found")]:
        assert any(name in line and reason in line for line in message.splitlines()), (name, message)
    assert "skip_bad_files=True" in message


def test_skip_bad_files_keeps_the_usable_ones_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="datasets.impulse_responses"):
        augment = ImpulseResponseAugment(_bad_folder(tmp_path), RATE, p=1.0, skip_bad_files=True)
    assert [ir.name for ir in augment.impulse_responses] == ["ir0.wav"]
    assert "4 of 5" in caplog.text and "left out" in caplog.text


def test_a_folder_without_any_usable_file_fails_even_when_skipping(tmp_path):
    folder = tmp_path / "irs"
    folder.mkdir()
    (folder / "a.wav").write_bytes(b"")
    with pytest.raises(BadImpulseResponsesError, match="No usable impulse response"):
        ImpulseResponseAugment(folder, RATE, p=0.6, skip_bad_files=True)


def test_p_zero_leaves_waveforms_untouched_and_draws_nothing(tmp_path):
    augment = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=0.0)
    waveform = np.linspace(-1, 1, 100, dtype=np.float32)
    state = torch.get_rng_state()
    for _ in range(10):
        assert augment(waveform, "a") is waveform
    assert torch.equal(torch.get_rng_state(), state)
    np.testing.assert_array_equal(waveform, np.linspace(-1, 1, 100, dtype=np.float32))


def test_p_one_always_convolves_with_one_of_the_impulse_responses(tmp_path):
    augment = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=1.0)
    waveform = np.linspace(0.1, 1, 100, dtype=np.float32)
    torch.manual_seed(0)
    for _ in range(50):
        out = augment(waveform, "a")
        assert out is not waveform and out.shape == waveform.shape and out.dtype == np.float32
        gain = out[0] / waveform[0]
        assert min(abs(gain - g) for g in (0.5, 1.0, 2.0)) < 1e-5
        np.testing.assert_allclose(out, gain * waveform, rtol=1e-5)


def test_examples_are_convolved_with_probability_p(tmp_path):
    augment = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=0.6)
    waveform = np.ones(4, dtype=np.float32)
    torch.manual_seed(0)
    n = 3000
    convolved = sum(augment(waveform, "a") is not waveform for _ in range(n))
    assert abs(convolved - 0.6 * n) < 4 * np.sqrt(n * 0.6 * 0.4)


def test_only_the_listed_domains_are_augmented(tmp_path):
    augment = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=1.0, domains=["a"])
    waveform = np.ones(10, dtype=np.float32)
    state = torch.get_rng_state()
    for device in ("b", "c", "s1", "A"):
        assert augment(waveform, device) is waveform
    assert torch.equal(torch.get_rng_state(), state)  # other domains draw nothing
    assert augment(waveform, "a") is not waveform
    every_domain = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=1.0)
    assert every_domain(waveform, "s1") is not waveform


def test_impulse_responses_are_drawn_uniformly(tmp_path):
    augment = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=1.0)
    waveform = np.ones(3, dtype=np.float32)
    torch.manual_seed(0)
    n = 3000
    gains = [_drawn_gain(augment, waveform) for _ in range(n)]
    counts = [sum(abs(gain - g) < 1e-6 for gain in gains) for g in (0.5, 1.0, 2.0)]
    assert sum(counts) == n
    for count in counts:  # binomial(3000, 1/3): standard deviation 26
        assert abs(count - n / 3) < 4 * np.sqrt(n / 3 * 2 / 3)


def test_draws_repeat_under_a_torch_seed(tmp_path):
    augment = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=0.5)
    waveform = np.ones(3, dtype=np.float32)
    runs = []
    for seed in (4, 4, 5):
        torch.manual_seed(seed)
        runs.append([_drawn_gain(augment, waveform) for _ in range(40)])
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


class _Clips(Dataset):
    def __init__(self, augment):
        self.augment = augment

    def __len__(self):
        return 16

    def __getitem__(self, i):
        return torch.from_numpy(self.augment(np.full(4, i + 1.0, dtype=np.float32), "a"))


def test_loader_workers_seeded_by_torch_give_the_same_items(tmp_path):
    """DataLoader seeds each worker's torch generator from its own generator: same seed, same augmentation."""
    augment = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=0.5)

    def epoch(seed):
        loader = DataLoader(_Clips(augment), batch_size=4, num_workers=2,
                            generator=torch.Generator().manual_seed(seed))
        return torch.cat(list(loader))

    first, again, other = epoch(1), epoch(1), epoch(2)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan"), None])
def test_invalid_p_names_the_key(tmp_path, p):
    with pytest.raises(ValueError, match=r"dir_p=.*\[0, 1\]"):
        ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=p)


@pytest.mark.parametrize("domains", ["a", [], ["a", 1]])
def test_invalid_domains_name_the_key(tmp_path, domains):
    with pytest.raises(ValueError, match=r"dir_domains=.*\['a'\]"):
        ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=0.6, domains=domains)


def test_domains_unknown_to_the_training_data_are_reported(tmp_path):
    augment = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=0.6, domains=["A", "b"])
    with pytest.raises(ValueError, match=r"\['A'\] are not devices of the training data.*case-sensitive"):
        augment.check_domains(["a", "b", "c"], domain_kind="device")
    ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=0.6).check_domains(["a"])


@pytest.mark.parametrize("waveform", [np.zeros((1, 100), dtype=np.float32), np.zeros(100, dtype=np.int16),
                                      torch.zeros(100)])
def test_a_waveform_that_is_not_one_mono_float_array_is_rejected(tmp_path, waveform):
    augment = ImpulseResponseAugment(_gain_folder(tmp_path), RATE, p=1.0)
    with pytest.raises(ValueError, match=r"mono float waveform \(samples,\)"):
        augment(waveform, "a")
