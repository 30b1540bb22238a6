"""Executor grid: every exact way to run each restricted form, timed side by side, at the sizes users run.

For each cell (rf_norm_t form x architecture x clip length x batch x mode), times in one process,
interleaved (A B C A B C ...) after a warm-up, the attention call of one transformer block with the
cell's heads and token grid (12 frequency rows; clip length -> time columns as the model sizes them):

    unrestricted  scaled_dot_product_attention without a mask (the reference for ratios; not exact for
                  a restricted form)
    auto          attention_impl="auto": the candidate with the lowest modelled time (models.sparse_choice)
    masked        the dense call with the pattern's token mask (attention_impl="masked")
    <kernel>/g<r> each block kernel of the sparse executor with r band rows per block
    flex          FlexAttention in inference, on CUDA (compiled); on a CPU only with --flex: without
                  torch.compile it runs unfused, tens of times slower than the others

The attention call is the only part of a model the executor choice changes; its share of a training step
is what benchmarks/model.py and ``python ex_dcase20.py model_speed_test`` show. ``high_low_branch`` runs
unrestricted attention within each frequency half (two calls), which no executor choice changes; its cells
time that against unrestricted attention over all tokens.

It writes every median to a CSV and prints, per cell, auto's choice, its time relative to the fastest
exact candidate and to unrestricted attention; then a summary. ``--fit FILE`` fits the cost model's
constants (seconds per call, per matrix, per pair, per token moved; per kernel and mode) to the measured times and
writes them for ``executor_costs=FILE`` / ``models.sparse_choice.use_costs``; ``--from-csv`` re-fits or
re-scores a grid already measured, without timing again.

    python -m benchmarks.grid --quick                      # the quick subset, under 10 minutes on 2 cores
    python -m benchmarks.grid --quick --fit my_costs.json  # ... and the constants of this machine
    python -m benchmarks.grid --from-csv grid.csv --fit my_costs.json   # re-fit without timing again
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import itertools
import json
import math
import platform
import sys
import time
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.attention import (
    attention_inputs,
    candidate_executions,
    executor_run,
    fixed_execution,
    median_times,
    unrestricted_attention,
)
from models.architectures import architecture
from models.attention import auto_attention, masked_attention
from models.flex_attention import flex_attention_executor
from models.patterns import TokenLayout, parse_rf_norm_t
from models.preprocess import clip_frames
from models.sparse_choice import (
    BLOCK_CANDIDATES,
    DENSE,
    MODES,
    Execution,
    ExecutorCosts,
    KernelCost,
    Measured,
    active_costs,
    candidate_name,
    candidate_work,
    choose_for_shape,
    use_costs,
)

FORMS = ("per_row_1", "per_row_3", "per_row_6", "row_overlap_2", "row_overlap_4", "row_overlap_8", "high_low",
         "high_low_branch")
ARCHS = {"passt_mini": "passt_mini", "passt_tiny": "passt_tiny", "passt_s": "passt_s_swa_p16_128_ap476"}
SECONDS = (1, 2, 4, 10, 30)
BATCHES = (1, 8, 32)
QUICK_FORMS = ("per_row_1", "per_row_6", "row_overlap_2", "row_overlap_8", "high_low")
QUICK_SIZES = (  # (architecture, clip seconds, batch): the demo's size and around it, PaSST-S up to 10 s
    ("passt_mini", 1, 1), ("passt_mini", 2, 8), ("passt_mini", 2, 32), ("passt_tiny", 2, 8), ("passt_tiny", 4, 32),
    ("passt_s", 1, 8), ("passt_s", 4, 1), ("passt_s", 10, 1),
)
FREQUENCY_ROWS = 12  # 128 mel bins, 16-bin patches at stride 10
N_GLOBAL = 2
MAX_SCORES = 1.5e9  # cells whose unrestricted scores (batch x heads x tokens^2) exceed this are left out by default:
# they do not fit the memory or the time of a 2-core CPU run (PaSST-S at 30 s and batch 32 would be 4.9e9)
RATIO_TOLERANCE = 1.10  # auto's target: within this of the fastest exact candidate


@dataclass(frozen=True)
class Cell:
    form: str
    arch: str
    seconds: float
    batch: int
    mode: str

    @property
    def training(self) -> bool:
        return self.mode == "training"

    def shape(self) -> tuple[int, int, TokenLayout]:
        """Heads, head dimension and token layout of this cell."""
        spec = architecture(ARCHS[self.arch])
        columns = (clip_frames(self.seconds, 32000, 320) - 16) // spec.tstride + 1
        layout = TokenLayout.full_grid(FREQUENCY_ROWS, columns, N_GLOBAL)
        return spec.num_heads, spec.embed_dim // spec.num_heads, layout


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick subset (under 10 minutes on 2 cores)")
    parser.add_argument("--forms", nargs="+", choices=FORMS)
    parser.add_argument("--archs", nargs="+", choices=list(ARCHS))
    parser.add_argument("--seconds", nargs="+", type=float)
    parser.add_argument("--batches", nargs="+", type=int)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--repeats", type=int, help="timed rounds per cell (default 5)")
    parser.add_argument("--max-scores", type=float, default=MAX_SCORES,
                        help="leave out cells whose batch x heads x tokens^2 exceeds this")
    parser.add_argument("--statistic", choices=["median", "min"], default="median",
                        help="of the timed rounds; min discounts other load on a shared machine (for --fit)")
    parser.add_argument("--flex", action="store_true",
                        help="time FlexAttention on a CPU too (unfused there, and slow; always timed on CUDA)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch.set_num_threads)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--csv", type=Path, default=Path("grid.csv"), help="where the medians are written")
    parser.add_argument("--costs", type=Path, help="score auto with the constants of this file (default: shipped)")
    parser.add_argument("--fit", type=Path, help="fit the cost model to the measurements and write it here")
    parser.add_argument("--from-csv", type=Path, nargs="+", help="use the medians of earlier runs instead of timing")
    args = parser.parse_args(argv)
    if args.costs:
        use_costs(args.costs)
    if args.from_csv:
        rows = [row for path in args.from_csv for row in read_rows(path)]
    else:
        torch.set_num_threads(args.threads)
        torch.manual_seed(0)
        if args.quick:
            cells = [Cell(form, arch, seconds, batch, mode) for arch, seconds, batch in QUICK_SIZES
                     for mode in args.modes for form in args.forms or QUICK_FORMS]
        else:
            cells = grid_cells(args.forms or FORMS, args.archs or tuple(ARCHS), args.seconds or SECONDS,
                               args.batches or BATCHES, args.modes, args.max_scores)
        rows = measure_grid(cells, args.repeats or 5, torch.device(args.device), args.csv,
                            args.statistic, args.flex or args.device == "cuda")
    device_type = rows[0]["device"] if rows else args.device
    if not args.from_csv:
        _measurement_note(args.csv).write_text(_source(device_type) + "\n")
    if args.fit:
        notes = [_measurement_note(path) for path in args.from_csv or [args.csv]]
        source = " + ".join(note.read_text().strip() if note.is_file() else f"{note.with_suffix('.csv')} (measured "
                            "how: unknown)" for note in notes)
        if args.from_csv:
            source += f"; fitted by {_command()}"
        costs = fit_costs(rows, device_type, source=source)
        args.fit.write_text(json.dumps(costs.to_json(), indent=1) + "\n")
        print(f"\nfitted constants written to {args.fit}; use them with executor_costs={args.fit}")
        use_costs(costs)
    print_summary(rows, device_type, rechoose=bool(args.from_csv or args.fit))


def grid_cells(forms: Iterable[str], archs: Iterable[str], seconds: Iterable[float], batches: Iterable[int],
               modes: Iterable[str], max_scores: float = MAX_SCORES) -> list[Cell]:
    """The cells of the grid whose unrestricted scores do not exceed ``max_scores``, smallest first (a run cut
    short has measured every form at the sizes it reached)."""
    cells = [Cell(*values) for values in itertools.product(forms, archs, seconds, batches, modes)]
    scores = {cell: cell.batch * cell.shape()[0] * cell.shape()[2].n_tokens ** 2 for cell in cells}
    return sorted((cell for cell in cells if scores[cell] <= max_scores), key=lambda cell: (scores[cell], cell.mode))


def measure_grid(cells: list[Cell], repeats: int, device: torch.device, csv_path: Path,
                 statistic: str = "median", flex: bool = False) -> list[dict]:
    """Times every cell, printing a line per cell and writing every candidate's median to ``csv_path``."""
    print(f"executor grid: {len(cells)} cells, {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"{'form':<15} {'arch':<10} {'s':>4} {'batch':>5} {'mode':<9} {'tokens':>6} {'unrestr ms':>10} "
          f"{'auto':<18} {'auto/best':>9} {'auto/unr':>8} {'best':<18} {'masked/unr':>10} {'timed/unr':>10}")
    rows: list[dict] = []
    with csv_path.open("w", newline="") as stream:
        writer = None
        for cell in cells:
            cell_rows = measure_cell(cell, repeats, device, statistic, flex)
            if writer is None:
                writer = csv.DictWriter(stream, fieldnames=list(cell_rows[0]))
                writer.writeheader()
            writer.writerows(cell_rows)
            stream.flush()
            rows.extend(cell_rows)
            print(_cell_line(cell_rows), flush=True)
    return rows


def measure_cell(cell: Cell, repeats: int, device: torch.device, statistic: str = "median",
                 flex: bool = False) -> list[dict]:
    """One row per candidate: median seconds, ratio to unrestricted attention timed in the same rounds.

    The dense masked call and FlexAttention run in their own interleaved group with unrestricted attention:
    their tokens x tokens buffers would slow whatever runs after them, which no model running one executor
    sees."""
    heads, head_dim, layout = cell.shape()
    pattern = parse_rf_norm_t(cell.form)
    dtype = torch.float32
    groups = [{"unrestricted": unrestricted_attention}, {"unrestricted": unrestricted_attention}]
    if pattern.branched:
        groups[0]["auto"] = _halves
    else:
        groups[0]["auto"] = auto_attention
        for execution in candidate_executions(pattern, device):
            groups[0][candidate_name(execution)] = fixed_execution(execution)
        groups[1][DENSE] = masked_attention
        if flex and not cell.training:
            groups[1]["flex"] = flex_attention_executor
    leaves, grad = attention_inputs(cell.batch, layout.n_tokens, heads, head_dim, cell.training, device, dtype)
    chosen = _chosen_name(pattern, layout, cell.batch, heads, head_dim, device.type, cell.training)
    rows = []
    for group in groups:
        runs = {name: executor_run(ex, pattern, layout, leaves, grad, cell.training) for name, ex in group.items()}
        if len(runs) == 1:
            continue
        with _quiet_flex():
            calls = _calls_per_sample(runs["unrestricted"])
            times = median_times(_repeated(runs, calls), repeats, statistic=statistic)
        for name, seconds in times.items():
            if name == "unrestricted" and rows:
                continue
            rows.append({  # seconds per call
                "form": cell.form, "arch": cell.arch, "seconds": cell.seconds, "batch": cell.batch,
                "mode": cell.mode, "device": device.type, "tokens": layout.n_tokens, "heads": heads,
                "head_dim": head_dim, "candidate": name, "median_s": seconds / calls,
                "ratio": seconds / times["unrestricted"], "auto_choice": chosen,
            })
    return rows


def _calls_per_sample(run: Callable[[], None], sample_seconds: float = 0.02) -> int:
    """Calls per timed sample so that a sample of unrestricted attention lasts about ``sample_seconds``: a
    single call of a small cell (0.1 ms) is below the timer's and the scheduler's noise."""
    run()
    start = time.perf_counter()
    run()
    return max(1, math.ceil(sample_seconds / max(time.perf_counter() - start, 1e-6)))


def _repeated(runs: dict[str, Callable[[], None]], calls: int) -> dict[str, Callable[[], None]]:
    def repeat(run: Callable[[], None]) -> Callable[[], None]:
        def repeated() -> None:
            for _ in range(calls):
                run()

        return repeated

    return {name: repeat(run) for name, run in runs.items()}


def fit_costs(rows: list[dict], device_type: str, source: str) -> ExecutorCosts:
    """Constants per mode and candidate kernel fitted to the measured medians (non-negative least squares on
    relative errors: a cell of 1 ms weighs as much as one of 1 s), and each cell's corrections: how far each
    candidate's time was from the fitted model there."""
    # each candidate's time as its ratio to unrestricted attention timed in its own rounds, times unrestricted
    # attention's time in the first group: the groups' times are comparable then
    unrestricted = {_key(row): float(row["median_s"]) for row in rows if row["candidate"] == "unrestricted"}
    seconds = [float(row["ratio"]) * unrestricted[_key(row)] for row in rows]
    works = {}
    for index, row in enumerate(rows):
        execution = _execution(row["candidate"])
        if execution is not None:
            works[index] = candidate_work(execution, parse_rf_norm_t(row["form"]), _layout(row), int(row["batch"]),
                                          int(row["heads"]), int(row["head_dim"]))
    costs: dict[str, dict[str, KernelCost]] = {}
    for mode in MODES:
        costs[mode] = {}
        for kernel in (*BLOCK_CANDIDATES, DENSE):
            samples = [((w.calls, w.matrices, w.pairs, w.tokens), seconds[index])
                       for index, w in works.items()
                       if rows[index]["mode"] == mode and _execution(rows[index]["candidate"]).kernel == kernel]
            if samples:
                costs[mode][kernel] = KernelCost(*_relative_nnls(samples))
    measured = []
    cells: dict[tuple, list[int]] = {}
    for index, row in enumerate(rows):
        cells.setdefault(_key(row), []).append(index)
    for key, cell_rows in cells.items():
        form, _, _, batch, mode = key
        first = rows[cell_rows[0]]
        log_ratios = {}
        for index in cell_rows:
            if index in works:
                modelled = costs[mode][_execution(rows[index]["candidate"]).kernel].seconds(works[index])
                log_ratios[rows[index]["candidate"]] = math.log(seconds[index] / modelled)
        if log_ratios:
            measured.append(Measured(form, mode, int(first["tokens"]), batch * int(first["heads"]),
                                     int(first["head_dim"]), log_ratios))
    return ExecutorCosts(device_type, costs, source, tuple(measured))


def print_summary(rows: list[dict], device_type: str, rechoose: bool) -> None:
    """Per form, how often auto is within RATIO_TOLERANCE of the fastest exact candidate, its worst ratio, and
    the cells where a restricted form runs slower than 1.05x unrestricted attention while the dense masked
    call does not. Auto's time is the measured time of the candidate it chooses; ``rechoose``: the choice is
    made again with the active constants (after a fit, or on an earlier run's medians)."""
    cells = _by_cell(rows)
    costs = active_costs(device_type)
    print(f"\nauto scored with: {costs.source if costs else 'fixed rules (no constants for ' + device_type + ')'}"
          + (" (choices made again from the medians)" if rechoose else ""))
    within, worst, slow, total = {}, {}, [], {}
    for key, cell_rows in cells.items():
        auto_ratio, _, unrestricted_ratio, _, _ = _scores(key, cell_rows, rechoose)
        form = key[0]
        total[form] = total.get(form, 0) + 1
        within[form] = within.get(form, 0) + (auto_ratio <= RATIO_TOLERANCE)
        worst[form] = max(worst.get(form, 0.0), auto_ratio)
        masked = next((float(r["ratio"]) for r in cell_rows if r["candidate"] == DENSE), math.inf)
        if unrestricted_ratio > 1.05 and masked <= 1.05:
            slow.append((key, unrestricted_ratio, masked))
    print(f"{'form':<15} {'cells':>5} {'auto within 1.10x of best':>26} {'worst auto/best':>15}")
    for form in total:
        print(f"{form:<15} {total[form]:>5} {within[form]:>20} ({within[form] / total[form]:>4.0%}) "
              f"{worst[form]:>15.2f}")
    n_cells, n_within = sum(total.values()), sum(within.values())
    print(f"{'all':<15} {n_cells:>5} {n_within:>20} ({n_within / max(n_cells, 1):>4.0%}) "
          f"{max(worst.values(), default=0):>15.2f}")
    print(f"cells where auto is above 1.05x unrestricted while masked is not: {len(slow)}")
    for key, ratio, masked in slow:
        print(f"  {' '.join(map(str, key))}: auto {ratio:.2f}, masked {masked:.2f}")


def read_rows(path: Path) -> list[dict]:
    with path.open() as stream:
        return list(csv.DictReader(stream))


def _halves(q, k, v, pattern, layout, dropout_p=0.0):
    """high_low_branch's attention: unrestricted within each frequency half, the global tokens in both."""
    half = layout.n_rows // 2
    outputs = []
    for first, end in ((0, half), (half, layout.n_rows)):
        start, stop = layout.token_span(first, end)
        index = torch.cat([torch.arange(layout.n_global), torch.arange(start, stop)]).to(q.device)
        outputs.append(F.scaled_dot_product_attention(q[:, :, index], k[:, :, index], v[:, :, index]))
    return torch.cat([outputs[0], outputs[1][:, :, layout.n_global:]], dim=2)


def _chosen_name(pattern, layout, batch: int, heads: int, head_dim: int, device_type: str, training: bool) -> str:
    if pattern.branched:
        return "auto"
    return candidate_name(choose_for_shape(pattern, layout, batch, heads, head_dim, device_type, training))


def _execution(candidate: str) -> Execution | None:
    if candidate == DENSE:
        return Execution(DENSE)
    if "/g" not in candidate:
        return None
    kernel, rows = candidate.split("/g")
    return Execution(kernel, int(rows))


def _layout(row: dict) -> TokenLayout:
    return TokenLayout.full_grid(FREQUENCY_ROWS, (int(row["tokens"]) - N_GLOBAL) // FREQUENCY_ROWS, N_GLOBAL)


def _by_cell(rows: list[dict]) -> dict[tuple, list[dict]]:
    cells: dict[tuple, list[dict]] = {}
    for row in rows:
        cells.setdefault(_key(row), []).append(row)
    return cells


def _key(row: dict) -> tuple:
    """The cell of a CSV row: (form, arch, seconds, batch, mode)."""
    return row["form"], row["arch"], float(row["seconds"]), int(row["batch"]), row["mode"]


def _scores(key: tuple, cell_rows: list[dict], rechoose: bool) -> tuple[float, float, float, str, float]:
    """(auto / fastest exact, fastest exact / unrestricted, auto / unrestricted, auto's choice, auto as timed /
    unrestricted): auto's time is its choice's measured time (the choice made again if ``rechoose``); "auto as
    timed" runs the same kernel once more with the dispatch, within the noise of the first."""
    ratios = {r["candidate"]: float(r["ratio"]) for r in cell_rows if r["candidate"] != "unrestricted"}
    timed = ratios.pop("auto")
    choice = cell_rows[0]["auto_choice"]
    if rechoose and choice in ratios:
        form, _, _, batch, mode = key
        row = cell_rows[0]
        choice = _chosen_name(parse_rf_norm_t(form), _layout(row), batch, int(row["heads"]), int(row["head_dim"]),
                              row["device"], mode == "training")
    auto = ratios.get(choice, timed)
    best = min(ratios.values(), default=auto)
    return auto / best, best, auto, choice, timed


def _relative_nnls(samples: list[tuple[tuple[float, ...], float]]) -> tuple[float, ...]:
    """Non-negative least squares of seconds ~ features . constants, each row divided by its seconds.

    With four constants every subset of them can be tried: the best fit among the subsets whose
    unconstrained solution is non-negative is the constrained optimum (numpy has no NNLS; scipy's is not a
    dependency of frito)."""
    features = torch.tensor([f for f, _ in samples], dtype=torch.float64)
    seconds = torch.tensor([s for _, s in samples], dtype=torch.float64)
    weighted, target = features / seconds[:, None], torch.ones_like(seconds)
    best, best_error = None, math.inf
    n = features.shape[1]
    for size in range(1, n + 1):
        for subset in itertools.combinations(range(n), size):
            columns = weighted[:, list(subset)]
            solution = torch.linalg.lstsq(columns, target[:, None]).solution.flatten()
            if (solution < 0).any():
                continue
            error = float(((columns @ solution) - target).square().sum())
            if error < best_error:
                best_error, best = error, torch.zeros(n, dtype=torch.float64).index_copy(0, torch.tensor(subset),
                                                                                        solution)
    return tuple(float(value) for value in best)


def _cell_line(cell_rows: list[dict]) -> str:
    row = cell_rows[0]
    auto_best, _, auto_unrestricted, choice, timed = _scores(_key(row), cell_rows, rechoose=False)
    ratios = {r["candidate"]: float(r["ratio"]) for r in cell_rows if r["candidate"] not in ("unrestricted", "auto")}
    best_name = min(ratios, key=ratios.get, default="auto")
    unrestricted_ms = next(float(r["median_s"]) for r in cell_rows if r["candidate"] == "unrestricted") * 1e3
    masked = ratios.get(DENSE, math.nan)
    return (f"{row['form']:<15} {row['arch']:<10} {float(row['seconds']):>4g} {int(row['batch']):>5} "
            f"{row['mode']:<9} {int(row['tokens']):>6} {unrestricted_ms:>10.2f} {choice:<18} {auto_best:>9.2f} "
            f"{auto_unrestricted:>8.2f} {best_name:<18} {masked:>10.2f} {timed:>10.2f}")


def _source(device_type: str) -> str:
    """The machine, threads, torch version, date and command of this run."""
    machine = platform.processor() or platform.machine()
    try:
        machine = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if device_type == "cuda":
        machine = torch.cuda.get_device_name()
    return (f"{machine}, {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"{datetime.date.today().isoformat()}: {_command()}")


def _command() -> str:
    return "python -m benchmarks.grid " + " ".join(sys.argv[1:])


def _measurement_note(csv_path: Path) -> Path:
    """Beside a grid's CSV: how it was measured (machine, date, command), which a later --from-csv fit cites."""
    return csv_path.with_suffix(".source.txt")


@contextlib.contextmanager
def _quiet_flex():
    """FlexAttention without torch.compile warns that it is unfused; the grid says so in its doc."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        yield


if __name__ == "__main__":
    main()
