"""Domain-adversarial training (DANN) as a method of the loss place: a domain classifier on the network's
embedding, trained through a gradient reversal layer so the network learns embeddings it cannot tell the
training domains apart by.

The domain classifier (an MLP) predicts, from the embedding (batch, embedding size) of a training batch,
which of the training domains each clip comes from; its targets are the batch's "domain" indices mapped
onto the seen (training) domains, in the order of ``RunContext.seen_domains``. Between the embedding and
the classifier sits the gradient reversal layer: the identity forward, and ``-weight`` times the gradient
backward. One backward pass of ``class loss + domain loss`` therefore trains

  the domain classifier  on  grad(domain loss)                                (to tell the domains apart)
  the network            on  grad(class loss) - weight * grad(domain loss)    (to make that impossible)

Sources:
- Ganin et al., "Domain-Adversarial Training of Neural Networks", JMLR 17(59), 2016: the domain classifier
  on the features, the gradient reversal layer and the joint stochastic gradient step on the saddle-point
  objective; their experiments ramp the reversal weight as 2 / (1 + exp(-10 p)) - 1 over training progress p.
- DomainBed (Gulrajani and Lopez-Paz, "In Search of Lost Domain Generalization", ICLR 2021;
  github.com/facebookresearch/DomainBed, ``domainbed/algorithms.py`` classes AbstractDANN and DANN,
  ``domainbed/hparams_registry.py``, ``domainbed/networks.py`` class MLP), whose schedule and defaults this
  module follows:
    * the reversal weight is a constant, hyperparameter ``lambda``, default 1.0 (searched over
      10^U(-2, 2)); DomainBed does not use Ganin's ramp and nothing depends on training progress;
    * the discriminator is ``networks.MLP`` on the featurizer's output: Linear(embedding, 256), then
      ``mlp_depth - 2`` = 1 hidden Linear(256, 256), then Linear(256, number of training domains); each
      Linear but the last is followed by dropout (``mlp_dropout``, default 0) and then ReLU;
    * its targets are each example's training environment, the loss the batch's mean cross-entropy
      (unconditional DANN: no class embedding, no class balancing); the gradient penalty
      ``grad_penalty`` defaults to 0;
    * its updates alternate (``d_steps_per_g_step``, default 1): a discriminator step (the discriminator
      minimises the domain loss) and a generator step (featurizer and classifier minimise
      ``class loss - lambda * domain loss``), each with its own Adam (lr 5e-5, 1e-3 on the small image data
      sets; betas (0.5, 0.9); weight decay 0 at the default point).

How that maps onto frito's training, which has one optimizer (AdamW over the network and the loss place's
parameters) and one backward pass per step: both of DomainBed's objectives are followed in every step, at
once, through the gradient reversal layer with weight ``dann_weight`` = DomainBed's ``lambda`` (constant,
default of the named config ``dann``: 1.0). That is Ganin et al.'s simultaneous formulation of the same
saddle point, with DomainBed's constant weight instead of Ganin's ramp. What does not carry over: the
alternation of discriminator and generator steps (a discriminator step of DomainBed leaves the network
untouched, which a loss-place method cannot do: the class loss trains the network in every step), the two
separate Adam optimizers (the domain classifier is trained with the run's AdamW, learning rate, schedule
and weight decay), the gradient penalty (0 by default in DomainBed) and the conditional variant CDANN.
No state depends on the step, so a resumed training continues exactly (the classifier's weights are in
the checkpoint).

Figures logged per epoch: ``train/domain_loss`` (the domain classifier's cross-entropy) and
``train/domain_acc`` (its accuracy on the training batches). ``train/loss`` is the class loss plus the
domain loss (the value of the objective the domain classifier minimises; the network sees it reversed).
Only training batches reach this module (the loss place's guarantee), so no validation or test clip ever
trains or is scored by the domain classifier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from helpers.augment.method import Method, Place, RunContext, Setting
from helpers.setting_kinds import PROBABILITY, WEIGHT, Kind

WIDTH = Kind(lambda value: not isinstance(value, bool) and isinstance(value, int) and value >= 1,
             "a whole number >= 1")
DEPTH = Kind(lambda value: not isinstance(value, bool) and isinstance(value, int) and value >= 2,
             "a whole number >= 2 (input and output layer, and depth - 2 hidden layers)")


class _ReverseGradient(torch.autograd.Function):
    """Identity forward; the incoming gradient times ``-weight`` backward."""

    @staticmethod
    def forward(ctx, x: Tensor, weight: float) -> Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        return -ctx.weight * grad, None


def reverse_gradient(x: Tensor, weight: float) -> Tensor:
    """x unchanged; the gradient reaching x is ``-weight`` times the gradient reaching the result."""
    return _ReverseGradient.apply(x, weight)


def domain_classifier(embedding_size: int, n_domains: int, width: int, depth: int, dropout: float) -> nn.Sequential:
    """DomainBed's discriminator MLP: Linear(embedding_size, width), depth - 2 Linear(width, width), and
    Linear(width, n_domains); each but the last followed by dropout, then ReLU."""
    layers: list[nn.Module] = []
    size = embedding_size
    for _ in range(depth - 1):
        layers += [nn.Linear(size, width), nn.Dropout(dropout), nn.ReLU()]
        size = width
    layers.append(nn.Linear(size, n_domains))
    return nn.Sequential(*layers)


class DomainAdversarial(Method, nn.Module):
    """DANN: a domain classifier over the training domains on the embedding, through gradient reversal.

    weight: the reversal weight (DomainBed's ``lambda``; 0: off); width, depth, dropout: the domain
    classifier's MLP (DomainBed's ``mlp_width``, ``mlp_depth``, ``mlp_dropout``); embedding_size: width of
    the network's embedding; domain_names: meaning of a batch's "domain" indices; seen_domains: the domains
    trained on, the classifier's outputs in this order.
    """

    name = "dann"
    place = Place.LOSS
    strength = "weight"
    settings = {
        "weight": Setting(0.0, WEIGHT, "DANN: gradient reversal weight on the domain classifier's loss (DomainBed's "
                          "constant lambda, 1.0 in the named config dann); 0: off"),
        "width": Setting(256, WIDTH, "DANN: width of the domain classifier's hidden layers (DomainBed: 256)"),
        "depth": Setting(3, DEPTH, "DANN: linear layers of the domain classifier (DomainBed: 3)"),
        "dropout": Setting(0.0, PROBABILITY, "DANN: dropout after each hidden layer of the domain classifier "
                           "(DomainBed: 0)"),
    }
    named_configs = {"dann": (
        "Domain-adversarial training, reversal weight 1 and DomainBed's domain classifier (Ganin et al. 2016); needs "
        "two or more basedataset.train_domains.",
        {"dann_weight": 1.0})}

    def __init__(self, weight: float, width: int, depth: int, dropout: float, embedding_size: int,
                 domain_names: Sequence[str], seen_domains: Sequence[str]):
        nn.Module.__init__(self)
        self.weight = float(weight)
        self.seen_domains = tuple(seen_domains)
        self.classifier = domain_classifier(embedding_size, len(self.seen_domains), width, depth, dropout)
        # a batch's domain index -> the classifier's output for it; -1 for domains not trained on
        seen_index = [self.seen_domains.index(name) if name in self.seen_domains else -1 for name in domain_names]
        self.register_buffer("seen_index", torch.tensor(seen_index, dtype=torch.long), persistent=False)

    @classmethod
    def build(cls, settings: Mapping[str, Any], context: RunContext) -> DomainAdversarial:
        """The domain classifier for the run's embedding and training domains; refused for fewer than two."""
        seen = list(context.seen_domains)
        if len(seen) < 2:
            raise ValueError(_one_domain_message(settings["weight"], seen, context.domain_kind))
        if context.embedding_size is None:
            raise ValueError("dann: the loss place is built with the network, whose embedding size it needs")
        return cls(**settings, embedding_size=context.embedding_size, domain_names=context.domain_names,
                   seen_domains=seen)

    @classmethod
    def check(cls, settings: Mapping[str, Any], config: Mapping[str, Any]) -> None:
        """Two or more training domains, when basedataset.train_domains names them (None: the dataset's
        training domains, counted when the method is built, before any audio is read)."""
        train_domains = config.get("basedataset", {}).get("train_domains")
        if isinstance(train_domains, list | tuple) and len(train_domains) < 2:
            raise ValueError(_one_domain_message(settings["weight"], list(train_domains), "domain"))

    def forward(self, embedding: Tensor, batch: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        """The domain classifier's cross-entropy on a training batch's embedding (batch, embedding size),
        through the gradient reversal layer, and the figures domain_loss and domain_acc."""
        targets = self.seen_index[batch["domain"].to(self.seen_index.device)]
        if bool((targets < 0).any()):
            raise ValueError(f"dann: a training batch holds domains outside the training domains "
                             f"{list(self.seen_domains)}; the loss place is for training batches only")
        logits = self.classifier(reverse_gradient(embedding, self.weight))
        loss = F.cross_entropy(logits, targets)
        accuracy = (logits.argmax(dim=1) == targets).float().mean()
        return loss, {"domain_loss": loss.detach(), "domain_acc": accuracy}


def _one_domain_message(weight: float, seen: list[str], kind: str) -> str:
    return (f"dann_weight={weight} trains a classifier to tell the training {kind}s apart, but the run trains on "
            f"{seen} alone: there is nothing to discriminate. Set basedataset.train_domains to two or more "
            f"{kind}s (e.g. basedataset.train_domains='[\"acoustic\", \"electronic\"]' for NSynth), or dann_weight=0")
