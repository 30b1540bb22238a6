"""Inference on raw audio: checkpoint loading, windowing, channel/rate handling, scoring folders of files."""

import csv
import logging

import numpy as np
import pytest
import soundfile
import torch

from datasets import folder
from datasets.audio import load_audio
from errors import ConfigurationError
from helpers.checkpoint import FORMAT_VERSION, NETWORK_PREFIXES, SWA_COUNT
from helpers.experiment.commands import predict_command
from helpers.inference import clip_window_starts, cut_windows, load_model, predict_files
from models.passt import get_model
from models.preprocess import AugmentMelSTFT

RATE = 16000
NET = {"arch": "passt_mini", "n_classes": 3, "input_fdim": 64, "input_tdim": 100, "rf_norm_t": "per_row_2",
       "fstride": 10, "tstride": 10}
MEL = {"n_mels": 64, "sr": RATE, "win_length": 400, "hopsize": 160, "n_fft": 512}
CLASSES = ["bird", "car", "rain"]


def write_checkpoint(path, swa=True, clip_length=1.0, **entries):
    """A frito Lightning checkpoint written by hand: net (+ net_swa) weights and the "frito" entry (plus entries)."""
    torch.manual_seed(0)
    plain, averaged = get_model(**NET), get_model(**NET)
    state = {NETWORK_PREFIXES["plain"] + key: value for key, value in plain.state_dict().items()}
    if swa:
        state.update({NETWORK_PREFIXES["swa"] + key: value for key, value in averaged.state_dict().items()})
        state[SWA_COUNT] = torch.tensor(3)
    meta = {"net": NET, "mel": MEL, "class_names": CLASSES, "domain_names": ["a"], "seen_domains": ["a"],
            "sample_rate": RATE, "clip_length": clip_length, "augment": {}, "version": FORMAT_VERSION, **entries}
    torch.save({"state_dict": state, "frito": meta}, path)
    return plain.eval(), averaged.eval()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("run") / "best.ckpt"
    plain, averaged = write_checkpoint(path)
    return path, plain, averaged


@pytest.fixture(scope="module")
def predictor(checkpoint):
    return load_model(checkpoint[0], device="cpu")


def reference_probabilities(net, windows):
    """Mean softmax over windows, each scored by the network on the eval-mode front-end."""
    mel = AugmentMelSTFT(**MEL).eval()
    with torch.no_grad():
        logits, _ = net(mel(torch.as_tensor(np.stack(windows), dtype=torch.float32)).unsqueeze(1))
    return torch.softmax(logits, dim=-1).mean(dim=0).numpy()


@pytest.mark.parametrize("weights, expected", [("auto", "swa"), ("swa", "swa"), ("plain", "plain")])
def test_load_model_takes_the_chosen_weights(checkpoint, weights, expected):
    path, plain, averaged = checkpoint
    predictor = load_model(path, device="cpu", weights=weights)
    reference = averaged if expected == "swa" else plain
    for key, value in predictor.model.net.state_dict().items():
        assert torch.equal(value, reference.state_dict()[key]), key
    assert predictor.class_names == CLASSES and predictor.sample_rate == RATE
    assert not predictor.model.training and not predictor.model.front_end.training


def test_the_domains_trained_on_come_with_the_model(checkpoint):
    assert load_model(checkpoint[0], device="cpu").seen_domains == ["a"]


def test_long_clip_is_scored_in_half_overlapping_windows_and_averaged(predictor, checkpoint):
    rng = np.random.default_rng(0)
    clip = rng.uniform(-0.5, 0.5, 37000).astype(np.float32)  # 2.3 s; windows of 16000 samples, hop 8000
    windows = predictor.windows(clip, RATE)
    starts = [0, 8000, 16000, 21000]  # the last window ends at the clip's end
    assert windows.shape == (4, 16000)
    for window, start in zip(windows, starts, strict=True):
        assert np.array_equal(window.numpy(), clip[start : start + 16000])
    expected = reference_probabilities(checkpoint[2], [clip[s : s + 16000] for s in starts])
    np.testing.assert_allclose(predictor.predict(clip, RATE), expected, atol=1e-6)
    assert predictor.predict(clip, RATE).sum() == pytest.approx(1.0, abs=1e-6)


def test_windows_are_cut_with_silence_beyond_the_audio():
    audio = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 8, 9, 10], [-1, -2, -3, -4, -5, -6, -7, -8, -9, -10]])
    windows = cut_windows(audio, 4, [-2, 3, 8, 12, -5])
    expected = [[[0, 0, 1, 2], [4, 5, 6, 7], [9, 10, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]]
    assert windows.shape == (2, 5, 4)
    assert windows[0].tolist() == expected[0] and windows[1].tolist() == (-torch.tensor(expected[0])).tolist()
    assert cut_windows(audio[0], 12, [-1]).tolist() == [[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0]]


@pytest.mark.parametrize("n_samples, window, hop, starts", [
    (3, 4, 2, [0]),              # shorter than a window: one window, padded at the end
    (4, 4, 2, [0]),              # exactly one window
    (10, 4, 2, [0, 2, 4, 6]),    # the hops reach the end
    (11, 4, 2, [0, 2, 4, 6, 7]),  # one more window, ending at the clip's end
    (10, 4, 4, [0, 4, 6]),
    (10, 4, 1, [0, 1, 2, 3, 4, 5, 6]),
])  # fmt: skip
def test_clip_window_starts(n_samples, window, hop, starts):
    assert clip_window_starts(n_samples, window, hop) == starts


@pytest.fixture(scope="module")
def quarter_hop(checkpoint):
    return load_model(checkpoint[0], device="cpu", hop_fraction=0.25)


def test_the_hop_between_windows_is_a_setting(quarter_hop, checkpoint, tmp_path):
    clip = np.random.default_rng(6).uniform(-0.5, 0.5, 37000).astype(np.float32)
    starts = [0, 4000, 8000, 12000, 16000, 20000, 21000]  # windows of 16000 samples every 4000, one ending at 37000
    windows = [clip[start : start + 16000] for start in starts]
    np.testing.assert_array_equal(quarter_hop.windows(clip, RATE).numpy(), np.stack(windows))
    expected = reference_probabilities(checkpoint[2], windows)
    np.testing.assert_allclose(quarter_hop.predict(clip, RATE), expected, atol=1e-6)
    mel = AugmentMelSTFT(**MEL).eval()
    with torch.no_grad():
        _, embeddings = checkpoint[2](mel(torch.from_numpy(np.stack(windows))).unsqueeze(1))
    np.testing.assert_allclose(quarter_hop.embed(clip, RATE), embeddings.mean(dim=0).numpy(), atol=1e-5)
    soundfile.write(tmp_path / "long.wav", clip, RATE, subtype="FLOAT")
    csv_path = tmp_path / "predictions.csv"
    predict_command(folder, str(checkpoint[0]), str(tmp_path / "long.wav"), 3, "auto", str(csv_path), 2, 0.25)
    row = next(csv.DictReader(csv_path.open()))
    np.testing.assert_allclose([float(row[name]) for name in CLASSES], expected, atol=1e-5)


@pytest.mark.parametrize("hop_fraction", [0, 1.5, -0.5, True])
def test_a_hop_outside_the_window_is_refused(checkpoint, hop_fraction):
    with pytest.raises(ConfigurationError, match=rf"hop_fraction={hop_fraction!r}: .* must be a fraction of the "
                                                 r"window in \(0, 1\], e.g. hop_fraction=0.5"):
        load_model(checkpoint[0], device="cpu", hop_fraction=hop_fraction)


def test_short_clip_is_padded_with_silence(predictor, checkpoint):
    clip = np.linspace(-0.3, 0.3, 4000, dtype=np.float32)
    windows = predictor.windows(clip, RATE)
    assert windows.shape == (1, 16000)
    assert np.array_equal(windows[0, :4000].numpy(), clip) and not windows[0, 4000:].any()
    padded = np.concatenate([clip, np.zeros(12000, np.float32)])
    np.testing.assert_allclose(predictor.predict(clip, RATE), reference_probabilities(checkpoint[2], [padded]),
                               atol=1e-6)


def test_channels_are_averaged_and_integer_pcm_is_scaled(predictor):
    rng = np.random.default_rng(1)
    stereo = rng.uniform(-0.5, 0.5, (2, 20000)).astype(np.float32)
    mono = stereo.mean(axis=0)
    np.testing.assert_allclose(predictor.predict(stereo, RATE), predictor.predict(mono, RATE), atol=1e-6)
    np.testing.assert_allclose(predictor.predict(torch.from_numpy(stereo), RATE), predictor.predict(mono, RATE),
                               atol=1e-6)
    pcm = (mono * 32768).astype(np.int16)
    scaled = pcm / 32768.0  # 20000 samples: windows at 0 and 4000
    np.testing.assert_allclose(predictor.windows(pcm, RATE).numpy(), [scaled[:16000], scaled[4000:]], atol=1e-7)
    assert predictor.embed(stereo, RATE).shape == (96,)


def test_other_sample_rates_are_resampled(predictor):
    seconds = np.arange(44100) / 44100
    windows = predictor.windows(np.sin(2 * np.pi * 440 * seconds).astype(np.float32), 44100)
    expected = np.sin(2 * np.pi * 440 * np.arange(RATE) / RATE)
    assert windows.shape == (1, RATE)
    np.testing.assert_allclose(windows[0, 200:-200].numpy(), expected[200:-200], atol=2e-3)


@pytest.mark.parametrize("waveform, match", [
    (np.zeros((16000, 2), np.float32), "more channels than samples"),
    (np.zeros((1, 2, 100), np.float32), "shape"),
    (np.zeros(0, np.float32), "no samples"),
    (np.full(100, np.nan, np.float32), "NaN"),
])
def test_bad_waveforms_are_errors(predictor, waveform, match):
    with pytest.raises(ValueError, match=match):
        predictor.predict(waveform, RATE)


def test_embedding_of_a_long_clip_is_the_mean_over_windows(predictor, checkpoint):
    clip = np.random.default_rng(2).uniform(-0.5, 0.5, 24000).astype(np.float32)  # windows at 0 and 8000
    mel = AugmentMelSTFT(**MEL).eval()
    with torch.no_grad():
        _, embeddings = checkpoint[2](mel(torch.from_numpy(np.stack([clip[:16000], clip[8000:]]))).unsqueeze(1))
    np.testing.assert_allclose(predictor.embed(clip, RATE), embeddings.mean(dim=0).numpy(), atol=1e-5)


@pytest.fixture
def audio_folder(tmp_path):
    """Odd files: stereo 44.1 kHz, 1 s flac, 30 s ogg, an mp3 in a subfolder, a corrupt wav, a text file."""
    rng = np.random.default_rng(3)
    folder = tmp_path / "recordings"
    (folder / "more").mkdir(parents=True)
    soundfile.write(folder / "stereo_44k.wav", rng.uniform(-0.3, 0.3, (66150, 2)), 44100)
    soundfile.write(folder / "one_second.flac", rng.uniform(-0.3, 0.3, RATE), RATE)
    soundfile.write(folder / "half_minute.ogg", rng.uniform(-0.3, 0.3, 30 * RATE), RATE)
    soundfile.write(folder / "more" / "clip.mp3", rng.uniform(-0.3, 0.3, 2 * 22050), 22050, format="MP3")
    (folder / "broken.wav").write_bytes(b"RIFF....WAVEfmt this is not audio")
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_predict_files_scores_a_folder_writes_a_csv_and_skips_unreadable_files(predictor, audio_folder, caplog):
    csv_path = audio_folder.parent / "out" / "predictions.csv"
    with caplog.at_level(logging.INFO, logger="helpers.inference"):
        report = predict_files(predictor, [audio_folder], top_k=2, csv_path=csv_path)
    names = [p.split("/recordings/")[1] for p in (prediction.path for prediction in report.predictions)]
    assert names == ["half_minute.ogg", "more/clip.mp3", "one_second.flac", "stereo_44k.wav"]
    assert [path.rsplit("/", 1)[1] for path, _ in report.skipped] == ["broken.wav"]
    assert "not readable as audio" in report.skipped[0][1]
    assert not any("broken.wav" in r.getMessage() for r in caplog.records)  # reported once, by the caller

    stereo, rate = soundfile.read(audio_folder / "stereo_44k.wav", dtype="float32")
    by_name = {p.path.rsplit("/", 1)[1]: p for p in report.predictions}
    np.testing.assert_allclose(by_name["stereo_44k.wav"].probabilities, predictor.predict(stereo.T, rate), atol=1e-5)

    with open(csv_path, newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["file", "top_1", "top_2", *CLASSES, "skipped"]
    assert len(rows) == 6
    (broken_path, reason), = report.skipped
    assert rows[5] == [broken_path, *[""] * (2 + len(CLASSES)), reason]  # the skipped file, with the reason
    for row, prediction in zip(rows[1:5], report.predictions, strict=True):
        probabilities = np.array(row[3:-1], dtype=float)
        assert row[0] == prediction.path and row[-1] == ""
        assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)
        order = np.argsort(-probabilities, kind="stable")
        assert row[1:3] == [CLASSES[order[0]], CLASSES[order[1]]]
        assert prediction.top[0] == (row[1], pytest.approx(probabilities[order[0]], abs=1e-6))


def reference_windows(clip, window=16000, hop=8000):
    """Windows of a mono clip as the module docstring defines them: padded when short, else every hop and
    one ending at the clip's end."""
    if len(clip) <= window:
        return [np.pad(clip, (0, window - len(clip)))]
    starts = list(range(0, len(clip) - window + 1, hop))
    if starts[-1] + window < len(clip):
        starts.append(len(clip) - window)
    return [clip[start : start + window] for start in starts]


@pytest.mark.parametrize("batch_size", [1, 2, 5, 64])
def test_files_scored_in_shared_batches_get_their_own_windows_probabilities(predictor, checkpoint, audio_folder,
                                                                            batch_size):
    # the 30 s file has 59 windows, the others 1 or 2: batches hold windows of several files, or part of one
    one_at_a_time = audio_folder.parent / "single.csv"
    predict_files(predictor, [audio_folder], csv_path=one_at_a_time, batch_size=1)
    batched = audio_folder.parent / f"batched_{batch_size}.csv"
    report = predict_files(predictor, [audio_folder], csv_path=batched, batch_size=batch_size)
    assert len(report.predictions) == 4 and len(report.skipped) == 1
    for prediction in report.predictions:
        clip = load_audio(prediction.path, RATE)
        expected = reference_probabilities(checkpoint[2], reference_windows(clip))
        np.testing.assert_allclose(prediction.probabilities, expected, atol=1e-5)
    single, shared = (list(csv.reader(path.open())) for path in (one_at_a_time, batched))
    assert [row[:4] for row in single] == [row[:4] for row in shared]  # files and top classes
    np.testing.assert_allclose(np.array([row[4:-1] for row in shared[1:-1]], dtype=float),
                               np.array([row[4:-1] for row in single[1:-1]], dtype=float), atol=1e-5)


def test_predict_clips_keeps_the_order_and_refuses_empty_batches(predictor, checkpoint):
    rng = np.random.default_rng(5)
    clips = [(name, rng.uniform(-0.3, 0.3, n).astype(np.float32), RATE) for name, n in (("a", 40000), ("b", 3000))]
    results = list(predictor.predict_clips(iter(clips), batch_size=3))
    assert [key for key, _ in results] == ["a", "b"]
    for (_, probabilities), (_, clip, _) in zip(results, clips, strict=True):
        expected = reference_probabilities(checkpoint[2], reference_windows(clip))
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        list(predictor.predict_clips(clips, batch_size=0))


def test_existing_csv_is_not_overwritten_unless_asked(predictor, audio_folder):
    csv_path = audio_folder.parent / "predictions.csv"
    csv_path.write_text("user's own file\n")
    with pytest.raises(FileExistsError, match="predictions.csv"):
        predict_files(predictor, [audio_folder / "one_second.flac"], csv_path=csv_path)
    assert csv_path.read_text() == "user's own file\n"
    predict_files(predictor, [audio_folder / "one_second.flac"], csv_path=csv_path, overwrite=True)
    assert csv_path.read_text().startswith("file,top_1,top_2,top_3,bird")  # top_k capped at 3 classes


def test_missing_paths_are_skipped_and_empty_folders_are_an_error(predictor, tmp_path, audio_folder):
    report = predict_files(predictor, [audio_folder / "one_second.flac", tmp_path / "nowhere.wav"])
    assert len(report.predictions) == 1 and report.skipped[0][1] == "no such file or folder"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no audio files"):
        predict_files(predictor, tmp_path / "empty")


def test_checkpoint_errors(tmp_path):
    write_checkpoint(tmp_path / "plain.ckpt", swa=False)
    with pytest.raises(ValueError, match="net_swa"):
        load_model(tmp_path / "plain.ckpt", device="cpu", weights="swa")
    (tmp_path / "broken.ckpt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_model(tmp_path / "broken.ckpt")
    torch.save(get_model(**NET).state_dict(), tmp_path / "weights.pt")
    with pytest.raises(ValueError, match="not a frito checkpoint"):
        load_model(tmp_path / "weights.pt")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_predictions_on_cuda_match_the_cpu(checkpoint):
    clip = np.random.default_rng(4).uniform(-0.5, 0.5, 30000).astype(np.float32)
    on_cpu = load_model(checkpoint[0], device="cpu").predict(clip, RATE)
    on_cuda = load_model(checkpoint[0], device="cuda").predict(clip, RATE)
    np.testing.assert_allclose(on_cuda, on_cpu, atol=1e-4)
