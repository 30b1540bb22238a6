"""Exporting a trained model, mel front-end included, as TorchScript and ONNX.

    export("runs/<id>/checkpoints/best.ckpt", "exported/")

writes, for a fixed input of ``samples`` mono samples at the checkpoint's sample rate:
    model.torchscript.pt   torch.jit.load(...)(waveform (batch, samples)) -> (logits, embedding)
    model.onnx             inputs "waveform" (batch, samples); outputs "logits", "embedding"
    model.json             class names, domains trained on, sample rate, samples, rf_norm_t, inputs, outputs

The exported graph is the eval-mode front-end followed by the network. The STFT is computed as a strided
convolution with windowed DFT kernels (:class:`DftLogMel`), which ONNX expresses with standard operators
and which matches the torch.stft front-end within float32 rounding.

The graphs are traced: the token layout of the input length (patch grid, attention mask or the clusters
of the sparse executors) is baked in, so an exported model accepts exactly ``samples`` samples per clip,
in batches of any size. The TorchScript model checks the length and raises otherwise; onnxruntime rejects
other lengths through the input's fixed dimension. Score longer clips in windows of that length, as
helpers.inference does. Every export is verified against PyTorch on a random batch before it is written.

Both formats go through torch.jit tracing, which PyTorch deprecates in favour of torch.export but still
ships (2.14): ONNX uses the TorchScript-based exporter (``dynamo=False``), since the torch.export-based
one needs the onnxscript package.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import math
import os
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from errors import ConfigurationError, OutputExistsError, UserError
from helpers.files import atomic_write
from helpers.inference import Predictor, load_model
from models.audio_model import AudioModel
from models.preprocess import LOG_OFFSET, NORM_SCALE, NORM_SHIFT, PREEMPHASIS, AugmentMelSTFT

logger = logging.getLogger(__name__)

ONNX_OPSET = 17
TOLERANCE = 1e-4
INPUT_NAME = "waveform"
OUTPUT_NAMES = ("logits", "embedding")
FILE_NAMES = {"torchscript": "model.torchscript.pt", "onnx": "model.onnx", "metadata": "model.json"}


class ExportError(UserError, RuntimeError):
    """An exported model that cannot be written or does not reproduce PyTorch's outputs."""


def export(
    model: Predictor | str | os.PathLike,
    out_dir: str | os.PathLike,
    formats: Sequence[str] = ("torchscript", "onnx"),
    example_seconds: float | None = None,
    weights: str = "auto",
    overwrite: bool = False,
    tolerance: float = TOLERANCE,
) -> dict[str, Path]:
    """Write the model with its front-end in each format, verified against PyTorch; returns the files.

    Args:
        model: a Predictor (helpers.inference.load_model) or the path of a frito checkpoint.
        out_dir: folder for the files (created if needed).
        formats: any of "torchscript", "onnx".
        example_seconds: the fixed clip length of the exported model; None uses the training clip length.
        weights: for a checkpoint path: "swa", "plain" or "auto".
        overwrite: replace files of an earlier export in out_dir (otherwise an error).
        tolerance: largest absolute difference to PyTorch's logits and embedding accepted.
    """
    unknown = [name for name in formats if name not in EXPORTERS]
    if unknown or not formats:
        raise ConfigurationError(f"export formats {list(formats)} must be a non-empty subset of {sorted(EXPORTERS)}")
    out_dir = Path(out_dir)
    targets = {name: out_dir / FILE_NAMES[name] for name in (*formats, "metadata")}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not overwrite:
        raise OutputExistsError(f"{existing} exist; choose another folder (export_dir=...) or remove them "
                                "(export(..., overwrite=True) replaces them)")
    predictor = model if isinstance(model, Predictor) else load_model(model, device="cpu", weights=weights)
    samples = _example_samples(predictor, example_seconds)
    trained = copy.deepcopy(predictor.model).cpu().eval()
    wrapper = AudioModel(DftLogMel(trained.front_end), trained.net, trained.input_transform).eval()
    example = torch.randn(2, samples, generator=torch.Generator().manual_seed(0)) * 0.1
    with torch.no_grad():
        expected = trained(example)
    for name in formats:
        exported = EXPORTERS[name](wrapper, example)
        actual = VERIFIERS[name](exported, example)
        _check_outputs(name, expected, actual, tolerance)
        atomic_write(targets[name], lambda stream, data=exported: stream.write(data))
        logger.info("Wrote %s (%s, %d samples per clip, verified within %g)", targets[name], name, samples, tolerance)
    metadata = _metadata(predictor, samples, formats)
    atomic_write(targets["metadata"], lambda stream: stream.write(json.dumps(metadata, indent=2).encode()))
    return targets


class DftLogMel(nn.Module):
    """AugmentMelSTFT's eval-mode log-mel with the STFT as a strided convolution by windowed DFT kernels.

    Same pipeline: pre-emphasis, reflect padding of n_fft // 2, power spectrum of the window centred in
    n_fft, the eval filterbank, log(mel + 1e-5), (x + 4.5) / 5. Kernels are built in float64.
    """

    def __init__(self, mel: AugmentMelSTFT):
        super().__init__()
        n_fft, win_length = mel.n_fft, mel.win_length
        window = torch.zeros(n_fft, dtype=torch.float64)
        left = (n_fft - win_length) // 2
        window[left : left + win_length] = torch.hann_window(win_length, periodic=False, dtype=torch.float64)
        bins = torch.arange(n_fft // 2 + 1, dtype=torch.int64)[:, None]
        times = torch.arange(n_fft, dtype=torch.int64)[None, :]
        angle = (bins * times % n_fft).double() * (2 * math.pi / n_fft)
        kernels = torch.cat([torch.cos(angle) * window, -torch.sin(angle) * window])
        self.register_buffer("kernels", kernels.float().unsqueeze(1))
        self.register_buffer("bank", mel.eval_bank.detach().to("cpu", torch.float32).clone())
        self.hopsize = mel.hopsize
        self.padding = n_fft // 2
        self.n_bins = n_fft // 2 + 1

    def forward(self, waveform: Tensor) -> Tensor:
        """(batch, samples) -> (batch, n_mels, frames) normalised log-mel."""
        x = waveform.float()
        x = x[:, 1:] - PREEMPHASIS * x[:, :-1]
        x = F.pad(x.unsqueeze(1), (self.padding, self.padding), mode="reflect")
        spectrum = F.conv1d(x, self.kernels, stride=self.hopsize)
        real, imag = spectrum[:, : self.n_bins], spectrum[:, self.n_bins :]
        power = real * real + imag * imag
        return (torch.log(torch.matmul(self.bank, power) + LOG_OFFSET) + NORM_SHIFT) / NORM_SCALE


class _LengthChecked(nn.Module):
    """A traced model behind a check that the input has the traced number of samples."""

    def __init__(self, traced: nn.Module, samples: int):
        super().__init__()
        self.traced = traced
        self.samples = samples

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        if waveform.dim() != 2 or waveform.shape[1] != self.samples:
            raise RuntimeError(
                f"expected a (batch, {self.samples}) waveform: this model was exported for clips of exactly "
                f"{self.samples} samples, got shape {list(waveform.shape)}"
            )
        return self.traced(waveform)


def _export_torchscript(wrapper: AudioModel, example: Tensor) -> bytes:
    with _quiet_tracing(), torch.no_grad():
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        scripted = torch.jit.script(_LengthChecked(traced, example.shape[1]))
        buffer = io.BytesIO()
        torch.jit.save(scripted, buffer)
    return buffer.getvalue()


def _export_onnx(wrapper: AudioModel, example: Tensor) -> bytes:
    buffer = io.BytesIO()
    with _quiet_tracing(), torch.no_grad():
        torch.onnx.export(
            wrapper,
            (example,),
            buffer,
            dynamo=False,
            opset_version=ONNX_OPSET,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES),
            dynamic_axes={INPUT_NAME: {0: "batch"}, **{name: {0: "batch"} for name in OUTPUT_NAMES}},
        )
    return buffer.getvalue()


def _run_torchscript(data: bytes, example: Tensor) -> list[np.ndarray]:
    with _quiet_tracing():
        loaded = torch.jit.load(io.BytesIO(data), map_location="cpu")
    with torch.no_grad():
        return [output.numpy() for output in loaded(example)]


def _run_onnx(data: bytes, example: Tensor) -> list[np.ndarray]:
    import onnxruntime

    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    return session.run(list(OUTPUT_NAMES), {INPUT_NAME: example.numpy()})


EXPORTERS: dict[str, Callable[[AudioModel, Tensor], bytes]] = {
    "torchscript": _export_torchscript,
    "onnx": _export_onnx,
}
VERIFIERS: dict[str, Callable[[bytes, Tensor], list[np.ndarray]]] = {
    "torchscript": _run_torchscript,
    "onnx": _run_onnx,
}


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Silence the tracer's notes on values it bakes in (by design here) and the deprecation notices below."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message="Constant folding", category=UserWarning)
        warnings.filterwarnings("ignore", message="You are using the legacy TorchScript-based ONNX export")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        yield


def _example_samples(predictor: Predictor, example_seconds: float | None) -> int:
    if example_seconds is None:
        return predictor.window_samples
    samples = round(example_seconds * predictor.sample_rate)
    shortest = predictor.shortest_window
    if not shortest <= samples <= predictor.window_samples:
        raise ConfigurationError(
            f"example_seconds={example_seconds} gives {samples} samples; the model takes "
            f"{shortest} to {predictor.window_samples} samples ({shortest / predictor.sample_rate:.3f} to "
            f"{predictor.window_samples / predictor.sample_rate:.3f} s at {predictor.sample_rate} Hz)"
        )
    return samples


def _check_outputs(name: str, expected: tuple[Tensor, Tensor], actual: list[np.ndarray], tolerance: float) -> None:
    for output, reference, value in zip(OUTPUT_NAMES, expected, actual, strict=True):
        difference = float(np.abs(reference.numpy() - value).max())
        if not difference <= tolerance:
            raise ExportError(
                f"the {name} export's {output} differ from PyTorch's by up to {difference:.2e} (> {tolerance:g}); "
                "nothing was written"
            )


def _metadata(predictor: Predictor, samples: int, formats: Sequence[str]) -> dict:
    pattern = predictor.model.net.pattern
    return {
        "files": {name: FILE_NAMES[name] for name in formats},
        "class_names": predictor.class_names,
        "seen_domains": predictor.seen_domains,
        "sample_rate": predictor.sample_rate,
        "samples": samples,
        "seconds": samples / predictor.sample_rate,
        "input": {"name": INPUT_NAME, "shape": ["batch", samples], "dtype": "float32", "channels": "mono"},
        "outputs": {"logits": ["batch", len(predictor.class_names)],
                    "embedding": ["batch", predictor.model.net.embed_dim]},
        "probabilities": "softmax of logits",
        "rf_norm_t": pattern.name,
        "onnx_opset": ONNX_OPSET,
    }
