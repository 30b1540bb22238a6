"""Choosing how a restricted form runs on one input: the block kernel, and the rows per block of a band.

The choice is made from measurements (``python -m benchmarks.attention --candidates`` times every kernel
and grouping side by side); the measured constants it rests on are :data:`CPU_MEASUREMENTS`, in one
place with where they come from, so that the next person can measure them again on other hardware.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from models.patterns import AttentionPattern, TokenLayout
from models.sparse_kernels import fused_cpu_available
from models.sparse_plan import Block, plan_blocks


@dataclass(frozen=True)
class Execution:
    """How a restricted form runs on one input.

    kernel: a name in models.sparse_kernels.BLOCK_KERNELS.
    group_rows: frequency rows of queries per block for band forms (cluster forms use their clusters).
    """

    kernel: str = "sdpa"
    group_rows: int = 1


@dataclass(frozen=True)
class CpuMeasurements:
    """What the kernel choice on a CPU rests on, measured with benchmarks/attention.py (PaSST-S,
    64-dimensional heads, 12 x 99 patch grid and longer clips, float32, on a 2-core x86-64 CPU with
    torch 2.14, November 2026; the tables are in benchmarks/README.md).

    fused_tiles: the fused CPU kernel's query tiles as (queries below which a tile is used, tile rows,
        efficiency relative to its best on long sequences): 71 %, 92 % and 100 % with 32, 64 and 256 rows;
        the unused rows of a last, partial tile cost half as much as used ones.
    mask_cost: factor on the time of a block call that carries a key mask (5 % more).
    gather_cost: gathering one token of queries, keys or values costs as much as this many
        (query, key) pairs of the fused kernel.
    cost_tolerance: measured times scatter by about 5 % around the model; groupings within 3 % of the
        lowest modelled cost count as equal, and the one with fewer rows per block is taken.
    max_group_rows: band rows per block tried.
    fused_long_block: queries per cluster block from which the fused kernel (its 256-row tiles) beats the
        matmul kernel: per_row_6 at 20-30 s clips measured 0.86/0.85 of unrestricted attention with
        ``matmul`` against 0.83/0.76 with ``fused_cpu``.
    """

    fused_tiles: tuple[tuple[float, int, float], ...] = ((192, 32, 0.71), (768, 64, 0.92), (math.inf, 256, 1.0))
    mask_cost: float = 1.05
    gather_cost: float = 9.0
    cost_tolerance: float = 1.03
    max_group_rows: int = 4
    fused_long_block: int = 768


CPU_MEASUREMENTS = CpuMeasurements()


def choose_execution(pattern: AttentionPattern, layout: TokenLayout, q: Tensor, dropout_p: float = 0.0) -> Execution:
    """The execution measured fastest for this pattern, layout and input.

    On a CPU in float32/64 without attention dropout: ``matmul`` for cluster forms, unless their blocks
    reach ``fused_long_block`` queries (long clips), where the fused kernel's 256-row tiles make
    ``fused_cpu`` faster; ``matmul_windows`` with one row per block for band forms (their overlapping
    windows read in place; grouping rows costs masked work). In 16-bit floats on a CPU: ``fused_cpu``,
    which computes them natively. Attention dropout, other devices and tracing (TorchScript and ONNX
    export, whose tracers record functional operations faithfully but not the in-place and ``out=``
    writes of the matmul kernels): ``sdpa``. With ``fused_cpu`` and ``sdpa``, band forms take the number
    of rows per block with the lowest modelled cost (:func:`modelled_cost`). FlexAttention
    (``attention_impl="flex"``) is never chosen here: the CUDA choice stays ``sdpa`` until
    ``benchmarks/gpu_check.py`` has measured flex against it.
    """
    portable = dropout_p > 0 or torch.jit.is_tracing()
    return _choose(pattern, layout, q.device.type, q.dtype, portable)


def modelled_cost(blocks: list[Block], n_global: int, masked: bool,
                  measured: CpuMeasurements = CPU_MEASUREMENTS) -> float:
    """Time of the block calls on the fused kernel, in units of one (query, key) pair at its best efficiency."""
    cost = 0.0
    for block in blocks:
        block_queries, block_keys = block.shape[0], block.shape[1] + n_global
        tile, tile_efficiency = next((tile, eff) for below, tile, eff in measured.fused_tiles if block_queries < below)
        unused_rows = math.ceil(block_queries / tile) * tile - block_queries
        efficiency = tile_efficiency * block_queries / (block_queries + unused_rows / 2)
        cost += block_queries * block_keys / efficiency * (measured.mask_cost if masked else 1.0)
        cost += measured.gather_cost * (block_queries + 2 * block_keys)
    return cost


@functools.lru_cache(maxsize=256)
def _choose(
    pattern: AttentionPattern, layout: TokenLayout, device_type: str, dtype: torch.dtype, portable: bool
) -> Execution:
    measured = CPU_MEASUREMENTS
    fused = "fused_cpu" if fused_cpu_available() else "sdpa"
    if device_type != "cpu" or portable:
        kernel = "sdpa"
    elif dtype not in (torch.float32, torch.float64):
        kernel = fused
    elif pattern.is_band:
        return Execution("matmul_windows")
    else:
        longest = max((block.shape[0] for block in plan_blocks(pattern, layout)), default=0)
        return Execution(fused if longest >= measured.fused_long_block else "matmul")
    if not pattern.is_band:
        return Execution(kernel)
    costs = []
    for group_rows in range(1, measured.max_group_rows + 1):
        blocks = plan_blocks(pattern, layout, group_rows)
        cost = modelled_cost(blocks, layout.n_global, masked=group_rows > 1)
        costs.append((cost, Execution(kernel, group_rows)))
    # within the model's accuracy, fewer rows per block: less masked work and smaller masks
    lowest = min(cost for cost, _ in costs)
    return next(execution for cost, execution in costs if cost <= lowest * measured.cost_tolerance)
