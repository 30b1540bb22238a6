"""The study report from run folders laid out as trainings leave them (results.json, test_predictions.csv,
Sacred's run.json), with figures derived by hand from the predictions the fake experiment writes: in each
test device the first round(a * n) of its n examples right (devices a 20, b 10, c 10 seen; s4 20, s5 10)."""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
from fake_study_experiment import TEST_DOMAINS, write_outputs

from helpers.study.folder import acquire_run_lock
from helpers.study.spec import StudyError, load_study
from helpers.study.table import ORACLE_LABEL, build_report, markdown, write_report

FAKE = Path(__file__).resolve().parent / "fake_study_experiment.py"


def make_study(tmp_path, variants: str, seeds=(1, 2)):
    path = tmp_path / "forms.toml"
    path.write_text(f'experiment = "{FAKE}"\nseeds = {list(seeds)}\n[variants]\n{variants}')
    return load_study(path, folder=tmp_path / "study", cwd=tmp_path)


def completed_run(study, variant, seed, levels, selection="validation", attempt=1):
    """A run folder whose attempt ``attempt`` completed with levels[device] of each device's examples right."""
    folder = study.run(variant, seed).base / str(attempt)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": "COMPLETED"}))
    write_outputs(folder, levels if isinstance(levels, dict) else dict.fromkeys(TEST_DOMAINS, levels), selection)
    return folder


def table_row(text: str, first_cell: str) -> list[str]:
    """The cells of the Markdown table row starting with ``first_cell`` (in the first table that has one)."""
    for line in text.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("|") and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row {first_cell!r} in\n{text}")


def section(text: str, title: str) -> str:
    return text.split(f"## {title}", 1)[1].split("\n## ", 1)[0]


def test_mean_and_spread_over_seeds_and_the_difference_to_the_baseline(tmp_path):
    study = make_study(tmp_path, "baseline = []\nbetter = []\nweighted = []\n")
    for seed, level in ((1, 0.5), (2, 0.6)):
        completed_run(study, "baseline", seed, level)
        completed_run(study, "better", seed, level + 0.3)
        # seen: (0.5 + 1 + 0.5) / 3, unseen: (0.25 + 0.5) / 2, overall: 35 of 70 examples
        completed_run(study, "weighted", seed, {"a": 0.5, "b": 1.0, "c": 0.5, "s4": 0.25, "s5": 0.5})
    text = markdown(build_report(study, resamples=2000))
    accuracy = section(text, "Test accuracy per variant")
    assert table_row(accuracy, "variant") == ["variant", "seeds", "overall (n=70)", "seen devices (n=40)",
                                              "unseen devices (n=30)"]
    sd = f"{np.std([0.5, 0.6], ddof=1):.3f}"
    assert table_row(accuracy, "baseline") == ["baseline", "2", f"0.550 ± {sd}", f"0.550 ± {sd}", f"0.550 ± {sd}"]
    assert table_row(accuracy, "better") == ["better", "2", f"0.850 ± {sd}", f"0.850 ± {sd}", f"0.850 ± {sd}"]
    assert table_row(accuracy, "weighted") == ["weighted", "2", "0.500 ± 0.000", "0.667 ± 0.000", "0.375 ± 0.000"]
    differences = section(text, "Difference to the baseline (baseline)")
    better = table_row(differences, "better")
    assert better[1] == "2" and all(cell.startswith("+0.300 [+") and cell.endswith("better") for cell in better[2:])
    domains = section(text, "Test accuracy per device")
    assert table_row(domains, "variant") == ["variant", "a* (20)", "b* (10)", "c* (10)", "s4 (20)", "s5 (10)"]
    assert table_row(domains, "weighted")[1:] == ["0.500 ± 0.000", "1.000 ± 0.000", "0.500 ± 0.000",
                                                  "0.250 ± 0.000", "0.500 ± 0.000"]
    assert "each device weighs the same" in text
    assert "validation split" in text
    ranked = text.split("## Selection rules", 1)[0]  # the oracle is only a rule beside the others, labelled so
    assert "oracle" not in ranked and "test-domain oracle (optimistic)" in section(text, "Selection rules")


def test_an_interval_containing_zero_is_no_clear_difference(tmp_path):
    study = make_study(tmp_path, "baseline = []\nsame = []\nclose = []\nworse = []\n")
    for seed in (1, 2):
        completed_run(study, "baseline", seed, 0.5)
        completed_run(study, "same", seed, 0.5)
        completed_run(study, "close", seed, {**dict.fromkeys(TEST_DOMAINS, 0.5), "a": 0.55})  # one example more
        completed_run(study, "worse", seed, 0.2)
    report = build_report(study, resamples=2000)
    text = markdown(report)
    differences = section(text, "Difference to the baseline (baseline)")
    assert table_row(differences, "same")[2:] == ["+0.000 [+0.000, +0.000] no clear difference"] * 3
    close = table_row(differences, "close")
    assert close[2].startswith("+0.014 [") and close[2].endswith("no clear difference")  # 1 of 70
    assert close[3].startswith("+0.017 [") and close[3].endswith("no clear difference")  # 0.05 / 3 devices
    assert close[4] == "+0.000 [+0.000, +0.000] no clear difference"
    assert all(cell.startswith("-0.300 [-") and cell.endswith("worse") for cell in table_row(differences, "worse")[2:])
    assert build_report(study, resamples=2000).variants[2].comparisons == report.variants[2].comparisons  # fixed seed


def test_incomplete_runs_are_listed_and_left_out(tmp_path):
    study = make_study(tmp_path, "baseline = []\nother = []\n", seeds=(1, 2, 3, 4, 5))
    for seed in (1, 2):
        completed_run(study, "baseline", seed, 0.5)
        completed_run(study, "other", seed, 0.6)
    completed_run(study, "baseline", 3, 0.5)
    failed = study.run("other", 3).base  # a launch that failed, with its log
    (failed / "logs").mkdir(parents=True)
    (failed / "logs" / "launch_1.log").write_text("epoch 0\nTraceback (most recent call last):\nValueError: boom\n")
    (failed / "launches.json").write_text(json.dumps([{"number": 1, "outcome": "failed", "detail": "exit status 1",
                                                       "log": "logs/launch_1.log"}]))
    killed = study.run("baseline", 4).base / "1"  # a killed process leaves RUNNING
    killed.mkdir(parents=True)
    (killed / "run.json").write_text(json.dumps({"status": "RUNNING"}))
    (killed / "checkpoints").mkdir()
    (killed / "checkpoints" / "last.ckpt").write_text("{}")
    no_results = study.run("other", 4).base / "1"
    no_results.mkdir(parents=True)
    (no_results / "run.json").write_text(json.dumps({"status": "COMPLETED"}))
    running = acquire_run_lock(study.run("baseline", 5))  # held as a launch holds it
    report = build_report(study, resamples=500)
    text = markdown(report)
    listed = section(text, "Incomplete runs (left out of every figure)")
    assert "- other seed 3: failed: exit status 1" in listed and "ValueError: boom" in listed
    assert "- baseline seed 4: interrupted: Sacred status RUNNING" in listed
    assert f"continues from {killed}" in listed
    assert "- other seed 4: completed without results" in listed
    assert "- baseline seed 5: running" in listed
    assert "- other seed 5: missing" in listed
    assert "10 runs (2 variants x 5 seeds): 5 complete, 5 incomplete" in text
    accuracy = section(text, "Test accuracy per variant")
    assert table_row(accuracy, "baseline")[1] == "3" and table_row(accuracy, "other")[1] == "2"
    assert table_row(section(text, "Difference to the baseline"), "other")[1] == "2"  # seeds 1 and 2 paired
    incomplete = [row for row in csv.DictReader(open(write_report(report)[1])) if row["table"] == "incomplete"]
    assert {(row["variant"], row["seeds"], row["verdict"]) for row in incomplete} == {
        ("other", "3", "failed"), ("baseline", "4", "interrupted"), ("other", "4", "completed without results"),
        ("baseline", "5", "running"), ("other", "5", "missing")}
    os.close(running)


def test_a_test_selected_run_labels_the_whole_report_oracle(tmp_path):
    study = make_study(tmp_path, "baseline = []\nother = []\n")
    for seed in (1, 2):
        completed_run(study, "baseline", seed, 0.5)
        completed_run(study, "other", seed, 0.6, selection="oracle" if seed == 2 else "validation")
    report = build_report(study, resamples=500)
    text = markdown(report)
    assert text.startswith(f"# Study forms ({ORACLE_LABEL})")
    for title in ("Test accuracy per variant", "Difference to the baseline (baseline)", "Test accuracy per device"):
        assert f"## {title} ({ORACLE_LABEL})" in text
    assert "model_selection=oracle): other/seed_2" in text
    assert table_row(section(text, "Selection rules"), "other")[1] == ORACLE_LABEL  # not "validation"
    rows = list(csv.DictReader(open(write_report(report)[1])))
    assert {row["model_selection"] for row in rows} == {"oracle"}


def test_runs_tested_on_other_examples_are_refused(tmp_path):
    study = make_study(tmp_path, "baseline = []\nother = []\n", seeds=(1,))
    completed_run(study, "baseline", 1, 0.5)
    folder = completed_run(study, "other", 1, 0.5)
    predictions = folder / "test_predictions.csv"
    predictions.write_text(predictions.read_text().replace("a_000.wav", "z_000.wav"))
    with pytest.raises(StudyError, match="other examples"):
        build_report(study, resamples=500)


def test_a_malformed_results_file_is_listed_not_averaged(tmp_path):
    study = make_study(tmp_path, "baseline = []\n", seeds=(1, 2))
    completed_run(study, "baseline", 1, 0.5)
    folder = completed_run(study, "baseline", 2, 0.5)
    (folder / "results.json").write_text(json.dumps({"model_selection": "test"}))
    text = markdown(build_report(study, resamples=500))
    assert "- baseline seed 2: unreadable results:" in text and "lacks" in text
    assert table_row(section(text, "Test accuracy per variant"), "baseline")[:3] == ["baseline", "1", "0.500 (1 seed)"]


def test_report_files(tmp_path):
    study = make_study(tmp_path, "baseline = []\nother = []\n")
    for seed in (1, 2):
        completed_run(study, "baseline", seed, 0.5)
        completed_run(study, "other", seed, 0.7)
    report = build_report(study, resamples=500)
    markdown_path, csv_path, png_path = write_report(report)
    assert markdown_path.read_text() == markdown(report)
    assert png_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = {(row["table"], row["variant"], row["figure"]): row for row in csv.DictReader(open(csv_path))}
    assert float(rows[("accuracy", "other", "unseen devices")]["mean"]) == pytest.approx(0.7)
    assert rows[("accuracy", "other", "unseen devices")]["examples"] == "30"
    difference = rows[("difference", "other", "overall")]
    assert float(difference["difference"]) == pytest.approx(0.2)
    assert float(difference["ci_low"]) > 0 and difference["verdict"] == "better"
    assert rows[("domain", "other", "b")]["examples"] == "10" and rows[("domain", "other", "s5")]["note"] == "unseen"


def test_report_without_completed_runs(tmp_path):
    study = make_study(tmp_path, "baseline = []\n", seeds=(1,))
    text = markdown(build_report(study, resamples=500))
    assert "No completed run with results yet." in text and "- baseline seed 1: missing" in text
