"""The PaSST network's modules: a vision transformer over log-mel patches, with patchout and frequency-restricted
attention.

The modules only; :mod:`models.passt` is the model's public face (``from models.passt import get_model``, as in
PaSST, FRITO and hear21passt), building one from an architecture name and the original FRITO code's keywords.
"""

from __future__ import annotations

import torch
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from errors import ConfigurationError
from models.attention import FrequencyAttention, check_attention_impl
from models.patterns import AttentionPattern, TokenLayout, parse_rf_norm_t

PATCH_SIZE = 16
N_GLOBAL_TOKENS = 2  # cls and distillation tokens


class PaSST(nn.Module):
    """Patchout spectrogram transformer with frequency-restricted attention."""

    def __init__(
        self,
        n_classes: int = 527,
        in_channels: int = 1,
        fstride: int = 10,
        tstride: int = 10,
        input_fdim: int = 128,
        input_tdim: int = 998,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        u_patchout: int = 0,
        s_patchout_t: int = 0,
        s_patchout_f: int = 0,
        pattern: AttentionPattern | None = None,
        attention_impl: str = "auto",
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
    ):
        """
        Args:
            n_classes: classifier outputs.
            in_channels: spectrogram channels.
            fstride, tstride: patch strides along frequency and time.
            input_fdim, input_tdim: mel bins and the longest number of frames the model accepts.
            embed_dim, depth, num_heads: transformer width, blocks and attention heads.
            mlp_ratio: hidden width of each block's MLP relative to embed_dim.
            u_patchout, s_patchout_t, s_patchout_f: patchout while training (tokens, time columns,
                frequency rows of the patch grid).
            pattern: frequency restriction of attention (unrestricted when None).
            attention_impl: execution of the pattern: "auto", "sparse", "masked" or "flex" (see
                models.attention.RESTRICTED_EXECUTORS).
            drop_rate, attn_drop_rate, drop_path_rate: dropout, attention dropout, stochastic depth.
        """
        super().__init__()
        check_attention_impl(attention_impl)
        if n_classes < 1:
            raise ConfigurationError(f"n_classes must be >= 1, got {n_classes}")
        if input_fdim < PATCH_SIZE or input_tdim < PATCH_SIZE:
            raise ConfigurationError(
                f"input of {input_fdim} mel bins x {input_tdim} frames is smaller than one "
                f"{PATCH_SIZE}x{PATCH_SIZE} patch; raise models.net.input_fdim / input_tdim"
            )
        self.pattern = pattern or parse_rf_norm_t("")
        self.n_classes = n_classes
        self.embed_dim = embed_dim
        self.n_rows, self.n_cols = patch_grid(input_fdim, input_tdim, fstride, tstride)
        _check_patchout(u_patchout, s_patchout_t, s_patchout_f, self.n_rows, self.n_cols)
        self.u_patchout = u_patchout
        self.s_patchout_t = s_patchout_t
        self.s_patchout_f = s_patchout_f

        self.patch_embed = PatchEmbed(in_channels, embed_dim, fstride, tstride)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.global_pos_embed = nn.Parameter(torch.zeros(1, N_GLOBAL_TOKENS, embed_dim))
        self.freq_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, self.n_rows, 1))
        self.time_pos_embed = nn.Parameter(torch.zeros(1, embed_dim, 1, self.n_cols))
        self.pos_drop = nn.Dropout(drop_rate)

        drop_paths = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, self.pattern, attention_impl, drop_rate, attn_drop_rate, dp)
            for dp in drop_paths
        )
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Sequential(nn.LayerNorm(embed_dim), nn.Linear(embed_dim, n_classes))
        self._init_weights()

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {"global_pos_embed", "freq_pos_embed", "time_pos_embed", "cls_token", "dist_token"}

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x: (batch, channels, mel bins, frames) -> (logits, embedding), embedding = mean of cls/dist."""
        tokens, layout = self.embed_tokens(x)
        for block in self.blocks:
            tokens = block(tokens, layout)
        tokens = self.norm(tokens)
        embedding = tokens[:, :N_GLOBAL_TOKENS].mean(dim=1)
        return self.head(embedding), embedding

    def embed_tokens(self, x: Tensor) -> tuple[Tensor, TokenLayout]:
        """Patch embedding, positional encodings, patchout and global tokens; returns the token layout."""
        if x.dim() != 4:
            raise ValueError(f"expected (batch, channels, mel bins, frames), got shape {tuple(x.shape)}")
        patches = self.patch_embed(x)  # (batch, embed, rows, cols)
        n_rows, n_cols = patches.shape[-2:]
        if n_rows != self.n_rows:
            raise ValueError(
                f"input has {x.shape[-2]} mel bins ({n_rows} patch rows); the model was built for "
                f"{self.n_rows} rows: set models.net.input_fdim to the number of mel bins"
            )
        if n_cols > self.n_cols:
            raise ValueError(
                f"input has {x.shape[-1]} frames ({n_cols} patch columns), more than the {self.n_cols} "
                "columns the time encodings cover: raise models.net.input_tdim or shorten the clips"
            )
        patches = patches + self.freq_pos_embed + self._time_encodings(n_cols)

        kept_rows = torch.arange(n_rows)
        kept_cols = torch.arange(n_cols)
        if self.training and self.s_patchout_t:
            kept_cols = _random_subset(n_cols, n_cols - self.s_patchout_t, "time columns (s_patchout_t)")
        if self.training and self.s_patchout_f:
            kept_rows = _random_subset(n_rows, n_rows - self.s_patchout_f, "frequency rows (s_patchout_f)")
        device = patches.device
        patches = patches[:, :, kept_rows.to(device)][:, :, :, kept_cols.to(device)]
        tokens = patches.flatten(2).transpose(1, 2)
        token_rows = kept_rows.repeat_interleave(len(kept_cols))
        if self.training and self.u_patchout:
            kept = _random_subset(tokens.shape[1], tokens.shape[1] - self.u_patchout, "tokens (u_patchout)")
            tokens = tokens[:, kept.to(device)]
            token_rows = token_rows[kept]

        # each global token expanded over the batch on its own: its gradient is then a fresh tensor laid out
        # as the parameter, as DDP's gradient buckets expect (a slice of a concatenation is a strided view)
        batch = tokens.shape[0]
        cls_token = (self.cls_token + self.global_pos_embed[:, :1]).expand(batch, -1, -1)
        dist_token = (self.dist_token + self.global_pos_embed[:, 1:]).expand(batch, -1, -1)
        tokens = torch.cat([cls_token, dist_token, tokens], dim=1)
        layout = TokenLayout.from_kept(token_rows, self.n_rows, N_GLOBAL_TOKENS)
        return self.pos_drop(tokens), layout

    def _time_encodings(self, n_cols: int) -> Tensor:
        """Time encodings cut to the input's columns, at a random offset while training."""
        spare = self.n_cols - n_cols
        offset = int(torch.randint(spare + 1, (1,))) if self.training and spare > 0 else 0
        return self.time_pos_embed[..., offset : offset + n_cols]

    def _init_weights(self) -> None:
        for parameter in (self.cls_token, self.dist_token, self.global_pos_embed):
            trunc_normal_(parameter, std=0.02)
        trunc_normal_(self.freq_pos_embed, std=0.02)
        trunc_normal_(self.time_pos_embed, std=0.02)
        self.apply(_init_vit_weights)


def patch_grid(input_fdim: int, input_tdim: int, fstride: int, tstride: int) -> tuple[int, int]:
    """(frequency rows, time columns) of the 16 x 16 patches of a spectrogram of input_fdim mel bins and
    input_tdim frames at these strides (12 x 99 for PaSST-S on 10 s)."""
    return (input_fdim - PATCH_SIZE) // fstride + 1, (input_tdim - PATCH_SIZE) // tstride + 1


class PatchEmbed(nn.Module):
    """Overlapping 16x16 patches of the spectrogram, projected to the embedding width."""

    def __init__(self, in_channels: int, embed_dim: int, fstride: int, tstride: int):
        super().__init__()
        if fstride < 1 or tstride < 1:
            raise ConfigurationError(f"patch strides must be >= 1, got fstride={fstride}, tstride={tstride}")
        self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=PATCH_SIZE, stride=(fstride, tstride))

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


class Block(nn.Module):
    """Pre-norm transformer block; with a branched pattern each frequency half has its own attention.

    Branched (``high_low_branch``): the lower and upper halves of the frequency rows each run their own
    pre-attention norm and attention over [global tokens + the half's patch tokens], unrestricted within
    the half. Patch tokens take their half's output; the cls/dist tokens, which see both halves, take
    the mean of the two branches' outputs. The branches have their own projection weights, so they run as
    two attention calls: stacking both halves into one batched call needs a copy of their queries, keys
    and values, which on a CPU cost more than the second call saves (measured: two calls 0.61 of
    unrestricted attention, one call on pre-stacked halves 0.61-0.63, one call with the copies 0.72).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        pattern: AttentionPattern,
        attention_impl: str,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ):
        super().__init__()
        self.pattern = pattern
        branch_pattern = parse_rf_norm_t("") if pattern.branched else pattern
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = FrequencyAttention(dim, num_heads, branch_pattern, attention_impl, True, attn_drop, drop)
        if pattern.branched:
            self.norm1_upper = nn.LayerNorm(dim, eps=1e-6)
            self.attn_upper = FrequencyAttention(dim, num_heads, branch_pattern, attention_impl, True, attn_drop, drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(in_features=dim, hidden_features=int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)

    def forward(self, x: Tensor, layout: TokenLayout) -> Tensor:
        attended = self._branched_attention(x, layout) if self.pattern.branched else self.attn(self.norm1(x), layout)
        x = x + self.drop_path(attended)
        return x + self.drop_path(self.mlp(self.norm2(x)))

    def _branched_attention(self, x: Tensor, layout: TokenLayout) -> Tensor:
        n_global, half = layout.n_global, layout.n_rows // 2
        branches = (
            (self.norm1, self.attn, layout.only_rows(0, half), slice(*layout.token_span(0, half))),
            (self.norm1_upper, self.attn_upper, layout.only_rows(half, layout.n_rows),
             slice(*layout.token_span(half, layout.n_rows))),
        )
        global_outputs, patch_outputs = [], []
        for norm, attention, branch_layout, patch_span in branches:
            branch_tokens = torch.cat([x[:, :n_global], x[:, patch_span]], dim=1)
            out = attention(norm(branch_tokens), branch_layout)
            global_outputs.append(out[:, :n_global])
            patch_outputs.append(out[:, n_global:])
        return torch.cat([(global_outputs[0] + global_outputs[1]) / 2, *patch_outputs], dim=1)


def _check_patchout(u_patchout: int, s_patchout_t: int, s_patchout_f: int, n_rows: int, n_cols: int) -> None:
    if min(u_patchout, s_patchout_t, s_patchout_f) < 0:
        raise ConfigurationError("patchout amounts (models.net.u_patchout, s_patchout_t, s_patchout_f) must be >= 0")
    if s_patchout_f >= n_rows:
        raise ConfigurationError(f"models.net.s_patchout_f={s_patchout_f} would drop all {n_rows} frequency rows of "
                                 "the patch grid; drop fewer")
    if s_patchout_t >= n_cols:
        raise ConfigurationError(f"models.net.s_patchout_t={s_patchout_t} would drop all {n_cols} time columns of "
                                 "the patch grid; drop fewer")
    kept = (n_rows - s_patchout_f) * (n_cols - s_patchout_t)
    if u_patchout >= kept:
        raise ConfigurationError(f"models.net.u_patchout={u_patchout} would drop all {kept} patch tokens left after "
                                 "structured patchout; drop fewer")


def _random_subset(n: int, keep: int, what: str) -> Tensor:
    """Sorted random indices of ``keep`` of ``n`` items (on the CPU)."""
    if keep < 1:
        raise ValueError(
            f"patchout would drop all {n} {what} of this input; reduce the patchout or use longer inputs"
        )
    return torch.randperm(n)[:keep].sort().values


def _init_vit_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
