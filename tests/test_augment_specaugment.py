"""SpecAugment's masks as a spectrogram-place method, against PaSST's front-end masking written out by hand."""

import numpy as np
import pytest
import torch

from helpers.augment.specaugment import SpecAugment
from models.preprocess import AugmentMelSTFT

MASKED = np.float32(4.5) / np.float32(5.0)  # log-mel 0 after the (x + 4.5) / 5 normalisation


def masked_rows(spec):
    """Indices of mel rows / frames of one (n_mels, frames) output that are entirely the masked value."""
    masked = spec.numpy() == MASKED
    return set(np.flatnonzero(masked.all(axis=1))), set(np.flatnonzero(masked.all(axis=0)))


@pytest.fixture
def waves():
    return torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (3, 32000)).astype(np.float32))


def front_end_with_masks(front_end, masks, waves):
    """(batch, n_mels, frames): the front-end's spectrograms through the masks, as a training step applies them."""
    return masks(front_end(waves).unsqueeze(1))[:, 0]


def test_train_is_random_and_masks_each_example_independently(waves):
    torch.manual_seed(0)
    module = AugmentMelSTFT(fmin_aug_range=0, fmax_aug_range=0).train()
    masks = SpecAugment(p=1.0, freqm=48, timem=192)
    same = waves[:1].expand(8, -1)
    first, second = front_end_with_masks(module, masks, same), front_end_with_masks(module, masks, same)
    assert not torch.equal(first, second)
    found = [masked_rows(spec) for spec in first]
    assert all(rows and frames for rows, frames in found[:4])
    assert len({tuple(sorted(rows)) for rows, _ in found}) > 1
    assert len({tuple(sorted(frames)) for _, frames in found}) > 1
    for rows, frames in found:  # one contiguous band each, narrower than freqm / timem
        assert len(rows) < 48 and len(frames) < 192
        assert not rows or max(rows) - min(rows) + 1 == len(rows)
        assert not frames or max(frames) - min(frames) + 1 == len(frames)
    unmasked = module.eval()(same)
    keep = first != torch.tensor(MASKED)
    torch.testing.assert_close(first[keep], unmasked[keep], rtol=0, atol=0)


@pytest.mark.parametrize("freqm, timem", [(0, 192), (48, 0), (0, 0)])
def test_zero_mask_parameter_disables_that_mask(waves, freqm, timem):
    torch.manual_seed(1)
    module = AugmentMelSTFT(fmin_aug_range=0, fmax_aug_range=0).train()
    masks = SpecAugment(p=1.0, freqm=freqm, timem=timem)
    outs = [front_end_with_masks(module, masks, waves) for _ in range(5)]
    found = [masked_rows(spec) for out in outs for spec in out]
    assert any(rows for rows, _ in found) == (freqm > 0)
    assert any(frames for _, frames in found) == (timem > 0)
    if freqm == timem == 0:
        torch.testing.assert_close(outs[0], module.eval()(waves), rtol=0, atol=0)


def passt_masked(logmel, freqm, timem):
    """PaSST's front-end as frito had it: each example's row band, then frame span, set to 0 in the log-mel
    domain, then normalised. logmel: (batch, n_mels, frames)."""
    for dim, max_width in ((1, freqm), (2, timem)):
        if max_width == 0:
            continue
        batch, size = logmel.shape[0], logmel.shape[dim]
        width = (torch.rand(batch) * min(max_width, size)).long()
        start = (torch.rand(batch) * (size - width)).long()
        for example in range(batch):
            band = slice(int(start[example]), int(start[example] + width[example]))
            if dim == 1:
                logmel[example, band, :] = 0.0
            else:
                logmel[example, :, band] = 0.0
    return (logmel + 4.5) / 5.0


@pytest.mark.parametrize("freqm, timem", [(48, 80), (48, 0), (200, 7)])
def test_masks_on_the_normalised_spectrogram_equal_pasts_masks_before_the_normalisation(freqm, timem):
    logmel = torch.randn(6, 64, 50) * 3 - 4
    torch.manual_seed(3)
    expected = passt_masked(logmel.clone(), freqm, timem)
    torch.manual_seed(3)
    actual = SpecAugment(p=1.0, freqm=freqm, timem=timem)(((logmel + 4.5) / 5.0).unsqueeze(1))[:, 0]
    torch.testing.assert_close(actual, expected, rtol=0, atol=0)
    assert (actual == torch.tensor(MASKED)).any()


def test_probability_masks_whole_batches():
    torch.manual_seed(4)
    masks = SpecAugment(p=0.5, freqm=10, timem=10)
    x = torch.zeros(4, 1, 16, 20)
    masked = [bool((masks(x) != 0).any()) for _ in range(400)]
    assert 0.4 < np.mean(masked) < 0.6
