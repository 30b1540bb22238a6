"""Decoding: downmix, resampling, formats, and files that are not usable audio."""

import numpy as np
import pytest
import soundfile

from datasets.audio import AudioError, load_audio


def _ints(n, seed=0):
    return np.random.default_rng(seed).integers(-20000, 20000, n).astype(np.int16)


def test_mono_pcm16_at_the_target_rate_is_read_exactly(tmp_path):
    samples = _ints(1000)
    soundfile.write(tmp_path / "a.wav", samples, 32000, subtype="PCM_16")
    out = load_audio(tmp_path / "a.wav", 32000)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, samples / 32768.0)


def test_stereo_is_averaged_into_mono(tmp_path):
    left, right = _ints(800, 1), _ints(800, 2)
    soundfile.write(tmp_path / "s.wav", np.stack([left, right], axis=1), 32000, subtype="PCM_16")
    expected = (left.astype(np.float64) + right) / 2 / 32768.0
    np.testing.assert_allclose(load_audio(tmp_path / "s.wav", 32000), expected, atol=1e-7)


@pytest.mark.parametrize("file_rate", [16000, 44100, 48000])
def test_other_rates_are_resampled_keeping_duration_and_pitch(tmp_path, file_rate):
    seconds, tone_hz = 0.5, 1000.0
    t = np.arange(int(seconds * file_rate)) / file_rate
    soundfile.write(tmp_path / "t.wav", 0.5 * np.sin(2 * np.pi * tone_hz * t), file_rate, subtype="PCM_24")
    out = load_audio(tmp_path / "t.wav", 32000)
    assert abs(len(out) - seconds * 32000) <= 1
    spectrum = np.abs(np.fft.rfft(out[2000:-2000] * np.hanning(len(out) - 4000)))
    peak_hz = np.argmax(spectrum) * 32000 / (len(out) - 4000)
    assert abs(peak_hz - tone_hz) < 5
    assert np.sqrt(np.mean(out[2000:-2000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.01)


@pytest.mark.parametrize(("extension", "fmt", "subtype"), [("flac", "FLAC", "PCM_16"), ("ogg", "OGG", "VORBIS")])
def test_compressed_formats_decode(tmp_path, extension, fmt, subtype):
    t = np.arange(16000) / 16000
    tone = 0.3 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / f"x.{extension}"
    soundfile.write(path, tone, 16000, format=fmt, subtype=subtype)
    out = load_audio(path, 16000)
    assert len(out) == 16000
    assert np.sqrt(np.mean(out**2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.05)


@pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="libsndfile built without MP3")
def test_mp3_decodes_where_libsndfile_supports_it(tmp_path):
    t = np.arange(32000) / 32000
    soundfile.write(tmp_path / "x.mp3", 0.3 * np.sin(2 * np.pi * 440 * t), 32000, format="MP3")
    out = load_audio(tmp_path / "x.mp3", 32000)
    assert abs(len(out) - 32000) < 2000
    assert np.sqrt(np.mean(out[4000:-4000] ** 2)) == pytest.approx(0.3 / np.sqrt(2), rel=0.1)


def test_unusable_files_raise_audio_error_naming_the_file(tmp_path):
    (tmp_path / "zero.wav").write_bytes(b"")
    (tmp_path / "garbage.wav").write_bytes(b"this is not audio at all" * 20)
    soundfile.write(tmp_path / "no_frames.wav", np.zeros(0, dtype=np.int16), 32000, subtype="PCM_16")
    for name in ("zero.wav", "garbage.wav", "no_frames.wav", "missing.wav"):
        with pytest.raises(AudioError, match=name):
            load_audio(tmp_path / name, 32000)


def test_unknown_resample_quality_is_rejected(tmp_path):
    soundfile.write(tmp_path / "a.wav", _ints(10), 32000, subtype="PCM_16")
    with pytest.raises(ValueError, match="VHQ"):
        load_audio(tmp_path / "a.wav", 16000, quality="best")
