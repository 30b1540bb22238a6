"""benchmarks/gpu_check.py on the CPU: the smoke run goes through every section without an error, the
budget bounds the sections; the layouts, pair counts and accuracy files its sections rest on."""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from benchmarks import gpu_check
from benchmarks.gpu.attention_core import allowed_fraction
from benchmarks.gpu.check import GPU_SIZES, SMOKE_SIZES
from benchmarks.gpu.demo import selected_test_accuracy
from benchmarks.gpu.exactness import patchout_layouts
from models.patterns import TokenLayout, parse_rf_norm_t

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


@pytest.mark.slow
def test_smoke_run_reports_every_section_without_errors(tmp_path):
    out = tmp_path / "report.md"
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--smoke", "--out", str(out)],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    report = out.read_text()
    assert report.strip() == completed.stdout.strip()  # one report, printed and written
    for title, _ in gpu_check.SECTIONS.values():
        assert f"## {title}" in report
    assert "error:" not in report and "skipped: budget" not in report
    assert "skipped: no CUDA" in report
    counts = re.search(r"(\d+) CUDA tests, \d+ s: 0 passed, 0 failed, (\d+) skipped", report)
    assert counts and int(counts.group(1)) == int(counts.group(2)) > 0  # found, and all skip on the CPU
    # the demo training's accuracy, and which figure it is
    assert re.search(r"\| float32 \| \d+\.\d % \| test/acc \(test split, epoch selected on validation\) \|", report)
    for form in SMOKE_SIZES.core_forms:
        assert re.search(rf"\| {form} \| 60 s \| training \| float32 \| 1 \| \d", report)
    assert time.monotonic() - started < 120


def test_spent_budget_skips_every_section_but_writes_the_report(tmp_path, capsys):
    out = tmp_path / "report.md"
    gpu_check.main(["--smoke", "--budget-s", "0", "--out", str(out)])
    report = out.read_text()
    assert report.count("skipped: budget") == len(gpu_check.SECTIONS)
    assert "## Targets" in report and "finished in" in report


def test_short_budget_stops_the_sections_on_time(tmp_path):
    out = tmp_path / "report.md"
    started = time.monotonic()
    gpu_check.main(["--smoke", "--budget-s", "2", "--sections", "exactness", "core", "--out", str(out)])
    assert time.monotonic() - started < 15
    assert "skipped: budget" in out.read_text()


def test_patchout_layouts_are_what_their_names_say():
    n_rows, n_cols = 12, 10
    layouts = patchout_layouts(n_rows, n_cols)
    counts = {name: torch.bincount(layout.token_rows[2:], minlength=n_rows) for name, layout in layouts.items()}
    assert counts["full grid"].tolist() == [n_cols] * n_rows
    assert counts["time patchout"].tolist() == [6] * n_rows
    assert (counts["frequency patchout"] == 0).sum() == 3 and set(counts["frequency patchout"].tolist()) == {0, n_cols}
    assert counts["token patchout"].sum() == 90 and len(set(counts["token patchout"].tolist())) > 1
    assert counts["empty row"][n_rows // 2] == 0
    assert all(layout.n_global == 2 for layout in layouts.values())


@pytest.mark.parametrize("form", ["per_row_1", "per_row_5", "high_low", "row_overlap_2", "row_overlap_16"])
def test_allowed_fraction_counts_the_allowed_token_pairs(form):
    """Counted pair by pair from the rule: same cluster / row distance, globals with everything."""
    layout = patchout_layouts(7, 3)["token patchout"]
    rows = layout.token_rows.tolist()

    def allowed(q: int, k: int) -> bool:
        if q < 0 or k < 0:
            return True
        if form == "high_low":
            return (q < 3) == (k < 3)
        name, size = form.rsplit("_", 1)
        return abs(q - k) < int(size) if name == "row_overlap" else q // int(size) == k // int(size)

    expected = sum(allowed(q, k) for q in rows for k in rows) / len(rows) ** 2
    assert allowed_fraction(parse_rf_norm_t(form), layout) == pytest.approx(expected)
    assert allowed_fraction(parse_rf_norm_t(""), TokenLayout.full_grid(3, 2)) == 1.0


def test_gpu_clips_are_the_log_mel_frames_of_10_and_60_s():
    """At 32 kHz with a hop of 320 samples a clip has 100 log-mel frames per second."""
    assert GPU_SIZES.clips == {"60 s": 6000, "10 s": 1000}


def test_the_demo_accuracy_is_the_test_split_at_the_selected_epoch(tmp_path):
    results = {"test": {"net": {"selected": {"acc": 0.7}, "last": {"acc": 0.9}}},
               "validation": {"net": {"selected": {"acc": 0.8}, "last": {"acc": 0.6}}}}
    (tmp_path / "results.json").write_text(json.dumps(results))
    assert selected_test_accuracy(tmp_path / "results.json") == 0.7
