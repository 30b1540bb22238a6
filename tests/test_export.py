"""Export: the DFT front-end against torch.stft's, TorchScript and ONNX round trips for every attention form."""

import json

import numpy as np
import onnxruntime
import pytest
import torch

from helpers.checkpoint import FORMAT_VERSION, NETWORK_PREFIXES
from helpers.export import DftLogMel, ExportError, export
from helpers.inference import Predictor
from models.audio_model import AudioModel
from models.passt import get_model
from models.preprocess import AugmentMelSTFT

RATE = 16000
MEL = {"n_mels": 64, "sr": RATE, "win_length": 400, "hopsize": 160, "n_fft": 512}
CLASSES = ["bird", "car", "rain"]
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

FORMS = ["", "per_row_2", "high_low", "row_overlap_2", "sparse_row_2", "high_low_branch"]


def make_predictor(rf_norm_t="", clip_length=1.0):
    torch.manual_seed(0)
    net = get_model("passt_mini", n_classes=3, input_fdim=64, input_tdim=100, rf_norm_t=rf_norm_t)
    return Predictor(AudioModel(AugmentMelSTFT(**MEL), net), CLASSES, RATE, clip_length, device="cpu")


def recording_like(batch, samples, seed=1):
    """Tones, noise and a silent stretch: what recordings contain."""
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / RATE
    clips = [0.3 * np.sin(2 * np.pi * rng.uniform(100, 6000) * t) + rng.normal(0, 0.05, samples) for _ in range(batch)]
    clips = np.stack(clips).astype(np.float32)
    clips[:, samples // 3 : samples // 2] = 0.0
    return torch.from_numpy(clips)


def pytorch_outputs(predictor, waveform):
    with torch.no_grad():
        return [out.numpy() for out in predictor.model(waveform)]


@pytest.mark.parametrize("options", [MEL, {"n_mels": 128, "sr": 32000}, {**MEL, "win_length": 512}])
def test_dft_front_end_matches_torch_stft(options):
    mel = AugmentMelSTFT(**options).eval()
    sr = options["sr"]
    waveform = torch.cat([recording_like(2, 2 * sr), torch.zeros(1, 2 * sr), 1e-4 * recording_like(1, 2 * sr)])
    with torch.no_grad():
        expected, actual = mel(waveform), DftLogMel(mel)(waveform)
    frames = 2 * sr // options.get("hopsize", 320)  # (samples - 1) // hop + 1
    assert actual.shape == expected.shape == (4, options["n_mels"], frames)
    assert (actual - expected).abs().max() < 1e-4


@pytest.mark.parametrize("form", FORMS)
def test_torchscript_and_onnx_reproduce_pytorch(tmp_path, form):
    predictor = make_predictor(form)
    files = export(predictor, tmp_path)
    waveforms = recording_like(3, RATE, seed=5)
    expected = pytorch_outputs(predictor, waveforms)

    scripted = torch.jit.load(str(files["torchscript"]))
    for batch in (waveforms, waveforms[:1]):
        with torch.no_grad():
            outputs = [out.numpy() for out in scripted(batch)]
        for output, reference in zip(outputs, expected, strict=True):
            np.testing.assert_allclose(output, reference[: len(batch)], rtol=0, atol=1e-4)

    session = onnxruntime.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["waveform"]
    assert session.get_inputs()[0].shape[1] == RATE
    for batch in (waveforms, waveforms[:1]):
        outputs = session.run(["logits", "embedding"], {"waveform": batch.numpy()})
        for output, reference in zip(outputs, expected, strict=True):
            np.testing.assert_allclose(output, reference[: len(batch)], rtol=0, atol=1e-4)


def test_exported_length_is_enforced_and_described(tmp_path):
    predictor = make_predictor("sparse_row_2")
    files = export(predictor, tmp_path, example_seconds=0.5)
    metadata = json.loads(files["metadata"].read_text())
    assert metadata["samples"] == 8000 and metadata["sample_rate"] == RATE
    assert metadata["class_names"] == CLASSES and metadata["rf_norm_t"] == "sparse_row_2"
    assert metadata["files"] == {"torchscript": "model.torchscript.pt", "onnx": "model.onnx"}
    assert metadata["seen_domains"] is None  # the predictor was not told the domains it was trained on

    scripted = torch.jit.load(str(files["torchscript"]))
    assert scripted(torch.zeros(2, 8000))[0].shape == (2, 3)
    with pytest.raises(torch.jit.Error, match="exactly 8000 samples"):
        scripted(torch.zeros(1, 9000))
    session = onnxruntime.InferenceSession(str(files["onnx"]), providers=["CPUExecutionProvider"])
    with pytest.raises(Exception, match="(?i)dimension"):
        session.run(None, {"waveform": np.zeros((1, 9000), np.float32)})


def test_onnx_probabilities_equal_predict_on_one_window(tmp_path):
    predictor = make_predictor("per_row_2")
    files = export(predictor, tmp_path, formats=["onnx"])
    assert not (tmp_path / "model.torchscript.pt").exists()
    clip = recording_like(1, RATE, seed=9)
    logits = onnxruntime.InferenceSession(str(files["onnx"])).run(["logits"], {"waveform": clip.numpy()})[0]
    probabilities = np.exp(logits[0] - logits[0].max())
    probabilities /= probabilities.sum()
    np.testing.assert_allclose(probabilities, predictor.predict(clip[0].numpy(), RATE), atol=1e-5)


def test_export_from_a_checkpoint_path(tmp_path):
    torch.manual_seed(0)
    net_config = {"arch": "passt_mini", "n_classes": 3, "input_fdim": 64, "input_tdim": 100, "rf_norm_t": "high_low",
                  "fstride": 10, "tstride": 10}
    plain = get_model(**net_config)
    meta = {"net": net_config, "mel": MEL, "class_names": CLASSES, "domain_names": ["a"], "sample_rate": RATE,
            "seen_domains": ["a"], "clip_length": 1.0, "augment": {}, "version": FORMAT_VERSION}
    state = {NETWORK_PREFIXES["plain"] + key: value for key, value in plain.state_dict().items()}
    torch.save({"state_dict": state, "frito": meta}, tmp_path / "best.ckpt")
    files = export(tmp_path / "best.ckpt", tmp_path / "exported", formats=["torchscript"])
    waveform = recording_like(1, RATE)
    with torch.no_grad():
        expected = plain.eval()(AugmentMelSTFT(**MEL).eval()(waveform).unsqueeze(1))[0]
    actual = torch.jit.load(str(files["torchscript"]))(waveform)[0]
    assert (actual - expected).abs().max() < 1e-4


def test_existing_exports_are_kept_unless_overwriting(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"user's model")
    predictor = make_predictor()
    with pytest.raises(FileExistsError, match="model.onnx"):
        export(predictor, tmp_path)
    assert (tmp_path / "model.onnx").read_bytes() == b"user's model"
    export(predictor, tmp_path, formats=["onnx"], overwrite=True)
    assert (tmp_path / "model.onnx").read_bytes() != b"user's model"


def test_an_export_that_does_not_reproduce_pytorch_is_not_written(tmp_path):
    with pytest.raises(ExportError, match="differ from PyTorch"):
        export(make_predictor(), tmp_path, formats=["onnx"], tolerance=0.0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("kwargs, match", [
    ({"formats": ["tflite"]}, "subset of"),
    ({"formats": []}, "non-empty"),
    ({"example_seconds": 2.0}, "takes 2401 to 16000 samples"),
    ({"example_seconds": 0.01}, "takes 2401 to 16000 samples"),
])
def test_argument_errors(tmp_path, kwargs, match):
    with pytest.raises(ValueError, match=match):
        export(make_predictor(), tmp_path, **kwargs)
