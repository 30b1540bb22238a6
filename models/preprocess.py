"""Log-mel spectrogram front-end with PaSST's training-time filterbank jitter.

Turns (batch, samples) waveforms into the normalised log-mel spectrograms (batch, n_mels, frames) that
the PaSST models consume (callers add the channel axis with ``.unsqueeze(1)``). SpecAugment's masks,
which PaSST's front-end also applied, are a method of the spectrogram place (helpers.augment.specaugment).
"""

from collections import OrderedDict

import torch
from torch import nn

PREEMPHASIS = 0.97
LOG_OFFSET = 1e-5
NORM_SHIFT, NORM_SCALE = 4.5, 5.0


class AugmentMelSTFT(nn.Module):
    """Waveform -> normalised log-mel spectrogram, augmented while the module is training.

    Pipeline: pre-emphasis ``y[n] = x[n+1] - 0.97 x[n]`` (one sample shorter than the input), centred
    STFT (reflect padding of n_fft // 2 on both sides) with a symmetric Hann window of win_length
    samples centred in n_fft, power spectrum, Kaldi triangular mel filterbank (:func:`kaldi_mel_bank`),
    ``log(mel + 1e-5)``, then ``(x + 4.5) / 5``. Computed in float32 with autocast disabled.

    Training mode only (``module.train()``): the filterbank edges are jittered once per batch (as in
    PaSST): fmin moves up by an integer number of Hz drawn uniformly from [0, fmin_aug_range), fmax by an
    integer drawn uniformly from (-fmax_aug_range / 2, fmax_aug_range / 2].
    Eval mode is deterministic. Filterbanks are cached: the eval bank is a non-persistent buffer, the
    jittered training banks sit in a small least-recently-used dict (at most max_cached_banks entries).
    Moving or casting the module (``.to(device)``, ``.half()``) moves the window and banks to the new
    device but keeps them float32.
    """

    max_cached_banks = 32

    def __init__(
        self,
        n_mels: int = 128,
        sr: int = 32000,
        win_length: int = 800,
        hopsize: int = 320,
        n_fft: int = 1024,
        htk: bool = False,
        fmin: float = 0.0,
        fmax: float | None = None,
        norm: int = 1,
        fmin_aug_range: int = 10,
        fmax_aug_range: int = 2000,
    ):
        """
        n_mels: number of mel bands (output rows).
        sr: sample rate of the input waveforms in Hz.
        win_length: analysis window length in samples (<= n_fft; zero-padded to n_fft, centred).
        hopsize: samples between successive frames (output columns).
        n_fft: FFT size in samples (even); the spectrum has n_fft // 2 + 1 bins.
        htk: kept for PaSST config compatibility; only False is accepted. The mel scale is always
            Kaldi's 1127 ln(1 + f / 700), whatever librosa's htk flag would select.
        fmin: lowest filterbank edge in Hz.
        fmax: highest filterbank edge in Hz; None means sr / 2 - fmax_aug_range / 2, so that the
            training jitter never passes the Nyquist frequency.
        norm: kept for PaSST config compatibility; only 1 is accepted, and (as in PaSST) it does not
            rescale the filters: every triangle peaks at 1 (no area/Slaney normalisation).
        fmin_aug_range: training-time upward jitter range of fmin in Hz; 0 disables it.
        fmax_aug_range: training-time jitter range of fmax in Hz (centred on fmax); 0 disables it.
        """
        super().__init__()
        for name, value in (("n_mels", n_mels), ("sr", sr), ("win_length", win_length),
                            ("hopsize", hopsize), ("n_fft", n_fft)):
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"AugmentMelSTFT: {name} must be a positive integer, got {value!r}.")
        for name, value in (("fmin_aug_range", fmin_aug_range), ("fmax_aug_range", fmax_aug_range)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"AugmentMelSTFT: {name} must be a non-negative integer (0 disables it), "
                                 f"got {value!r}.")
        if n_fft % 2:
            raise ValueError(f"AugmentMelSTFT: n_fft must be even (the filterbank has a Nyquist bin), "
                             f"got {n_fft}.")
        if win_length > n_fft:
            raise ValueError(f"AugmentMelSTFT: win_length={win_length} exceeds n_fft={n_fft}; "
                             "raise n_fft or shorten the window.")
        if htk is not False:
            raise ValueError(f"AugmentMelSTFT: htk={htk!r} is not supported; only htk=False (PaSST's value) "
                             "is accepted and the mel scale is always Kaldi's 1127 ln(1 + f/700).")
        if norm != 1:
            raise ValueError(f"AugmentMelSTFT: norm={norm!r} is not supported; only norm=1 (PaSST's value, "
                             "unnormalised triangles peaking at 1) is accepted.")
        nyquist = sr / 2
        if fmax is None:
            fmax = nyquist - fmax_aug_range / 2
        if fmin < 0:
            raise ValueError(f"AugmentMelSTFT: fmin={fmin} Hz is negative; use fmin >= 0.")
        if fmax + fmax_aug_range / 2 > nyquist:
            raise ValueError(f"AugmentMelSTFT: fmax={fmax} Hz plus half of fmax_aug_range={fmax_aug_range} "
                             f"exceeds the Nyquist frequency sr/2={nyquist} Hz; lower fmax or "
                             "fmax_aug_range (or pass fmax=None).")
        if fmin + fmin_aug_range >= fmax - fmax_aug_range / 2:
            raise ValueError(f"AugmentMelSTFT: the band is empty or can become empty under jitter: need "
                             f"fmin + fmin_aug_range ({fmin} + {fmin_aug_range}) < fmax - fmax_aug_range/2 "
                             f"({fmax} - {fmax_aug_range}/2) Hz; lower fmin or raise fmax.")

        self.n_mels, self.sr, self.n_fft = n_mels, sr, n_fft
        self.win_length, self.hopsize = win_length, hopsize
        self.fmin, self.fmax = float(fmin), float(fmax)
        self.fmin_aug_range, self.fmax_aug_range = fmin_aug_range, fmax_aug_range
        self.register_buffer("window", torch.hann_window(win_length, periodic=False), persistent=False)
        self.register_buffer("eval_bank", kaldi_mel_bank(n_mels, n_fft, sr, self.fmin, self.fmax),
                             persistent=False)
        self._train_banks: OrderedDict[tuple[float, float], torch.Tensor] = OrderedDict()

    def frames_for(self, n_samples: int) -> int:
        """Number of output frames for a waveform of n_samples samples."""
        min_samples = self.n_fft // 2 + 2
        if n_samples < min_samples:
            raise ValueError(f"AugmentMelSTFT: a waveform of {n_samples} samples is too short for the "
                             f"centred STFT with n_fft={self.n_fft}; pass at least {min_samples} samples.")
        return frame_count(n_samples, self.hopsize)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples) waveform -> (batch, n_mels, frames) normalised log-mel, float32."""
        if waveform.dim() != 2:
            raise ValueError(f"AugmentMelSTFT expects a (batch, samples) waveform, got shape "
                             f"{tuple(waveform.shape)}; use .unsqueeze(0) for one clip or drop channel axes.")
        self.frames_for(waveform.shape[1])
        with torch.autocast(device_type=waveform.device.type, enabled=False):
            x = waveform.float()
            x = x[:, 1:] - PREEMPHASIS * x[:, :-1]
            spectrum = torch.stft(x, self.n_fft, hop_length=self.hopsize, win_length=self.win_length,
                                  window=self.window, center=True, pad_mode="reflect",
                                  return_complex=True)
            power = spectrum.real.square() + spectrum.imag.square()
            logmel = torch.log(torch.matmul(self._mel_bank(), power) + LOG_OFFSET)
            return (logmel + NORM_SHIFT) / NORM_SCALE

    def _mel_bank(self) -> torch.Tensor:
        """The eval bank, or (training) a bank for jittered edges, from the bounded cache."""
        if not self.training or (self.fmin_aug_range == 0 and self.fmax_aug_range == 0):
            return self.eval_bank
        fmin = self.fmin + _randint(self.fmin_aug_range)
        fmax = self.fmax + self.fmax_aug_range // 2 - _randint(self.fmax_aug_range)
        key = (fmin, fmax)
        if key in self._train_banks:
            self._train_banks.move_to_end(key)
        else:
            bank = kaldi_mel_bank(self.n_mels, self.n_fft, self.sr, fmin, fmax)
            self._train_banks[key] = bank.to(self.eval_bank.device)
            if len(self._train_banks) > self.max_cached_banks:
                self._train_banks.popitem(last=False)
        return self._train_banks[key]

    def _apply(self, fn, recurse=True):
        """Follow .to()/.cuda()/.half() with the window and banks, rebuilt in float32 on the new device."""
        super()._apply(fn, recurse)
        device = self.window.device
        self.window = torch.hann_window(self.win_length, periodic=False, device=device)
        self.eval_bank = kaldi_mel_bank(self.n_mels, self.n_fft, self.sr, self.fmin, self.fmax).to(device)
        self._train_banks.clear()
        return self


def clip_frames(seconds: float, sample_rate: int, hopsize: int) -> int:
    """Frames of the log-mel of a clip of ``seconds`` at ``sample_rate`` Hz (e.g. 1000 for 10 s at 32 kHz
    with a hop of 320): the number every part of frito sizes inputs by."""
    return frame_count(round(seconds * sample_rate), hopsize)


def frame_count(n_samples: int, hopsize: int) -> int:
    """Frames of the centred STFT of ``n_samples`` samples after pre-emphasis (one sample fewer)."""
    return (n_samples - 1) // hopsize + 1


def kaldi_mel_bank(n_mels: int, n_fft: int, sr: int, fmin: float, fmax: float) -> torch.Tensor:
    """Kaldi's triangular mel filterbank, (n_mels, n_fft // 2 + 1) float32.

    Filter i rises linearly in mel from edge i to a peak of 1 at edge i+1 and falls to 0 at edge i+2,
    the n_mels + 2 edges being evenly spaced on mel = 1127 ln(1 + f/700) between fmin and fmax. Weights
    are evaluated at the bin frequencies k * sr / n_fft; the Nyquist bin (last column) gets weight 0.
    Equals torchaudio.compliance.kaldi.get_mel_banks with a zero column appended.
    """
    def mel(freq):
        return 1127.0 * torch.log1p(torch.as_tensor(freq, dtype=torch.float64) / 700.0)

    edges = torch.linspace(mel(fmin).item(), mel(fmax).item(), n_mels + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bin_mel = mel(torch.arange(n_fft // 2, dtype=torch.float64) * sr / n_fft)
    rising = (bin_mel - left) / (center - left)
    falling = (right - bin_mel) / (right - center)
    bank = torch.minimum(rising, falling).clamp(min=0.0)
    return nn.functional.pad(bank, (0, 1)).float()


def _randint(high: int) -> int:
    """Uniform integer in [0, high), 0 when high is 0; drawn from torch's global generator."""
    return int(torch.randint(high, ()).item()) if high > 0 else 0
