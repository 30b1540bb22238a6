"""What the sections of the GPU check share: the problem sizes, the report, and the check's state (device,
budget of the running section, targets met or missed, results one section leaves for the next)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from benchmarks.model import frames
from models.architectures import architecture
from models.attention import masked_attention
from models.flex_attention import flex_attention_executor
from models.passt import PATCH_SIZE
from models.sparse_attention import sparse_attention

REPO = Path(__file__).resolve().parents[2]
MEL_BINS = 128
EXECUTORS = {"sparse": sparse_attention, "flex": flex_attention_executor, "masked": masked_attention}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Sizes:
    """Problem sizes of one check: the GPU's, or the smoke run's tiny ones.

    arch: PaSST architecture of the attention-core and whole-model sections.
    clips: label -> mel frames of the clip lengths timed.
    exact_grid: (frequency rows, time columns) of the exactness layouts.
    exact_shape: (batch, heads, head_dim) of the exactness inputs.
    core_shape: (heads, head_dim) of the attention-core timing.
    repeats: timed rounds per measurement (fewer when the budget runs short).
    core_forms, model_forms: forms timed, in order of value.
    demo_options: Sacred updates of each demo training.
    """

    arch: str
    clips: dict[str, int]
    exact_grid: tuple[int, int]
    exact_shape: tuple[int, int, int]
    core_shape: tuple[int, int]
    repeats: int
    core_forms: tuple[str, ...]
    model_forms: tuple[str, ...]
    demo_options: tuple[str, ...]


GPU_SIZES = Sizes(
    arch="passt_s_swa_p16_128_ap476",
    clips={"60 s": frames(60), "10 s": frames(10)},  # 6000 and 1000 log-mel frames at 32 kHz, hop 320
    exact_grid=(12, 99),
    exact_shape=(2, 12, 64),
    core_shape=(12, 64),
    repeats=5,
    core_forms=(
        "per_row_1",
        "row_overlap_2",
        "per_row_3",
        "high_low",
        "row_overlap_4",
        "per_row_5",
        "sparse_row_6",
        "row_overlap_1",
        "row_overlap_8",
    ),
    model_forms=("per_row_1", "row_overlap_2", "per_row_3", "high_low", "row_overlap_4"),
    demo_options=("trainer.max_epochs=2",),
)
SMOKE_SIZES = Sizes(
    arch="passt_mini",
    clips={"60 s": 60, "10 s": 40},  # stand-ins: 5 and 3 time columns
    exact_grid=(12, 4),
    exact_shape=(1, 2, 8),
    core_shape=(2, 8),
    repeats=1,
    core_forms=("per_row_3", "row_overlap_2"),
    model_forms=("per_row_3",),
    demo_options=("trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.limit_val_batches=1"),
)


class Report:
    """The one report: each line printed as it comes and the file rewritten, so partial results survive."""

    def __init__(self, path: Path):
        self.path = path
        self.lines: list[str] = []

    def line(self, text: str = "") -> None:
        self.lines.append(text)
        print(text, flush=True)
        self.path.write_text("\n".join(self.lines) + "\n")

    def table(self, *columns: str) -> Callable[..., None]:
        """Prints a markdown table header; returns the function that prints a row."""
        self.line("| " + " | ".join(columns) + " |")
        self.line("|" + "---|" * len(columns))
        return lambda *cells: self.line("| " + " | ".join(str(cell) for cell in cells) + " |")


@dataclass
class Check:
    """What the sections share: sizes, device, report, budget, and results gathered on the way.

    section_end: when the running section's share of the budget ends (time.monotonic()).
    targets: (target, figure, met) of every judged figure, for the summary.
    fastest: (form, dtype, clip) -> cells of the fastest restricted executor (attention-core section).
    fill: clip -> the batch that fills the GPU (found once, by the first timing section that runs).
    models: clip -> the unrestricted whole model and its optimizer, shared by the timing sections.
    """

    sizes: Sizes
    device: torch.device
    report: Report
    budget_s: float
    start: float = field(default_factory=time.monotonic)
    section_end: float = 0.0
    targets: list[tuple[str, str, bool]] = field(default_factory=list)
    fastest: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    fill: dict[str, int] = field(default_factory=dict)
    models: dict[str, tuple[torch.nn.Module, torch.optim.Optimizer]] = field(default_factory=dict)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def time_left(self) -> float:
        return self.section_end - time.monotonic()

    def verdict(self, target: str, figure: str, met: bool) -> str:
        """'met'/'missed' (recorded for the summary), or 'skipped: no CUDA' off the GPU."""
        if not self.cuda:
            return "skipped: no CUDA"
        self.targets.append((target, figure, met))
        return "met" if met else "missed"


def patch_rows(arch: str) -> int:
    """Frequency rows of the patch grid of ``arch`` over MEL_BINS mel bins, as PaSST lays out its patches."""
    return (MEL_BINS - PATCH_SIZE) // architecture(arch).fstride + 1


def patch_columns(arch: str, n_frames: int) -> int:
    """Time columns of the patch grid of ``arch`` over ``n_frames`` frames."""
    return (n_frames - PATCH_SIZE) // architecture(arch).tstride + 1


def first_line(error: BaseException) -> str:
    return (str(error).splitlines() or [""])[0][:160]


def not_implemented(error: NotImplementedError) -> str:
    """What is not implemented, without the advice that follows it."""
    return first_line(error).split(":")[0]
