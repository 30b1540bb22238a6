"""Frequency-restricted self-attention (FRITO).

The ``rf_norm_t`` string is parsed once, by :func:`parse_rf_norm_t`, into an :class:`AttentionPattern`.
Everything that depends on the form asks that object: which frequency rows a token may attend
(:meth:`AttentionPattern.allowed_rows`), the clusters of rows (:meth:`AttentionPattern.row_clusters`),
the band width (:attr:`AttentionPattern.band_width`), the full token mask
(:meth:`AttentionPattern.token_mask`).

Tokens are described by a :class:`TokenLayout`: global (cls/dist) tokens first, then patch tokens in
row-major order of the frequency x time patch grid (every time step of the lowest frequency row
first). Each token keeps the index of the frequency row it came from, so the restriction stays exact
when patchout removes tokens, columns or rows.

Global tokens attend every token and every token attends them, in every form.

Executors compute attention for a pattern; they share one signature,
``executor(q, k, v, pattern, layout, dropout_p) -> out`` with q, k, v of shape
(batch, heads, tokens, head_dim). :func:`masked_attention` is the reference;
:func:`models.sparse_attention.sparse_attention` computes every restricted form without N x N tensors.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.sparse_attention import sparse_attention

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
ATTENTION_IMPLS = ("auto", "sparse", "masked")

_SIZED_FORMS = {
    "per_row": ("clusters", False),
    "sparse_row": ("clusters", True),
    "row_overlap": ("band", False),
}
_FORM_RE = re.compile(r"^(per_row|row_overlap|sparse_row)(?:_(\d+))?$")


@dataclass(frozen=True)
class AttentionPattern:
    """Which frequency rows a patch token may attend.

    kind: "full" (unrestricted), "clusters" (rows grouped into consecutive clusters of ``size`` rows),
        "halves" (lower floor(rows/2) rows and the rest) or "band" (rows within ``size`` - 1).
    size: rows per cluster for "clusters", the band parameter v for "band", 0 otherwise.
    sparse: computed block by block without a token mask (``sparse_row_<r>``).
    branched: each half has its own attention weights and pre-attention norm (``high_low_branch``).
    """

    name: str
    kind: str
    size: int = 0
    sparse: bool = False
    branched: bool = False

    @property
    def is_restricted(self) -> bool:
        return self.kind != "full"

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
    if number is None:
        if form == "sparse_row":
            raise ValueError(f"rf_norm_t {rf_norm_t!r} needs a cluster size, e.g. sparse_row_6. {_forms_hint()}")
        number = "1" if form == "per_row" else "2"
    size = int(number)
    if size < 1:
        raise ValueError(f"rf_norm_t {rf_norm_t!r}: the number must be an integer >= 1. {_forms_hint()}")
    kind, sparse = _SIZED_FORMS[form]
    return AttentionPattern(name=rf_norm_t, kind=kind, size=size, sparse=sparse)


def attention_mask(rf_norm_t: str, n_rows: int, n_cols: int, n_global: int = 2) -> Tensor:
    """Bool (N, N) mask of ``rf_norm_t`` over a full n_rows x n_cols patch grid plus ``n_global`` tokens.

    Tokens are ordered globals first, then the grid row-major (every time step of the lowest frequency
    row first). True means the query (row index) may attend the key (column index).
    """
    pattern = parse_rf_norm_t(rf_norm_t)
    return pattern.token_mask(TokenLayout.full_grid(n_rows, n_cols, n_global))


@dataclass(frozen=True)
class TokenLayout:
    """Where each token of a sequence came from.

    token_rows: (N,) long tensor on the CPU, the frequency row of each token, -1 for global tokens.
        Global tokens come first; patch tokens follow in non-decreasing row order.
    n_rows: frequency rows of the patch grid before any patchout (the pattern is defined on them).
    """

    token_rows: Tensor
    n_rows: int

    @classmethod
    def full_grid(cls, n_rows: int, n_cols: int, n_global: int = 2) -> TokenLayout:
        rows = torch.arange(n_rows).repeat_interleave(n_cols)
        return cls(torch.cat([torch.full((n_global,), -1), rows]), n_rows)

    @classmethod
    def from_kept(cls, token_rows: Tensor, n_rows: int, n_global: int) -> TokenLayout:
        """Layout for patch tokens with frequency rows ``token_rows`` (already in sequence order)."""
        rows = token_rows.detach().to("cpu", torch.long)
        if rows.numel() > 1 and bool((rows[1:] < rows[:-1]).any()):
            raise ValueError("patch tokens must be in row-major order (non-decreasing frequency row)")
        return cls(torch.cat([torch.full((n_global,), -1), rows]), n_rows)

    @cached_property
    def n_global(self) -> int:
        return int((self.token_rows < 0).sum())

    @property
    def n_tokens(self) -> int:
        return self.token_rows.numel()

    @cached_property
    def row_counts(self) -> tuple[int, ...]:
        """Number of kept patch tokens in each frequency row of the grid."""
        return tuple(torch.bincount(self.token_rows[self.n_global :], minlength=self.n_rows).tolist())

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


Executor = Callable[[Tensor, Tensor, Tensor, AttentionPattern, TokenLayout, float], Tensor]


def masked_attention(
    q: Tensor, k: Tensor, v: Tensor, pattern: AttentionPattern, layout: TokenLayout, dropout_p: float = 0.0
) -> Tensor:
    """Reference executor: scaled dot-product attention with the pattern's boolean token mask."""
    mask = pattern.token_mask(layout).to(q.device) if pattern.is_restricted else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)


def select_executor(pattern: AttentionPattern, attention_impl: str = "auto") -> Executor:
    """The executor for a pattern: "masked" forces the reference; "auto"/"sparse" compute every restricted
    form block-sparsely (:func:`models.sparse_attention.sparse_attention`); unrestricted attention is one
    plain fused call either way."""
    if attention_impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention_impl must be one of {ATTENTION_IMPLS}, got {attention_impl!r}")
    if attention_impl == "masked" or not pattern.is_restricted:
        return masked_attention
    return sparse_attention


class FrequencyAttention(nn.Module):
    """Multi-head self-attention restricted along frequency by an :class:`AttentionPattern`."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        pattern: AttentionPattern,
        attention_impl: str = "auto",
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
    ):
        """
        Args:
            dim: token embedding width.
            num_heads: attention heads; dim must divide evenly.
            pattern: which frequency rows each patch token may attend.
            attention_impl: "auto", "sparse" or "masked" (reference) execution of the pattern.
            attn_drop: dropout on attention weights while training.
            proj_drop: dropout after the output projection.
        """
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embedding width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.pattern = pattern
        self.executor = select_executor(pattern, attention_impl)
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, layout: TokenLayout) -> Tensor:
        batch, n_tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, n_tokens, 3, self.num_heads, dim // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout_p = self.attn_drop if self.training else 0.0
        out = self.executor(q, k, v, self.pattern, layout, dropout_p)
        out = out.transpose(1, 2).reshape(batch, n_tokens, dim)
        return self.proj_drop(self.proj(out))


def _forms_hint() -> str:
    return "Accepted forms: " + ", ".join(ACCEPTED_FORMS) + " (r and v are integers >= 1)."
