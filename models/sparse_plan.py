"""Planning block-sparse attention: which query tokens attend which key tokens, grouped into calls.

A restricted form is computed block by block. A block is a run of query tokens (one cluster of
frequency rows, or a group of neighbouring rows of a band) together with the one contiguous run of tokens
those rows may attend, plus the global tokens (:meth:`models.patterns.AttentionPattern.row_blocks`, cut
from the kept tokens by :meth:`models.patterns.TokenLayout.token_span`, so patchout keeps it exact).
A :class:`Plan` holds the blocks of one pattern on one layout in two forms, one per family of kernels:

- gathered calls (:class:`Call`): blocks of one shape folded into the batch of one call; blocks of
  unequal size run as a few calls of equal shape, or, when there are many sizes, padded to one shape
  with a key mask;
- windows in place (:class:`Window`): each block's queries and keys where they lie in the sequence.

A block whose keys include rows some of its queries may not attend (a band's rows grouped into one
block) carries a mask of the pairs :meth:`~models.patterns.AttentionPattern.allowed_rows` forbids.
Plans are cached per pattern, layout, rows per block and device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from models.patterns import AttentionPattern, TokenLayout

MAX_CALLS = 4  # at most this many calls of one shape each before blocks are padded to one shape


@functools.lru_cache(maxsize=64)
def make_plan(pattern: AttentionPattern, layout: TokenLayout, rows_per_block: int, device: torch.device) -> Plan:
    """The blocks of ``pattern`` on ``layout`` as calls and windows, index tensors on ``device``."""
    blocks = plan_blocks(pattern, layout, rows_per_block)
    calls, query_slots = [], [torch.arange(layout.n_global)]
    for group in partition_blocks(blocks):
        call, slots = _make_call(group, pattern, layout, device)
        calls.append(call)
        query_slots.append(slots)
    windows = tuple(_make_window(block, pattern, layout, device) for block in blocks)
    slots = torch.cat(query_slots)
    if torch.equal(slots, torch.arange(layout.n_tokens)):
        return Plan(layout.n_global, tuple(calls), None, windows)
    position = torch.empty(layout.n_tokens, dtype=torch.long)
    kept = slots >= 0
    position[slots[kept]] = torch.arange(slots.numel())[kept]
    return Plan(layout.n_global, tuple(calls), position.to(device), windows)


def plan_blocks(pattern: AttentionPattern, layout: TokenLayout, rows_per_block: int = 1) -> list[Block]:
    """The token blocks of the pattern's row blocks on ``layout``; blocks without query tokens are left out."""
    blocks = []
    for rows in pattern.row_blocks(layout.n_rows, rows_per_block):
        query_start, query_end = layout.token_span(rows.query_first, rows.query_end)
        if query_start < query_end:
            blocks.append(Block(query_start, query_end, *layout.token_span(rows.key_first, rows.key_end)))
    return blocks


@dataclass(frozen=True)
class Block:
    """Query tokens [query_start, query_end) attend key tokens [key_start, key_end) and the global tokens."""

    query_start: int
    query_end: int
    key_start: int
    key_end: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.query_end - self.query_start, self.key_end - self.key_start


@dataclass(frozen=True)
class Call:
    """Blocks of one shape attended in one batched call.

    query_index: (n_blocks * block_queries,) token of each query slot, block after block (padding: 0).
    key_index: (n_blocks * block_keys,) token of each key slot, the global tokens first in every block
        (padding: 0).
    mask: bool (n_blocks, 1, block_queries, block_keys), True where a query slot may attend a key slot;
        None when every query of a block may attend every key of the block.
    query_kept: positions of the real (not padding) query slots; None when there is no padding.
    """

    n_blocks: int
    block_queries: int
    block_keys: int
    query_index: Tensor
    key_index: Tensor
    mask: Tensor | None
    query_kept: Tensor | None

    def blocks(self, start: int, end: int) -> Call:
        """The same call restricted to blocks start ... end - 1."""
        kept = None
        if self.query_kept is not None:
            first, last = start * self.block_queries, end * self.block_queries
            inside = (self.query_kept >= first) & (self.query_kept < last)
            kept = self.query_kept[inside] - first
        return Call(
            n_blocks=end - start,
            block_queries=self.block_queries,
            block_keys=self.block_keys,
            query_index=self.query_index[start * self.block_queries : end * self.block_queries],
            key_index=self.key_index[start * self.block_keys : end * self.block_keys],
            mask=None if self.mask is None else self.mask[start:end],
            query_kept=kept,
        )

    def kept_queries(self) -> Tensor:
        """Token of each real query slot."""
        return self.query_index if self.query_kept is None else self.query_index[self.query_kept]

    def additive_mask(self, dtype: torch.dtype) -> Tensor | None:
        if self.mask is None:
            return None
        return torch.zeros(self.mask.shape, dtype=dtype, device=self.mask.device).masked_fill_(
            ~self.mask, float("-inf")
        )


@dataclass(frozen=True)
class Window:
    """Query tokens ``queries`` attend the global tokens and the key tokens ``keys`` (both contiguous).

    blocked: bool (queries, global + window keys), True where a query may not attend a key (rows of a
        grouped band outside each other's band); None when every query may attend every key.
    """

    queries: slice
    keys: slice
    blocked: Tensor | None


@dataclass(frozen=True)
class Plan:
    """The blocks of one pattern on one layout: as gathered calls and as windows in place.

    order: token order of the concatenated outputs [global queries, call 1, call 2, ...] (None when
        that concatenation is already in token order).
    """

    n_global: int
    calls: tuple[Call, ...]
    order: Tensor | None
    windows: tuple[Window, ...]


def partition_blocks(blocks: list[Block]) -> list[list[Block]]:
    """Blocks grouped into calls of one shape each: runs of consecutive blocks, else blocks of equal shape
    anywhere, else (many shapes) all blocks in one call padded to the largest shape."""
    runs: list[list[Block]] = []
    for block in blocks:
        if runs and runs[-1][0].shape == block.shape:
            runs[-1].append(block)
        else:
            runs.append([block])
    if len(runs) <= MAX_CALLS:
        return runs
    by_shape: dict[tuple[int, int], list[Block]] = {}
    for block in blocks:
        by_shape.setdefault(block.shape, []).append(block)
    if len(by_shape) <= MAX_CALLS:
        return list(by_shape.values())
    return [blocks]


def _make_call(
    blocks: list[Block], pattern: AttentionPattern, layout: TokenLayout, device: torch.device
) -> tuple[Call, Tensor]:
    """The call for ``blocks`` and the token of each of its query slots (-1 for padding)."""
    n_global = layout.n_global
    block_queries = max(block.shape[0] for block in blocks)
    block_keys = n_global + max(block.shape[1] for block in blocks)
    global_keys = list(range(n_global))
    query_slots, key_slots = [], []
    for block in blocks:
        queries = list(range(block.query_start, block.query_end))
        keys = global_keys + list(range(block.key_start, block.key_end))
        query_slots.append(queries + [-1] * (block_queries - len(queries)))
        key_slots.append(keys + [-1] * (block_keys - len(keys)))
    query_slots_t = torch.tensor(query_slots, dtype=torch.long)
    key_slots_t = torch.tensor(key_slots, dtype=torch.long)
    # padding query slots see every key of their block, so that no row of scores is all -inf
    allowed = torch.stack([
        _allowed_pairs(pattern, layout, queries.clamp(min=0), keys.clamp(min=0)) | (queries < 0)[:, None]
        for queries, keys in zip(query_slots_t, key_slots_t, strict=True)
    ])
    mask = (key_slots_t >= 0)[:, None, :] & allowed
    flat_slots = query_slots_t.flatten()
    padded = bool((flat_slots < 0).any())
    call = Call(
        n_blocks=len(blocks),
        block_queries=block_queries,
        block_keys=block_keys,
        query_index=flat_slots.clamp(min=0).to(device),
        key_index=key_slots_t.clamp(min=0).flatten().to(device),
        mask=None if bool(mask.all()) else mask[:, None].to(device),
        query_kept=torch.nonzero(flat_slots >= 0).flatten().to(device) if padded else None,
    )
    return call, flat_slots


def _make_window(block: Block, pattern: AttentionPattern, layout: TokenLayout, device: torch.device) -> Window:
    queries = torch.arange(block.query_start, block.query_end)
    keys = torch.cat([torch.arange(layout.n_global), torch.arange(block.key_start, block.key_end)])
    allowed = _allowed_pairs(pattern, layout, queries, keys)
    blocked = None if bool(allowed.all()) else (~allowed).to(device)
    return Window(slice(block.query_start, block.query_end), slice(block.key_start, block.key_end), blocked)


def _allowed_pairs(pattern: AttentionPattern, layout: TokenLayout, queries: Tensor, keys: Tensor) -> Tensor:
    """Bool (queries, keys): the pattern's rule between these tokens (global tokens attend and are
    attended by every token)."""
    query_rows, key_rows = layout.token_rows[queries], layout.token_rows[keys]
    allowed = pattern.allowed_rows(query_rows.clamp(min=0), key_rows.clamp(min=0), layout.n_rows)
    return allowed | (query_rows < 0)[:, None] | (key_rows < 0)[None, :]
