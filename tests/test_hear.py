"""The HEAR 2021 API (helpers.hear) on checkpoints of each experiment: the published validator's checks, and every
embedding against the checkpoint's model run on windows cut here, by hand or in plain numpy.

The validator (hearvalidator 2021.0.6, installed without its dependencies by the README's set-up:
requirements-hear.txt) imports tensorflow at the top but uses it only for TensorFlow models, apart from one
``isinstance(model, tf.Module)``; its torch checks run here with a stand-in ``tensorflow`` module holding a
``Module`` class that no model is an instance of.
"""

import importlib
import sys
import types
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

import helpers.hear as hear
from datasets.dcase20.demo import SCENE_RECIPES, SEEN_DEVICES, UNSEEN_DEVICES
from datasets.nsynth.demo import FAMILIES
from errors import ConfigurationError
from helpers.checkpoint import NETWORK_PREFIXES, checkpoint_entry
from helpers.model_spec import ModelSpec
from helpers.training.fit import model_spec

VALIDATOR_INSTALL = "pip install --no-deps --ignore-requires-python -r requirements-hear.txt"


@dataclass(frozen=True)
class Setup:
    """An experiment's configuration for a small checkpoint, and its data's classes and domains."""

    updates: dict
    classes: list[str]
    domains: list[str]
    seen: list[str]
    named_configs: list[str] = field(default_factory=list)


EXPERIMENTS = {
    "ex_dcase20": Setup({"basedataset": {"clip_length": 1.0}}, list(SCENE_RECIPES),
                        [*SEEN_DEVICES, *UNSEEN_DEVICES], list(SEEN_DEVICES)),
    "ex_nsynth": Setup({"basedataset": {"clip_length": 1.0, "sample_rate": 22050},
                        "models": {"net": {"rf_norm_t": "per_row_1"}}},
                       list(FAMILIES), ["acoustic", "electronic", "synthetic"], ["acoustic"]),
    "ex_folder": Setup({"basedataset": {"clip_length": 1.0, "sample_rate": 16000}}, ["dog", "rain", "siren"],
                       ["phone", "studio"], ["studio"], ["cpu_tiny", "freq_centering"]),
    "ex_dcase22": Setup({"basedataset": {}}, list(SCENE_RECIPES), [*SEEN_DEVICES, *UNSEEN_DEVICES],
                        list(SEEN_DEVICES)),
    "ex_esc50": Setup({"basedataset": {"clip_length": 1.0, "sample_rate": 44100}}, ["dog", "rain", "siren"],
                      ["all"], ["all"]),
}  # fmt: skip


@pytest.fixture(scope="module", params=list(EXPERIMENTS))
def trained(request, tmp_path_factory, load_experiment, cache_dir):
    """(checkpoint path, its AudioModel in eval mode) of a small network configured as the experiment configures it."""
    name, setup = request.param, EXPERIMENTS[request.param]
    updates = {**setup.updates, "basedataset": {**setup.updates["basedataset"], "cache_dir": str(cache_dir)}}
    config = load_experiment(name).run("print_config", config_updates=updates, named_configs=setup.named_configs,
                                       options={"--capture": "sys", "--loglevel": "ERROR"}).config
    spec = model_spec(sys.modules[name].DATASET, config).with_class_count(setup.classes)
    return write_checkpoint(tmp_path_factory.mktemp(name) / "best.ckpt", spec, setup.classes, setup.domains, setup.seen,
                            sys.modules[name].DATASET.Data.name)


def write_checkpoint(path, spec: ModelSpec, classes, domains, seen, dataset: str):
    torch.manual_seed(0)
    model = spec.build()
    state = {NETWORK_PREFIXES["plain"] + key: value for key, value in model.net.state_dict().items()}
    torch.save({"state_dict": state, "frito": checkpoint_entry(spec, classes, domains, seen, dataset)}, path)
    return path, model.eval()


@pytest.fixture(scope="module")
def validator():
    """hearvalidator.validate, imported with the stand-in tensorflow module."""
    stand_in = types.ModuleType("tensorflow")
    stand_in.Module = type("Module", (), {})
    saved = sys.modules.get("tensorflow")
    sys.modules["tensorflow"] = stand_in
    try:
        return importlib.import_module("hearvalidator.validate")
    except ModuleNotFoundError as missing:
        pytest.fail(f"{missing}: the HEAR validator is installed by the README's set-up: {VALIDATOR_INSTALL}")
    finally:
        if saved is None:
            del sys.modules["tensorflow"]
        else:
            sys.modules["tensorflow"] = saved


def test_the_hear_validator_accepts_the_checkpoint(trained, validator, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["hear-validator", "helpers.hear", "--model", str(trained[0]), "--device", "cpu"])
    with pytest.warns(UserWarning, match="rounding errors accumulating"):
        validator.main()
    out = capsys.readouterr().out
    assert f"Model sample rate is: {trained[1].front_end.sr}" in out
    assert out.rstrip().endswith("Looks good!")


def reference(model, windows: np.ndarray) -> np.ndarray:
    """[logits | embedding] of each window (n, samples), one at a time through the checkpoint's model."""
    with torch.no_grad():
        outputs = [torch.cat(model(torch.from_numpy(window)[None]), dim=-1)[0] for window in windows]
    return torch.stack(outputs).numpy()


def sounds(n_sounds: int, n_samples: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.8, 0.8, (n_sounds, n_samples)).astype(np.float32)


def test_sizes_and_layout(trained):
    path, model = trained
    hear_model = hear.load_model(path, device="cpu")
    n_classes, embed_dim = model.net.n_classes, model.net.embed_dim
    assert hear_model.sample_rate == model.front_end.sr
    assert hear_model.scene_embedding_size == hear_model.timestamp_embedding_size == n_classes + embed_dim
    assert isinstance(hear_model, torch.nn.Module) and isinstance(hear_model.scene_embedding_size, int)


def test_timestamp_embeddings_are_the_network_on_windows_centred_on_the_timestamps(trained):
    path, model = trained
    hear_model = hear.load_model(path, device="cpu")
    rate = hear_model.sample_rate
    audio = sounds(2, round(0.37 * rate) + 3, seed=1)
    embeddings, timestamps = hear.get_timestamp_embeddings(torch.from_numpy(audio), hear_model)
    expected_times = [0.0, 50.0, 100.0, 150.0, 200.0, 250.0, 300.0, 350.0]  # up to the sound's 370 ms
    assert timestamps.dtype == embeddings.dtype == torch.float32
    assert timestamps.tolist() == [expected_times, expected_times]
    window = 16 * model.front_end.hopsize  # one patch of frames
    for sound, sound_embeddings in zip(audio, embeddings, strict=True):
        padded = np.concatenate([np.zeros(window), sound, np.zeros(window)]).astype(np.float32)
        centres = [int(np.floor(t * rate / 1000 + 0.5)) for t in expected_times]  # nearest sample, halves up
        windows = np.stack([padded[window + c - window // 2 : window + c - window // 2 + window] for c in centres])
        np.testing.assert_allclose(sound_embeddings.numpy(), reference(model, windows), atol=2e-5)


def test_scene_embeddings_are_the_mean_over_training_clip_windows(trained):
    path, model = trained
    hear_model = hear.load_model(path, device="cpu")
    clip = round(hear_model.sample_rate * 1.0)  # the checkpoints' 1 s training clips
    long, short = sounds(2, round(2.3 * clip), seed=2), sounds(1, round(0.4 * clip), seed=3)
    starts = [0, clip // 2, clip, round(2.3 * clip) - clip]  # half a clip apart, the last one ending at the end
    scene = hear.get_scene_embeddings(torch.from_numpy(long), hear_model)
    assert scene.shape == (2, hear_model.scene_embedding_size) and scene.dtype == torch.float32
    for sound, embedding in zip(long, scene, strict=True):
        windows = np.stack([sound[start : start + clip] for start in starts])
        np.testing.assert_allclose(embedding.numpy(), reference(model, windows).mean(axis=0), atol=2e-5)
    padded = np.concatenate([short[0], np.zeros(clip - short.shape[1], np.float32)])
    np.testing.assert_allclose(hear.get_scene_embeddings(torch.from_numpy(short), hear_model)[0].numpy(),
                               reference(model, padded[None])[0], atol=2e-5)


@pytest.fixture(scope="module")
def folder_checkpoint(tmp_path_factory):
    """A small checkpoint at 16 kHz, 1 s clips, frames every 10 ms."""
    spec = ModelSpec.of("passt_mini", clip_length=1.0, n_classes=2, sample_rate=16000, rf_norm_t="per_row_2",
                        mel={"n_mels": 64, "win_length": 400, "hopsize": 160, "n_fft": 512})
    return write_checkpoint(tmp_path_factory.mktemp("folder") / "best.ckpt", spec, ["a", "b"], ["x"], ["x"], "folder")


def test_long_audio_is_scored_in_passes_of_bounded_size(folder_checkpoint, monkeypatch):
    path, model = folder_checkpoint
    hear_model = hear.load_model(path, device="cpu")
    passes = []
    score = hear_model.predictor.score
    monkeypatch.setattr(hear_model.predictor, "score",
                        lambda windows, batch_size: passes.append(windows.shape) or score(windows, batch_size))
    audio = sounds(2, 12 * 16000 + 77, seed=4)
    embeddings, timestamps = hear.get_timestamp_embeddings(torch.from_numpy(audio), hear_model)
    assert timestamps.shape == (2, 241) and timestamps[0, -1] == 12000.0  # 0, 50, ..., 12000 ms
    assert all(n_windows * samples <= 16 * 16000 for n_windows, samples in passes)  # predict's 16 clips of 1 s
    assert len(passes) == 5 and sum(n_windows for n_windows, _ in passes) == 2 * 241
    padded = np.pad(audio[1], 1280)  # windows of 2560 samples, centred every 800 samples
    picked = [0, 1, 120, 239, 240]
    windows = np.stack([padded[800 * index : 800 * index + 2560] for index in picked])
    np.testing.assert_allclose(embeddings[1, picked].numpy(), reference(model, windows), atol=2e-5)


def test_timestamps_do_not_drift_on_long_audio(folder_checkpoint):
    hear_model = hear.load_model(folder_checkpoint[0], device="cpu", timestamp_hop_ms=12.5)
    times, centres = hear_model.timestamps(20 * 60 * 16000)  # 20 minutes, a hop of 200 samples
    assert times.shape == (1, 96001) and times[0, -1] == 1_200_000.0 and centres[-1] == 19_200_000
    hear_model = hear.load_model(folder_checkpoint[0], device="cpu", timestamp_hop_ms=0.03125)  # half a sample
    times, centres = hear_model.timestamps(5)
    assert centres == [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5] and times[0, 3] == 0.09375  # halves rounded up


def test_a_batch_of_sounds_gets_each_sound_s_own_embeddings(folder_checkpoint):
    hear_model = hear.load_model(folder_checkpoint[0], device="cpu")
    audio = torch.from_numpy(sounds(3, 24000, seed=5))
    together, _ = hear.get_timestamp_embeddings(audio, hear_model)
    scene = hear.get_scene_embeddings(audio, hear_model)
    for index in range(3):
        alone, _ = hear.get_timestamp_embeddings(audio[index : index + 1], hear_model)
        torch.testing.assert_close(together[index], alone[0], atol=1e-5, rtol=0)
        torch.testing.assert_close(scene[index], hear.get_scene_embeddings(audio[index : index + 1], hear_model)[0],
                                   atol=1e-5, rtol=0)


def test_settings_and_audio_the_api_cannot_serve_are_refused(folder_checkpoint, tmp_path):
    path = folder_checkpoint[0]
    spec = ModelSpec.of("passt_mini", clip_length=1.0, n_classes=2, sample_rate=8000, mel={"n_mels": 64})
    write_checkpoint(tmp_path / "8k.ckpt", spec, ["a", "b"], ["x"], ["x"], "folder")
    with pytest.raises(ConfigurationError, match="takes 8000 Hz audio; the HEAR API serves audio at 16000, 22050, "
                                                 "32000, 44100, 48000 Hz only"):
        hear.load_model(tmp_path / "8k.ckpt", device="cpu")
    with pytest.raises(ConfigurationError, match=r"timestamp_window_ms=50 gives 800 samples; the network takes 2401 "
                                                 r"\(one patch of frames\) to 16000 samples .* from 150.1 to 1000.0"):
        hear.load_model(path, device="cpu", timestamp_window_ms=50)
    with pytest.raises(ConfigurationError, match="timestamp_hop_ms=0: the time between timestamps must be positive"):
        hear.load_model(path, device="cpu", timestamp_hop_ms=0)
    hear_model = hear.load_model(path, device="cpu")
    for audio, message in ((torch.zeros(16000), r"\(n_sounds, n_samples\) .* got shape \(16000,\)"),
                           (torch.zeros(2, 0), "got shape"),
                           (torch.zeros(2, 100, dtype=torch.int16), "float samples"),
                           (np.zeros((2, 100), np.float32), "must be a torch.Tensor")):
        with pytest.raises(ValueError, match=message):
            hear.get_scene_embeddings(audio, hear_model)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_embeddings_on_cuda_match_the_cpu(folder_checkpoint):
    hear_model = hear.load_model(folder_checkpoint[0], device="cpu")
    audio = torch.from_numpy(sounds(2, 40000, seed=6))
    on_cpu = hear.get_scene_embeddings(audio, hear_model), *hear.get_timestamp_embeddings(audio, hear_model)
    hear_model.to("cuda")
    on_cuda = hear.get_scene_embeddings(audio.cuda(), hear_model), *hear.get_timestamp_embeddings(audio.cuda(),
                                                                                                 hear_model)
    for cpu, cuda in zip(on_cpu, on_cuda, strict=True):
        torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-4, rtol=1e-4)
