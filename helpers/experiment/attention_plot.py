"""Figure of an attention pattern: which frequency rows, and which tokens, a query may attend."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from helpers.files import atomic_write
from models.passt import N_GLOBAL_TOKENS
from models.patterns import attention_mask

MASK_COLOURS = ListedColormap(["#f2f2f2", "#1f4e79"])  # masked, allowed


def write_attention_mask_plot(rf_norm_t: str, n_rows: int, n_cols: int, path: Path) -> Path:
    """Write a PNG of ``rf_norm_t`` over an n_rows (frequency) x n_cols (time) patch grid.

    Left: frequency row of the query against frequency row of the key. Right: the full token mask
    (global tokens first, then the grid row-major), frequency rows marked and labelled on both axes.
    """
    rows = attention_mask(rf_norm_t, n_rows, 1, n_global=0).numpy()
    tokens = attention_mask(rf_norm_t, n_rows, n_cols, n_global=N_GLOBAL_TOKENS).numpy()
    figure = Figure(figsize=(13, 6.2))
    name = rf_norm_t or "unrestricted"
    figure.suptitle(f"rf_norm_t={name}: {n_rows} frequency rows x {n_cols} time steps, "
                    f"{tokens.mean():.0%} of token pairs attended")
    _rows_panel(figure.add_subplot(1, 2, 1), rows)
    _tokens_panel(figure.add_subplot(1, 2, 2), tokens, n_rows, n_cols)
    figure.tight_layout()
    FigureCanvasAgg(figure)
    return atomic_write(path, lambda stream: figure.savefig(stream, format="png", dpi=110))


def _rows_panel(axes, rows: np.ndarray) -> None:
    n_rows = rows.shape[0]
    axes.imshow(rows, cmap=MASK_COLOURS, vmin=0, vmax=1)
    labels = [f"f{row}" for row in range(n_rows)]
    axes.set_xticks(range(n_rows), labels, fontsize=8)
    axes.set_yticks(range(n_rows), labels, fontsize=8)
    axes.set_xlabel("key frequency row")
    axes.set_ylabel("query frequency row (f0 = lowest)")
    axes.set_title("frequency rows a patch may attend")


def _tokens_panel(axes, tokens: np.ndarray, n_rows: int, n_cols: int) -> None:
    axes.imshow(tokens, cmap=MASK_COLOURS, vmin=0, vmax=1, interpolation="nearest")
    starts = N_GLOBAL_TOKENS + n_cols * np.arange(n_rows)
    centres = [N_GLOBAL_TOKENS / 2 - 0.5, *(starts + n_cols / 2 - 0.5)]
    labels = ["cls/dist", *(f"f{row}" for row in range(n_rows))]
    for boundary in [N_GLOBAL_TOKENS, *starts[1:]]:
        axes.axhline(boundary - 0.5, color="#c0392b", linewidth=0.4)
        axes.axvline(boundary - 0.5, color="#c0392b", linewidth=0.4)
    axes.set_xticks(centres, labels, fontsize=7, rotation=90)
    axes.set_yticks(centres, labels, fontsize=7)
    axes.set_xlabel("key token (grouped by frequency row)")
    axes.set_ylabel("query token")
    axes.set_title(f"token mask ({tokens.shape[0]} tokens)")
