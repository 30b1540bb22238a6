"""Choosing how a restricted form runs on one input: the dense masked call, or a block kernel and the rows
per block of a band.

Every candidate computes the same attention (within float rounding); they differ in time, and which is
fastest depends on the input: block kernels skip the forbidden pairs but pay per call and per gathered
token, so on small token counts or wide bands one dense call with a mask wins, on long clips and narrow
forms the blocks win by the fraction of pairs they skip. The choice is a cost model: for each candidate,

    seconds = call * calls + matrix * matrices + pair * (query, key) pairs * head_dim
              + token * tokens moved * head_dim

with the counts taken from the plan the candidate would run (:func:`candidate_work`), and the constants
measured per kernel and mode (training step or inference) by ``python -m benchmarks.grid --fit FILE``, which
times every candidate side by side over a grid of forms, models, clip lengths and batch sizes and fits the
constants to those times; what the model misses at each measured input (log measured / modelled, per
candidate) corrects it for inputs near that one (:class:`Measured`). :data:`SHIPPED_COSTS` holds the constants
measured for this project's CPU, with where they come from; a user re-fits on their own machine and points
frito at the file (``executor_costs=FILE`` in an experiment, :func:`use_costs` from Python).
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from models.patterns import AttentionPattern, TokenLayout
from models.sparse_kernels import fused_cpu_available, gather_pieces
from models.sparse_plan import partition_blocks, plan_blocks

DENSE = "masked"  # the dense call with the pattern's token mask (models.attention.masked_attention)
BLOCK_CANDIDATES = ("matmul", "matmul_windows", "fused_cpu", "sdpa")
MODES = ("inference", "training")
MAX_GROUP_ROWS = 4  # band rows per block tried
CORRECTION_REACH = 3.0  # measured inputs correct the model for inputs within this factor of their shape


@dataclass(frozen=True)
class Execution:
    """How a restricted form runs on one input.

    kernel: ``"masked"`` (one dense call with the token mask) or a name in models.sparse_kernels.BLOCK_KERNELS.
    group_rows: frequency rows of queries per block for band forms (cluster forms use their clusters).
    """

    kernel: str = "sdpa"
    group_rows: int = 1


@dataclass(frozen=True)
class KernelCost:
    """Seconds per call, per matrix (one block of one head of one example), per (query, key) pair and per token
    moved, the last two per head dimension."""

    call: float
    matrix: float
    pair: float
    token: float

    def seconds(self, work: Work) -> float:
        return self.call * work.calls + self.matrix * work.matrices + self.pair * work.pairs + self.token * work.tokens


@dataclass(frozen=True)
class Measured:
    """One measured input: how far each candidate's time was from the model's, as log(measured / modelled).

    Inputs near it (same form and mode, tokens, examples x heads and head_dim within a factor CORRECTION_REACH
    together) take these corrections, interpolated between the measured inputs around them: a kernel's
    efficiency on small or oddly shaped blocks is what a model linear in calls, matrices, pairs and tokens
    misses, and it changes slowly with the shape.
    """

    form: str
    mode: str
    tokens: int
    batch_heads: int
    head_dim: int
    log_ratios: dict[str, float] = field(hash=False)

    def distance(self, tokens: int, batch_heads: int, head_dim: int) -> float:
        return (abs(math.log(tokens / self.tokens)) + abs(math.log(batch_heads / self.batch_heads))
                + abs(math.log(head_dim / self.head_dim)))


@dataclass(frozen=True)
class ExecutorCosts:
    """The constants of the cost model for one device type: mode -> candidate -> :class:`KernelCost`, and the
    corrections measured on a grid of inputs (:class:`Measured`).

    source: where the constants come from (machine, date, command), shown in benchmark output.
    """

    device_type: str
    costs: dict[str, dict[str, KernelCost]] = field(hash=False)
    source: str = ""
    measured: tuple[Measured, ...] = field(default=(), hash=False)

    def correction(self, form: str, mode: str, tokens: int, batch_heads: int, head_dim: int) -> dict[str, float]:
        """log(measured / modelled) per candidate, interpolated between the measured inputs of this form and mode
        within reach (weights falling with the distance); {} where none is."""
        weights: dict[str, float] = {}
        sums: dict[str, float] = {}
        for entry in self.measured:
            if entry.form != form or entry.mode != mode:
                continue
            distance = entry.distance(tokens, batch_heads, head_dim)
            if distance <= math.log(CORRECTION_REACH):
                weight = 1 / (distance + 0.05)
                for name, log_ratio in entry.log_ratios.items():
                    weights[name] = weights.get(name, 0.0) + weight
                    sums[name] = sums.get(name, 0.0) + weight * log_ratio
        return {name: sums[name] / weights[name] for name in weights}

    def __post_init__(self):
        # hashed once: the choice's cache hashes its arguments on every attention call
        object.__setattr__(self, "_hash", hash(json.dumps(self.to_json(), sort_keys=True)))

    def __hash__(self) -> int:
        return self._hash

    def to_json(self) -> dict:
        return {
            "device_type": self.device_type,
            "source": self.source,
            "costs": {mode: {name: [c.call, c.matrix, c.pair, c.token] for name, c in by_kernel.items()}
                      for mode, by_kernel in self.costs.items()},
            "measured": [[m.form, m.mode, m.tokens, m.batch_heads, m.head_dim,
                          {name: round(ratio, 4) for name, ratio in m.log_ratios.items()}] for m in self.measured],
        }

    @classmethod
    def from_json(cls, data: dict) -> ExecutorCosts:
        costs = {mode: {name: KernelCost(*values) for name, values in by_kernel.items()}
                 for mode, by_kernel in data["costs"].items()}
        measured = tuple(Measured(*entry) for entry in data.get("measured", []))
        return cls(data["device_type"], costs, data.get("source", ""), measured)


def read_costs(path: str | Path) -> ExecutorCosts:
    """The constants written by ``python -m benchmarks.grid --fit FILE``; ValueError naming what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        costs = ExecutorCosts.from_json(data)
    except FileNotFoundError:
        raise ValueError(f"executor costs file {path} does not exist; write one with "
                         f"'python -m benchmarks.grid --fit {path}' or leave executor_costs unset") from None
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"executor costs file {path} is not one written by 'python -m benchmarks.grid --fit' "
                         f"({error}); write it again with that command") from None
    for mode in MODES:
        if DENSE not in costs.costs.get(mode, {}):
            raise ValueError(f"executor costs file {path} has no {mode!r} constants for {DENSE!r}; "
                             f"write it again with 'python -m benchmarks.grid --fit {path}'")
    return costs


def use_costs(costs: ExecutorCosts | str | Path | None) -> None:
    """Make ``costs`` (or the file at that path) the constants of every later choice in this process;
    None restores :data:`SHIPPED_COSTS`. A process-wide setting: how fast each kernel runs is a property of
    the machine, not of a model, so it is not stored with checkpoints."""
    global _active_costs
    _active_costs = costs if costs is None or isinstance(costs, ExecutorCosts) else read_costs(costs)


def active_costs(device_type: str) -> ExecutorCosts | None:
    """The constants the choice uses on ``device_type``: the user's (:func:`use_costs`) where measured on that
    device type, else the shipped ones where they were, else None (then fixed rules apply)."""
    for costs in (_active_costs, SHIPPED_COSTS):
        if costs is not None and costs.device_type == device_type:
            return costs
    return None


def choose_execution(
    pattern: AttentionPattern, layout: TokenLayout, q: Tensor, dropout_p: float = 0.0, dense_allowed: bool = True
) -> Execution:
    """The execution with the lowest modelled time for this pattern, layout and input.

    Candidates: the dense masked call (unless ``dense_allowed`` is False: ``attention_impl="sparse"``
    promises no tokens x tokens tensor) and every block kernel that runs here, with 1 to MAX_GROUP_ROWS rows
    per block for band forms. Attention dropout and tracing (TorchScript and ONNX export, whose tracers
    record functional operations faithfully but not the in-place and ``out=`` writes of the matmul kernels)
    leave ``sdpa`` and the dense call. On a device type without measured constants (a GPU until
    ``python -m benchmarks.grid --fit`` has run there): ``sdpa``, one row per block. 16-bit floats on a CPU:
    ``fused_cpu``, which computes them natively (the constants are measured in float32).
    FlexAttention (``attention_impl="flex"``) is never chosen here.
    """
    portable = dropout_p > 0 or torch.jit.is_tracing()
    training = torch.is_grad_enabled() and q.requires_grad
    batch, heads, _, head_dim = q.shape
    return choose_for_shape(pattern, layout, batch, heads, head_dim, q.device.type, training, q.dtype, portable,
                            dense_allowed)


def choose_for_shape(
    pattern: AttentionPattern,
    layout: TokenLayout,
    batch: int,
    heads: int,
    head_dim: int,
    device_type: str,
    training: bool,
    dtype: torch.dtype = torch.float32,
    portable: bool = False,
    dense_allowed: bool = True,
) -> Execution:
    """:func:`choose_execution` for q of shape (batch, heads, tokens, head_dim) on ``device_type``, ``training``
    (a backward pass follows) or not; ``portable``: attention dropout or tracing."""
    costs = active_costs(device_type)
    return _choose(pattern, layout, batch, heads, head_dim, dtype, training, portable, dense_allowed, costs)


@dataclass(frozen=True)
class Work:
    """What one candidate computes on one input: calls, matrices (blocks x heads x examples), (query, key)
    pairs x head_dim, tokens moved x head_dim."""

    calls: float
    matrices: float
    pairs: float
    tokens: float


def candidate_work(
    execution: Execution, pattern: AttentionPattern, layout: TokenLayout, batch: int, heads: int, head_dim: int
) -> Work:
    """The counts the cost model multiplies by its constants, for q, k and v laid out as the transformer
    block hands them over (tokens-major, heads interleaved).

    dense: one call over all tokens x tokens pairs. Gathered kernels (``matmul``, ``fused_cpu``, ``sdpa``):
    one call per piece of each call of the plan (pieces bound the gathered bytes), the padded pairs of
    each block and its gathered queries, keys and values. ``matmul_windows``: one call per window and
    batch element (these layouts cannot fold (batch, head) into one matrix batch), the window's pairs and
    its queries. All of them: the global queries' call over every key.
    """
    n_global, n_tokens = layout.n_global, layout.n_tokens
    pairs_per_head = float(n_global * n_tokens)
    if execution.kernel == DENSE:
        return Work(1, batch * heads, batch * heads * n_tokens * n_tokens * head_dim,
                    batch * heads * 4 * n_tokens * head_dim)
    blocks = plan_blocks(pattern, layout, execution.group_rows if pattern.is_band else 1)
    calls, matrices, tokens = 1.0, 1.0, 0.0
    if execution.kernel == "matmul_windows":
        for block in blocks:
            queries, keys = block.shape[0], n_global + block.shape[1]
            calls += batch
            matrices += 1
            pairs_per_head += queries * keys
            tokens += 2 * queries
    else:
        for group in partition_blocks(blocks):
            queries = max(block.shape[0] for block in group)
            keys = n_global + max(block.shape[1] for block in group)
            calls += gather_pieces(len(group), keys, batch, heads, head_dim)
            matrices += len(group)
            pairs_per_head += len(group) * queries * keys
            tokens += len(group) * (2 * queries + 2 * keys)
    scale = batch * heads * head_dim
    return Work(calls, matrices * batch * heads, pairs_per_head * scale, tokens * scale)


@functools.lru_cache(maxsize=512)
def _choose(
    pattern: AttentionPattern,
    layout: TokenLayout,
    batch: int,
    heads: int,
    head_dim: int,
    dtype: torch.dtype,
    training: bool,
    portable: bool,
    dense_allowed: bool,
    costs: ExecutorCosts | None,
) -> Execution:
    if costs is None:
        return Execution("sdpa")
    on_cpu = costs.device_type == "cpu"
    if on_cpu and not portable and dtype not in (torch.float32, torch.float64):
        return Execution("fused_cpu" if fused_cpu_available() else "sdpa")
    by_kernel = costs.costs["training" if training else "inference"]
    if on_cpu and not portable:
        kernels = [k for k in BLOCK_CANDIDATES if k != "fused_cpu" or fused_cpu_available()]
    else:
        kernels = ["sdpa"]
    candidates = [Execution(kernel, rows) for kernel in kernels
                  for rows in (range(1, MAX_GROUP_ROWS + 1) if pattern.is_band else (1,))]
    if dense_allowed and DENSE in by_kernel:
        candidates.append(Execution(DENSE))
    mode = "training" if training else "inference"
    correction = costs.correction(pattern.name, mode, layout.n_tokens, batch * heads, head_dim)
    timed = []
    for candidate in candidates:
        if candidate.kernel in by_kernel:
            modelled = by_kernel[candidate.kernel].seconds(candidate_work(candidate, pattern, layout, batch, heads,
                                                                          head_dim))
            timed.append((modelled * math.exp(correction.get(candidate_name(candidate), 0.0)), candidate))
    return min(timed, key=lambda item: item[0])[1] if timed else Execution("sdpa")


def candidate_name(execution: Execution) -> str:
    """How benchmarks and corrections name a candidate: "masked" or "<kernel>/g<rows per block>"."""
    return DENSE if execution.kernel == DENSE else f"{execution.kernel}/g{execution.group_rows}"


_active_costs: ExecutorCosts | None = None

# The constants measured on this project's machine, with where they come from (its "source"): written by
# ``python -m benchmarks.grid ... --fit models/executor_costs_cpu.json``; the grid's summary is in
# benchmarks/README.md.
SHIPPED_COSTS: ExecutorCosts = read_costs(Path(__file__).with_name("executor_costs_cpu.json"))
