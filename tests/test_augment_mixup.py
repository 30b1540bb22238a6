"""Spectrogram mixup against hand-computed mixtures and a numpy cross-entropy."""

import numpy as np
import pytest
import torch

from helpers.augment.mixup import mix, mixed_cross_entropy, mixup


def test_mix_matches_hand_computation():
    x = torch.tensor([[[1.0, 2.0]], [[10.0, 20.0]], [[100.0, 200.0]]])  # (batch 3, 1, 2)
    permutation = torch.tensor([2, 0, 1])
    lam = torch.tensor([0.5, 0.75, 1.0])
    expected = torch.tensor([
        [[0.5 * 1 + 0.5 * 100, 0.5 * 2 + 0.5 * 200]],
        [[0.75 * 10 + 0.25 * 1, 0.75 * 20 + 0.25 * 2]],
        [[100.0, 200.0]],
    ])
    assert torch.allclose(mix(x, permutation, lam), expected)


def test_mixed_cross_entropy_matches_numpy():
    logits = torch.tensor([[2.0, 0.5, -1.0], [0.0, 1.0, 3.0]])
    labels = torch.tensor([0, 2])
    permutation = torch.tensor([1, 0])
    lam = torch.tensor([0.8, 0.6])

    log_softmax = logits.numpy() - np.log(np.exp(logits.numpy()).sum(axis=1, keepdims=True))
    expected = [
        -(0.8 * log_softmax[0, 0] + 0.2 * log_softmax[0, 2]),  # own label 0, partner's label 2
        -(0.6 * log_softmax[1, 2] + 0.4 * log_softmax[1, 0]),  # own label 2, partner's label 0
    ]
    loss = mixed_cross_entropy(logits, labels, permutation, lam)
    assert loss.shape == (2,)
    assert loss.numpy() == pytest.approx(expected, rel=1e-6)


def test_mixup_weights_follow_folded_beta():
    """lam = max(L, 1 - L), L ~ Beta(alpha, alpha): compare the mean with a numpy draw of the same law."""
    torch.manual_seed(0)
    alpha = 0.3
    lams = torch.cat([mixup(torch.zeros(4000, 1), alpha)[2] for _ in range(25)]).numpy()
    draws = np.random.default_rng(0).beta(alpha, alpha, size=200_000)
    folded = np.maximum(draws, 1 - draws)
    assert lams.min() >= 0.5 and lams.max() <= 1.0
    assert lams.mean() == pytest.approx(folded.mean(), abs=0.005)
    assert np.quantile(lams, 0.25) == pytest.approx(np.quantile(folded, 0.25), abs=0.01)


def test_mixup_returns_the_permutation_and_weights_it_used():
    torch.manual_seed(1)
    x = torch.arange(12.0).reshape(6, 2)
    mixed, permutation, lam = mixup(x, 0.3)
    assert sorted(permutation.tolist()) == list(range(6))
    for i in range(6):
        expected = lam[i] * x[i] + (1 - lam[i]) * x[permutation[i]]
        assert torch.allclose(mixed[i], expected)


def test_mixup_is_reproducible_under_a_seed():
    x = torch.randn(8, 3)
    torch.manual_seed(5)
    first = mixup(x, 0.3)
    torch.manual_seed(5)
    second = mixup(x, 0.3)
    for a, b in zip(first, second, strict=True):
        assert torch.equal(a, b)


def test_alpha_must_be_positive():
    with pytest.raises(ValueError, match="mixup_alpha"):
        mixup(torch.zeros(2, 1), 0.0)
