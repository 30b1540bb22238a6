"""The LightningModule shared by the experiments: the audio model, the DG methods, AdamW, SWA, metrics.

Batches are the dataset dicts of ``datasets/`` collated: "waveform" (batch, samples) or a cached
"spectrogram" (batch, n_mels, frames), "label" and "domain" indices. The audio model's front-end runs
here, on the training device; a batch that carries "spectrogram" skips it. A training step passes the
spectrograms through the DG methods of the spectrogram and batch places and adds the loss place's losses
(helpers.augment.places.TrainingMethods); the input place is the audio model's, in every mode.

Every epoch ends with an evaluation of two roles of the data, each its own loader: the validation split
(``val``, dataloader 0), on which the epoch is selected, and the test split (``test``, dataloader 1),
which is reported (helpers.results.selection). Evaluation keeps every example's prediction, label, domain and
loss, and computes the figures once over the whole split (helpers.results.metrics), for the network and, once it
holds an average, for the SWA copy ``net_swa`` (torch.optim.swa_utils.AveragedModel of the network: its
running mean, folded in at the end of the epochs the SwaSchedule names; its count is in the state dict,
so a resumed training continues the same average). Figures are logged as ``val/<figure>``,
``test/<figure>``, ``val_swa/<figure>`` and ``test_swa/<figure>``; the progress bar shows validation
figures only. Under DDP each process sees a shard padded by the distributed sampler with repeated
examples; the shards are gathered and the repeats dropped by the items' "index", so every example counts
exactly once.

Checkpoints carry, beside Lightning's state (weights, SWA average, optimizer, LR schedule, epoch), the
model selection's state (history, selected and last evaluations) and the random number generators'
states, so a resumed training selects, draws crops, shuffles and augmentations as the uninterrupted one.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.optim.swa_utils import AveragedModel

from helpers.augment.places import TrainingMethods
from helpers.checkpoint import ENTRY
from helpers.results.metrics import Evaluation, evaluation
from helpers.results.selection import ROLES, ModelSelection, epoch_number
from helpers.training.swa import SwaSchedule
from models.audio_model import AudioModel

logger = logging.getLogger(__name__)

PROGRESS_BAR_FIGURES = ("val/acc", "val/acc_seen", "val/acc_unseen")
RESUME_ENTRY = "frito_resume"  # checkpoint entry: model selection state and random number generator states


class AudioClassifier(pl.LightningModule):
    """Single-label audio classification with per-domain validation figures."""

    def __init__(
        self,
        model: AudioModel,
        class_names: Sequence[str],
        domain_names: Sequence[str],
        seen_domains: Sequence[str],
        lr: float,
        weight_decay: float,
        lr_factor: Callable[[int], float],
        methods: TrainingMethods | None = None,
        swa: SwaSchedule | None = None,
        checkpoint_entry: Mapping | None = None,
        model_selection: str = "validation",
    ):
        """
        model: the front-end (waveform -> log-mel, augmenting in training mode) and the network
            (spectrogram (batch, 1, n_mels, frames) -> (logits, embedding); may offer no_weight_decay()).
        class_names, domain_names: meaning of the "label" and "domain" indices of the batches.
        seen_domains: domains of the training data; the rest are reported as unseen.
        lr, weight_decay: AdamW's base learning rate and decoupled weight decay.
        lr_factor: epoch -> factor of lr (helpers.training.schedule), stepped once per epoch.
        methods: the DG methods of the training step (spectrogram, batch and loss places); None: plain
            cross-entropy on the spectrograms as they are.
        swa: epochs averaged into the copy ``net_swa``; None trains without SWA.
        checkpoint_entry: the "frito" entry of every checkpoint (helpers.checkpoint.checkpoint_entry), from
            which a trained model is rebuilt.
        model_selection: "validation" or "oracle" (helpers.results.selection).
        """
        super().__init__()
        self.model = model
        self.class_names = tuple(class_names)
        self.domain_names = tuple(domain_names)
        self.seen_domains = tuple(seen_domains)
        self.lr = lr
        self.weight_decay = weight_decay
        self.lr_factor = lr_factor
        self.methods = TrainingMethods() if methods is None else methods
        self.swa = swa
        self.checkpoint_entry = dict(checkpoint_entry or {})
        if swa is not None:
            # not trained: no gradients (under DDP a parameter that requires one must receive it)
            self.net_swa = AveragedModel(model.net).requires_grad_(False)
        self.selection = ModelSelection(model_selection)
        self._outputs: dict[str, dict[str, list[Tensor]]] = {}  # role -> key -> per-batch outputs
        self._seen: dict[str, int] = {}  # role -> examples counted so far, for items without an "index"

    def forward(self, waveform: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(waveform)

    def spectrograms(self, batch: dict) -> Tensor:
        """(batch, 1, n_mels, frames): the batch's cached spectrograms, or those of its waveforms."""
        if "spectrogram" in batch:
            return batch["spectrogram"].unsqueeze(1)
        return self.model.spectrogram(batch["waveform"])

    def training_step(self, batch: dict, batch_idx: int) -> Tensor:
        labels = batch["label"]
        x, criterion = self.methods.augment(self.spectrograms(batch))
        logits, embedding = self.model.classify(x)
        extra_loss, figures = self.methods.extra_loss(embedding, batch)
        loss = criterion(logits, labels).mean() + extra_loss
        self.log("train/loss", loss, on_step=False, on_epoch=True, prog_bar=True, batch_size=len(labels),
                 sync_dist=True)
        for name, value in figures.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True, batch_size=len(labels), sync_dist=True)
        return loss

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        if batch_idx == self.trainer.num_training_batches - 1:
            self._end_of_training_epoch()

    def on_train_epoch_start(self) -> None:
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], on_step=False, on_epoch=True)

    def setup(self, stage: str) -> None:
        """Under DDP every process takes rank 0's seed: the distributed sampler's shuffle (seeded from
        PL_GLOBAL_SEED) must be the same permutation in every process, whatever seed each was started with."""
        if self.trainer.world_size > 1:
            seed = self.trainer.strategy.broadcast(int(os.environ.get("PL_GLOBAL_SEED", 0)), src=0)
            pl.seed_everything(seed, workers=True, verbose=False)

    @property
    def evaluations(self) -> dict[str, dict[str, Evaluation]]:
        """The last epoch's evaluations: role ("val", "test") -> network ("net", "net_swa") -> Evaluation."""
        return {} if self.selection.last is None else self.selection.last.evaluations

    def on_validation_epoch_start(self) -> None:
        self._outputs = {}
        self._seen = {}

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        role = ROLES[dataloader_idx]
        x, labels = self.spectrograms(batch), batch["label"]
        self._keep(role, "index", self._example_index(role, batch, len(labels)))
        self._keep(role, "label", labels)
        self._keep(role, "domain", batch["domain"])
        for name, net in self._evaluated_nets().items():
            logits, _ = self.model.classify(x, net)
            logits = logits.float()
            self._keep(role, f"{name}.prediction", logits.argmax(dim=1))
            self._keep(role, f"{name}.loss", F.cross_entropy(logits, labels, reduction="none"))

    def on_validation_epoch_end(self) -> None:
        outputs = {role: self._gather_outputs(self._outputs.get(role, {})) for role in ROLES}
        self._outputs = {}
        if self.trainer.sanity_checking:
            return
        evaluations = {
            role: {name: evaluation(
                predictions=role_outputs[f"{name}.prediction"].numpy(),
                labels=role_outputs["label"].numpy(),
                domains=role_outputs["domain"].numpy(),
                losses=role_outputs[f"{name}.loss"].numpy(),
                class_names=self.class_names,
                domain_names=self.domain_names,
                seen_domains=self.seen_domains,
            ) for name in self._evaluated_nets()}
            for role, role_outputs in outputs.items() if role_outputs
        }
        indices = {role: role_outputs["index"].numpy() for role, role_outputs in outputs.items() if role_outputs}
        for name, value in self.selection.record(epoch_number(self.current_epoch), evaluations, indices).items():
            self.log(name, value, prog_bar=name in PROGRESS_BAR_FIGURES)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint[ENTRY] = self.checkpoint_entry
        checkpoint[RESUME_ENTRY] = {"selection": self.selection.state(), "rng": _rng_states()}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Resuming: the model selection so far, and the generators as they were when the checkpoint was
        written."""
        entry = checkpoint.get(RESUME_ENTRY)
        if entry is None:
            return
        self.selection.load_state(entry["selection"])
        _set_rng_states(entry["rng"])

    def configure_optimizers(self):
        net = self.model.net
        no_decay_names = net.no_weight_decay() if hasattr(net, "no_weight_decay") else set()
        decay, no_decay = [], []
        for name, parameter in net.named_parameters():
            (no_decay if name in no_decay_names else decay).append(parameter)
        decay.extend(self.methods.losses.parameters())  # the loss place's own parameters (a domain classifier)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.lr,
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, self.lr_factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def _end_of_training_epoch(self) -> None:
        if self.swa is not None and self.swa.averages_after(self.current_epoch):
            self.net_swa.update_parameters(self.model.net)

    def _evaluated_nets(self) -> dict[str, torch.nn.Module]:
        """The networks evaluated, by the name their figures are reported under (see EVALUATED_NETS)."""
        nets = {"net": self.model.net}
        if self.swa is not None and int(self.net_swa.n_averaged) > 0:
            nets["net_swa"] = self.net_swa
        return nets

    def _keep(self, role: str, key: str, values: Tensor) -> None:
        self._outputs.setdefault(role, {}).setdefault(key, []).append(values.detach().cpu())

    def _example_index(self, role: str, batch: dict, batch_size: int) -> Tensor:
        """The batch's positions in the role's split: the items' "index", else counted (one process)."""
        if "index" in batch:
            return torch.as_tensor(batch["index"])
        if self.trainer.world_size > 1:
            raise ValueError(
                "evaluation items carry no 'index', which multi-process validation needs to drop the distributed "
                "sampler's repeated examples; return the item's position as 'index' from the dataset's __getitem__."
            )
        first = self._seen.get(role, 0)
        self._seen[role] = first + batch_size
        return torch.arange(first, first + batch_size)

    def _gather_outputs(self, outputs: dict[str, list[Tensor]]) -> dict[str, Tensor]:
        """Every example of one role's split exactly once, in split order, concatenated per key.

        Under DDP the processes' shards are gathered (padded to the longest, as all_gather needs equal
        shapes) and the sampler's repeats, same index, are dropped."""
        local = {key: torch.cat(parts) for key, parts in outputs.items()}
        if self.trainer.world_size == 1 or not local:
            return local
        counts = self.all_gather(torch.tensor(len(local["index"]), device=self.device)).flatten().tolist()
        longest = max(counts)
        gathered = {}
        for key, values in local.items():
            padded = torch.cat([values, values.new_zeros(longest - len(values))]).to(self.device)
            shards = self.all_gather(padded).cpu()
            gathered[key] = torch.cat([shard[:count] for shard, count in zip(shards, counts, strict=True)])
        _, first = np.unique(gathered["index"].numpy(), return_index=True)
        keep = torch.from_numpy(first)
        return {key: values[keep] for key, values in gathered.items()}


def _rng_states() -> dict:
    """The generators a training draws from (crops, shuffles, mixup, dropout), as tensors and plain lists."""
    kind, keys, position, has_gauss, cached_gauss = np.random.get_state()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(position), int(has_gauss), float(cached_gauss)],
        "python": _plain_python_state(random.getstate()),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states: Mapping) -> None:
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, cached_gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, cached_gauss))
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


def _plain_python_state(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]
