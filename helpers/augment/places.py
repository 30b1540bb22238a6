"""A training batch through the methods of the places the training step holds: spectrogram, batch, loss.

The waveform place is the data module's (each training clip, in the loader workers) and the input place
the audio model's (``AudioModel.input_transform``, in every mode); the training step applies the other
three, each place's methods in registry order (helpers.augment.registry.METHODS).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from helpers.augment.method import Criterion


def cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-example cross-entropy (batch,): the criterion a training batch starts with."""
    return F.cross_entropy(logits, labels, reduction="none")


class TrainingMethods(nn.Module):
    """The methods a training step applies, by place, in registry order.

    spectrogram: (batch, 1, n_mels, frames) -> same; batch: (x, criterion) -> (x, criterion); losses:
    modules (embedding, batch) -> (loss, figures), whose parameters are this module's (trained and saved
    with the training module).
    """

    def __init__(self, spectrogram: Sequence[Callable[[Tensor], Tensor]] = (),
                 batch: Sequence[Callable[[Tensor, Criterion], tuple[Tensor, Criterion]]] = (),
                 losses: Iterable[nn.Module] = ()):
        super().__init__()
        self.spectrogram = list(spectrogram)
        self.batch = list(batch)
        self.losses = nn.ModuleList(losses)

    def augment(self, x: Tensor) -> tuple[Tensor, Criterion]:
        """A training spectrogram batch through the spectrogram place, then the batch place: the batch the
        network is trained on, and its criterion (logits, labels) -> per-example loss."""
        for method in self.spectrogram:
            x = method(x)
        criterion: Criterion = cross_entropy
        for method in self.batch:
            x, criterion = method(x, criterion)
        return x, criterion

    def extra_loss(self, embedding: Tensor, batch: Mapping) -> tuple[Tensor | float, dict[str, Tensor]]:
        """The sum of the loss place's losses on a training batch's embedding, and their figures by name."""
        total: Tensor | float = 0.0
        figures: dict[str, Tensor] = {}
        for method in self.losses:
            loss, own = method(embedding, batch)
            total = total + loss
            figures.update(own)
        return total, figures
