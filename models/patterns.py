"""The vocabulary of frequency-restricted attention: the ``rf_norm_t`` grammar and the token layout.

This is the leaf every attention module builds on; it imports nothing of the project. The
``rf_norm_t`` string is parsed once, by :func:`parse_rf_norm_t`, into an :class:`AttentionPattern`,
and everything that depends on the form asks that object: which frequency rows a token may attend
(:meth:`AttentionPattern.allowed_rows`), the clusters of rows (:meth:`AttentionPattern.row_clusters`),
the blocks of rows an executor can compute apart (:meth:`AttentionPattern.row_blocks`), the full token
mask (:meth:`AttentionPattern.token_mask`).

Tokens are described by a :class:`TokenLayout`: global (cls/dist) tokens first, then patch tokens in
row-major order of the frequency x time patch grid (every time step of the lowest frequency row first).
Each patch token keeps the frequency row it came from, so the restriction stays exact when patchout
removes tokens, columns or rows. Global tokens attend every token and every token attends them, in
every form.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

import torch
from torch import Tensor

ACCEPTED_FORMS = (
    '"" (unrestricted)',
    "per_row",
    "per_row_<r>",
    "high_low",
    "row_overlap",
    "row_overlap_<v>",
    "sparse_row_<r>",
    "high_low_branch",
)

_SIZED_FORMS = {"per_row": "clusters", "sparse_row": "clusters", "row_overlap": "band"}
_DEFAULT_SIZES = {"per_row": 1, "row_overlap": 2}
_FORM_RE = re.compile(r"^(per_row|row_overlap|sparse_row)(?:_(\d+))?$")


@dataclass(frozen=True)
class RowBlock:
    """Query rows [query_first, query_end) attend key rows [key_first, key_end) (and the global tokens)."""

    query_first: int
    query_end: int
    key_first: int
    key_end: int


@dataclass(frozen=True)
class AttentionPattern:
    """Which frequency rows a patch token may attend.

    kind: "full" (unrestricted), "clusters" (rows grouped into consecutive clusters of ``size`` rows),
        "halves" (lower floor(rows/2) rows and the rest) or "band" (rows within ``size`` - 1).
    size: rows per cluster for "clusters", the band parameter v for "band", 0 otherwise.
    branched: each half has its own attention weights and pre-attention norm (``high_low_branch``).
    """

    name: str
    kind: str
    size: int = 0
    branched: bool = False

    @property
    def is_restricted(self) -> bool:
        return self.kind != "full"

    @property
    def is_band(self) -> bool:
        """Whether neighbouring rows attend overlapping windows of rows (``row_overlap_<v>``), so that
        blocks of several query rows share keys some of their rows may not attend."""
        return self.kind == "band"

    @property
    def cluster_size(self) -> int | None:
        return self.size if self.kind == "clusters" else None

    @property
    def band_width(self) -> int | None:
        """v of ``row_overlap_<v>``: a token in row i attends rows i-v+1 ... i+v-1."""
        return self.size if self.kind == "band" else None

    def row_clusters(self, n_rows: int) -> list[tuple[int, int]] | None:
        """Clusters as (first_row, end_row) ranges over a grid of ``n_rows``; None for band/full forms."""
        if self.kind == "clusters":
            return [(start, min(start + self.size, n_rows)) for start in range(0, n_rows, self.size)]
        if self.kind == "halves":
            half = n_rows // 2
            return [(0, half), (half, n_rows)] if half > 0 else [(0, n_rows)]
        return None

    def row_cluster_index(self, rows: Tensor, n_rows: int) -> Tensor:
        """Cluster number of each frequency row (cluster forms only)."""
        if self.kind == "clusters":
            return torch.div(rows, self.size, rounding_mode="floor")
        if self.kind == "halves":
            return (rows >= n_rows // 2).long()
        raise ValueError(f"rf_norm_t={self.name!r} has no row clusters")

    def row_blocks(self, n_rows: int, rows_per_block: int = 1) -> list[RowBlock]:
        """The restriction as blocks of rows that can be attended apart: one per cluster, or, for a band,
        one per ``rows_per_block`` consecutive query rows with the union of their bands as keys (a block
        of several rows then holds keys that some of its rows may not attend: see :meth:`allowed_rows`)."""
        clusters = self.row_clusters(n_rows)
        if clusters is not None:
            return [RowBlock(first, end, first, end) for first, end in clusters]
        if self.kind != "band":
            return [RowBlock(0, n_rows, 0, n_rows)]
        if rows_per_block < 1:
            raise ValueError(f"rows_per_block must be >= 1, got {rows_per_block}")
        reach = self.size - 1
        return [
            RowBlock(first, min(first + rows_per_block, n_rows),
                     max(0, first - reach), min(n_rows, first + rows_per_block + reach))
            for first in range(0, n_rows, rows_per_block)
        ]

    def allowed_rows(self, query_rows: Tensor, key_rows: Tensor, n_rows: int) -> Tensor:
        """Bool (len(query_rows), len(key_rows)): may a token of each query row attend each key row."""
        q = query_rows[:, None]
        k = key_rows[None, :]
        if self.kind == "full":
            return torch.ones(q.shape[0], k.shape[1], dtype=torch.bool, device=query_rows.device)
        if self.kind == "band":
            return (q - k).abs() <= self.size - 1
        return self.row_cluster_index(q, n_rows) == self.row_cluster_index(k, n_rows)

    def token_mask(self, layout: TokenLayout) -> Tensor:
        """Bool (N, N) token mask; True where the query (row index) may attend the key (column index)."""
        rows = layout.token_rows
        is_global = rows < 0
        patch_rows = rows.clamp(min=0)
        allowed = self.allowed_rows(patch_rows, patch_rows, layout.n_rows)
        return allowed | is_global[:, None] | is_global[None, :]


def parse_rf_norm_t(rf_norm_t: str) -> AttentionPattern:
    """Parse an ``rf_norm_t`` string; raise ValueError naming the accepted forms if it is not one."""
    if not isinstance(rf_norm_t, str):
        raise ValueError(f"rf_norm_t must be a string, got {rf_norm_t!r}. {_forms_hint()}")
    if rf_norm_t == "":
        return AttentionPattern(name="", kind="full")
    if rf_norm_t in ("high_low", "high_low_branch"):
        return AttentionPattern(name=rf_norm_t, kind="halves", branched=rf_norm_t == "high_low_branch")
    match = _FORM_RE.match(rf_norm_t)
    if match is None:
        raise ValueError(f"Unknown rf_norm_t {rf_norm_t!r}. {_forms_hint()}")
    form, number = match.groups()
    if number is None and form not in _DEFAULT_SIZES:
        raise ValueError(f"rf_norm_t {rf_norm_t!r} needs a cluster size, e.g. sparse_row_6. {_forms_hint()}")
    size = _DEFAULT_SIZES[form] if number is None else int(number)
    if size < 1:
        raise ValueError(f"rf_norm_t {rf_norm_t!r}: the number must be an integer >= 1. {_forms_hint()}")
    return AttentionPattern(name=rf_norm_t, kind=_SIZED_FORMS[form], size=size)


def attention_mask(rf_norm_t: str, n_rows: int, n_cols: int, n_global: int = 2) -> Tensor:
    """Bool (N, N) mask of ``rf_norm_t`` over a full n_rows x n_cols patch grid plus ``n_global`` tokens.

    Tokens are ordered globals first, then the grid row-major (every time step of the lowest frequency
    row first). True means the query (row index) may attend the key (column index).
    """
    return parse_rf_norm_t(rf_norm_t).token_mask(TokenLayout.full_grid(n_rows, n_cols, n_global))


@dataclass(frozen=True)
class TokenLayout:
    """Where each token of a sequence came from: ``n_global`` global tokens, then ``row_counts[r]`` patch
    tokens of frequency row r for each row of the grid in turn (row-major order). Hashable, so that
    executors can keep what they derive from a layout.

    n_global: global (cls/dist) tokens at the start of the sequence.
    row_counts: kept patch tokens of each frequency row of the grid before any patchout (the pattern is
        defined on these rows; patchout only lowers the counts).
    """

    n_global: int
    row_counts: tuple[int, ...]

    @classmethod
    def full_grid(cls, n_rows: int, n_cols: int, n_global: int = 2) -> TokenLayout:
        return cls(n_global, (n_cols,) * n_rows)

    @classmethod
    def from_kept(cls, token_rows: Tensor, n_rows: int, n_global: int) -> TokenLayout:
        """Layout for patch tokens with frequency rows ``token_rows`` (already in sequence order)."""
        rows = token_rows.detach().to("cpu", torch.long)
        if rows.numel() > 1 and bool((rows[1:] < rows[:-1]).any()):
            raise ValueError("patch tokens must be in row-major order (non-decreasing frequency row)")
        return cls(n_global, tuple(torch.bincount(rows, minlength=n_rows).tolist()))

    @property
    def n_rows(self) -> int:
        return len(self.row_counts)

    @property
    def n_tokens(self) -> int:
        return self.row_offsets[-1]

    @cached_property
    def token_rows(self) -> Tensor:
        """(N,) long tensor on the CPU: the frequency row of each token, -1 for global tokens."""
        rows = torch.arange(self.n_rows).repeat_interleave(torch.tensor(self.row_counts, dtype=torch.long))
        return torch.cat([torch.full((self.n_global,), -1), rows])

    @cached_property
    def row_offsets(self) -> tuple[int, ...]:
        """Sequence index where each frequency row's tokens start; entry n_rows is the sequence length."""
        offsets = [self.n_global]
        for count in self.row_counts:
            offsets.append(offsets[-1] + count)
        return tuple(offsets)

    def token_span(self, first_row: int, end_row: int) -> tuple[int, int]:
        """(start, end) sequence indices of the tokens of rows first_row ... end_row - 1."""
        return self.row_offsets[first_row], self.row_offsets[end_row]

    def only_rows(self, first_row: int, end_row: int) -> TokenLayout:
        """The global tokens and the patch tokens of rows first_row ... end_row - 1, on the same grid."""
        counts = tuple(count if first_row <= row < end_row else 0 for row, count in enumerate(self.row_counts))
        return TokenLayout(self.n_global, counts)


def _forms_hint() -> str:
    return "Accepted forms: " + ", ".join(ACCEPTED_FORMS) + " (r and v are integers >= 1)."
