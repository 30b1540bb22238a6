"""The study report's protocol tables and selection rules, from run folders written by hand as trainings leave
them (results.json, test_predictions.csv, Sacred's run.json and metrics.json), with figures derived in the test
from the levels it writes: in each test device the first round(a * n) of its n examples right (devices a 20,
b 10, c 10, s4 20, s5 10)."""

import csv
import json

import numpy as np
import pytest
from fake_study_experiment import TEST_DOMAINS, write_outputs
from test_study_table import section, table_row

from helpers.results.run_files import ResultsError, read_metrics
from helpers.study.spec import StudyError, load_study
from helpers.study.table import CSV_COLUMNS, build_report, markdown, write_report

FAKE = "fake_study_experiment.py"
DOMAINS = list(TEST_DOMAINS)


def make_study(tmp_path, protocol: str = "", seeds=(1, 2)):
    path = tmp_path / "axis.toml"
    path.write_text(f'experiment = "{tmp_path / FAKE}"\nseeds = {list(seeds)}\n[variants]\nbaseline = []\n'
                    f'other = []\n' + (f"[protocol]\n{protocol}" if protocol else ""))
    (tmp_path / FAKE).write_text("")  # the study checks that the experiment exists; nothing runs it here
    return load_study(path, folder=tmp_path / "study", cwd=tmp_path)


def levels(value: float, **domains: float) -> dict[str, float]:
    return {**dict.fromkeys(DOMAINS, value), **domains}


def completed_run(study, variant, seed, selected, value=None, last=None, seen=("a", "b", "c"), fold=None,
                  metrics=None, attempt=1):
    """A completed attempt with levels ``selected`` at the selected epoch, ``last`` at the last, and metrics.json
    (name -> per-epoch values, epochs 0, 1, ...) when given."""
    folder = study.run(variant, seed, value).base / str(attempt)
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": "COMPLETED"}))
    write_outputs(folder, selected, seen=list(seen), fold=fold, last_levels=last)
    if metrics is not None:
        write_metrics(folder, metrics)
    return folder


def write_metrics(folder, metrics, first_epoch=0):
    (folder / "metrics.json").write_text(json.dumps({
        name: {"steps": list(range(first_epoch, first_epoch + len(values))), "values": values}
        for name, values in metrics.items()}))


def csv_rows(report):
    return list(csv.DictReader(open(write_report(report)[1])))


HELD_OUT_LEVEL = {"a": 0.8, "b": 0.9, "c": 0.7}  # other's accuracy on its held-out device; baseline 0.5, 0.6


@pytest.fixture
def lodo(tmp_path):
    study = make_study(tmp_path, 'held_out_domains = ["a", "b", "c"]\ntraining_domains = ["a", "b", "c"]\n')
    for value in study.protocol.values:
        held_out = value.value
        seen = [domain for domain in "abc" if domain != held_out]
        for seed, base in ((1, 0.5), (2, 0.6)):
            completed_run(study, "baseline", seed, levels(base), value, seen=seen)
            # the oracle's epoch is 1 (the held-out device's best), where every device is at 0.95
            completed_run(study, "other", seed, levels(0.5, **{held_out: HELD_OUT_LEVEL[held_out]}), value,
                          last=levels(0.5), seen=seen,
                          metrics={f"test/domain/{domain}": [0.6, 0.95, 0.8 if domain == held_out else 0.99]
                                   for domain in DOMAINS})
    return study


def test_leave_one_domain_out_gives_each_held_out_accuracy_and_their_mean(lodo):
    report = build_report(lodo, resamples=2000)
    text = markdown(report)
    summary = section(text, "Leave-one-domain-out: held-out accuracy")
    assert table_row(summary, "variant") == ["variant", "runs", "a", "b", "c", "mean", "mean, last epoch",
                                             "mean, test-domain oracle (optimistic)"]
    assert table_row(summary, "baseline") == ["baseline", "6", "0.550", "0.550", "0.550", "0.550", "0.550", "-"]
    assert table_row(summary, "other") == ["other", "6", "0.800", "0.900", "0.700", "0.800", "0.500", "0.950"]
    difference = table_row(summary.split("difference to baseline", 1)[1], "other")
    assert difference[1].startswith("+0.250 [") and difference[2].startswith("+0.350 [")
    assert difference[4].startswith("+0.250 [") and difference[4].endswith("better")
    # each held-out device's own panel: seen = the other two, the held-out group is the held-out device
    panel = section(text, "Test accuracy per variant (held_out_domain = b)")
    assert table_row(panel, "variant")[2:] == ["overall (n=70)", "seen devices (n=30)", "unseen devices (n=40)",
                                               "held out (n=10)"]
    assert table_row(panel, "other")[5] == "0.900 ± 0.000"
    rows = csv_rows(report)
    pooled = {(row["table"], row["variant"]): row for row in rows if row["held_out_domain"] == "mean"}
    assert float(pooled[("pooled", "other")]["mean"]) == pytest.approx(0.8)
    assert float(pooled[("pooled", "other")]["mean_last_epoch"]) == pytest.approx(0.5)
    assert float(pooled[("pooled", "other")]["mean_test_oracle_optimistic"]) == pytest.approx(0.95)
    assert pooled[("pooled", "baseline")]["mean_test_oracle_optimistic"] == ""  # no metrics.json
    assert float(pooled[("pooled_difference", "other")]["difference"]) == pytest.approx(0.25)
    held_out_b = [row for row in rows if row["table"] == "accuracy" and row["variant"] == "other"
                  and row["held_out_domain"] == "b" and row["figure"] == "held out"]
    assert float(held_out_b[0]["mean"]) == pytest.approx(0.9)


def test_a_held_out_domain_without_test_examples_is_refused(tmp_path):
    study = make_study(tmp_path, 'held_out_domains = ["z"]\ntraining_domains = ["a", "z"]\n')
    completed_run(study, "baseline", 1, levels(0.5), study.protocol.values[0], seen=["a"])
    with pytest.raises(StudyError, match="held-out domain 'z' has no test examples"):
        build_report(study, resamples=500)


def test_the_mean_s_interval_resamples_seeds_and_examples_of_each_held_out_domain(lodo):
    """A plain loop over replicates: per held-out device, seeds drawn in pairs and its test examples drawn with
    replacement; the replicate is the mean over devices of the mean over drawn seeds of the difference."""
    report = build_report(lodo, resamples=3000)
    comparison = report.pooled["held out"]["other"].comparison
    rng = np.random.default_rng(0)
    counts = TEST_DOMAINS
    replicates = []
    for _ in range(3000):
        per_device = []
        for device in "abc":
            n = counts[device]
            right = {"other": np.arange(n) < round(HELD_OUT_LEVEL[device] * n),
                     1: np.arange(n) < round(0.5 * n), 2: np.arange(n) < round(0.6 * n)}
            examples = rng.integers(0, n, n)
            seeds = rng.integers(1, 3, 2)
            per_device.append(np.mean([right["other"][examples].mean() - right[seed][examples].mean()
                                       for seed in seeds]))
        replicates.append(np.mean(per_device))
    low, high = np.percentile(replicates, [2.5, 97.5])
    assert comparison.difference == pytest.approx(0.25)
    assert comparison.low == pytest.approx(low, abs=0.015) and comparison.high == pytest.approx(high, abs=0.015)


def test_training_fractions_give_accuracy_against_the_fraction(tmp_path):
    study = make_study(tmp_path, "train_fractions = [0.25, 1.0]\n")
    small, full = study.protocol.values
    for seed in (1, 2):
        completed_run(study, "baseline", seed, levels(0.5, s4=0.25, s5=0.2), small)
        completed_run(study, "baseline", seed, levels(0.75, s4=0.5, s5=0.6), full)
        completed_run(study, "other", seed, levels(0.6, s4=0.5, s5=0.4), small)
        completed_run(study, "other", seed, levels(0.8, s4=0.7, s5=0.7), full)
    report = build_report(study, resamples=500)
    text = markdown(report)
    curve = section(text, "Accuracy against the training fraction")
    assert table_row(curve, "variant") == ["variant", "figure", "0.25", "1.0"]
    rows = [line for line in curve.splitlines() if line.startswith("| other |")]
    assert rows == ["| other | overall | 0.543 | 0.757 |",  # (0.6 * 40 + 10 + 4) / 70, (0.8 * 40 + 14 + 7) / 70
                    "| other | seen devices | 0.600 | 0.800 |",
                    "| other | unseen devices | 0.450 | 0.700 |"]
    assert "## Difference to the baseline (baseline) (train_fraction = 0.25)" in text
    accuracy = {(row["variant"], row["train_fraction"], row["figure"]): row for row in csv_rows(report)
                if row["table"] == "accuracy"}
    assert float(accuracy[("baseline", "0.25", "unseen devices")]["mean"]) == pytest.approx(0.225)
    assert float(accuracy[("other", "1.0", "seen devices")]["mean"]) == pytest.approx(0.8)
    assert not report.pooled
    assert (study.folder / "report.png").read_bytes()[:4] == b"\x89PNG"


def test_folds_give_the_mean_over_folds_each_on_its_own_test_set(tmp_path):
    study = make_study(tmp_path, "folds = [1, 2]\n")
    first, second = study.protocol.values
    for seed in (1, 2):  # fold k tests on its own clips: the panels are compared apart
        completed_run(study, "baseline", seed, levels(0.5), first, fold=1)
        completed_run(study, "other", seed, levels(0.7), first, fold=1)
        completed_run(study, "baseline", seed, levels(0.6), second, fold=2)
        completed_run(study, "other", seed, levels(0.6, s4=0.9, s5=0.9), second, fold=2)
    report = build_report(study, resamples=500)
    text = markdown(report)
    folds = section(text, "Folds: mean over folds")
    unseen = folds.split("Test accuracy, unseen devices:", 1)[1]
    assert table_row(unseen, "other")[:5] == ["other", "4", "0.700", "0.900", "0.800"]
    assert table_row(unseen, "baseline")[:5] == ["baseline", "4", "0.500", "0.600", "0.550"]
    difference = table_row(unseen.split("difference to baseline", 1)[1], "other")
    assert difference[1].startswith("+0.200 [") and difference[2].startswith("+0.300 [")
    assert difference[3].startswith("+0.250 [") and difference[3].endswith("better")
    overall = folds.split("Test accuracy, overall:", 1)[1]
    assert table_row(overall, "other")[2:5] == ["0.700", f"{(0.6 * 40 + 0.9 * 30) / 70:.3f}",
                                                f"{(0.7 + (0.6 * 40 + 0.9 * 30) / 70) / 2:.3f}"]
    pooled = [row for row in csv_rows(report) if row["table"] == "pooled" and row["variant"] == "other"]
    assert {row["figure"] for row in pooled} == {"overall", "seen devices", "unseen devices"}
    assert {row["fold"] for row in pooled} == {"mean"}


def test_three_selection_rules_side_by_side(tmp_path):
    study = make_study(tmp_path)
    oracle_epoch = {"a": 1.0, "b": 0.5, "c": 0.5, "s4": 0.9, "s5": 0.9}
    for seed in (1, 2):
        completed_run(study, "baseline", seed, levels(0.5))
        # attempt 1 was interrupted after epochs 0 and 1; attempt 2 repeated epoch 1 and went on to epoch 2
        first = study.run("other", seed).base / "1"
        first.mkdir(parents=True)
        (first / "run.json").write_text(json.dumps({"status": "RUNNING"}))
        write_metrics(first, {"test/acc_unseen": [0.3, 0.95],
                              **{f"test/domain/{domain}": [0.3, 0.95] for domain in DOMAINS}})
        folder = completed_run(study, "other", seed, levels(0.6), last=levels(0.4), attempt=2)
        write_metrics(folder, {"test/acc_unseen": [0.2, 0.9, 0.9],
                               **{f"test/domain/{domain}": [0.2, oracle_epoch[domain], 0.1] for domain in DOMAINS}},
                      first_epoch=1)
    report = build_report(study, resamples=500)
    text = markdown(report)
    rules = section(text, "Selection rules")
    assert "test/acc_unseen" in rules and "optimistic" in rules
    rows = {tuple(cells[:2]): cells[2:] for cells in
            ([cell.strip() for cell in line.strip("|").split("|")] for line in rules.splitlines()
             if line.startswith("| other"))}
    assert rows[("other", "training-domain validation")] == ["2", *["0.600 ± 0.000"] * 3]
    assert rows[("other", "last epoch")] == ["2", *["0.400 ± 0.000"] * 3]
    overall = (20 * 1.0 + 10 * 0.5 + 10 * 0.5 + 20 * 0.9 + 10 * 0.9) / 70  # epoch 2 of attempt 2, the first best
    assert rows[("other", "test-domain oracle (optimistic)")] == ["2", f"{overall:.3f} ± 0.000", "0.667 ± 0.000",
                                                                  "0.900 ± 0.000"]
    assert table_row(rules, "baseline")[1:3] == ["training-domain validation", "2"]
    assert "| baseline | test-domain oracle (optimistic) | 0 | - | - | - |" in rules
    # the ranked tables are the runs' own selection, and the report is not labelled oracle
    assert text.startswith("# Study axis\n") and "oracle" not in text.split("## Selection rules")[0]
    rows = csv_rows(report)
    assert [column for column in CSV_COLUMNS if column in ("held_out_domain", "train_fraction", "fold",
                                                           "mean_last_epoch", "mean_test_oracle_optimistic")] == [
        "held_out_domain", "train_fraction", "fold", "mean_last_epoch", "mean_test_oracle_optimistic"]
    unseen = next(row for row in rows if row["table"] == "accuracy" and row["variant"] == "other"
                  and row["figure"] == "unseen devices")
    assert (float(unseen["mean"]), float(unseen["mean_last_epoch"]), float(unseen["mean_test_oracle_optimistic"])) \
        == pytest.approx((0.6, 0.4, 0.9))
    device_a = next(row for row in rows if row["table"] == "domain" and row["variant"] == "other"
                    and row["figure"] == "a")
    assert float(device_a["mean_test_oracle_optimistic"]) == pytest.approx(1.0)
    assert unseen["held_out_domain"] == unseen["train_fraction"] == unseen["fold"] == ""


def test_metrics_of_a_continued_training_and_a_broken_file(tmp_path):
    first, second = tmp_path / "1", tmp_path / "2"
    first.mkdir()
    second.mkdir()
    write_metrics(first, {"val/acc": [0.1, 0.2]})
    write_metrics(second, {"val/acc": [0.3, 0.4]}, first_epoch=1)
    assert read_metrics([first, second, tmp_path / "3"]) == {"val/acc": {0: 0.1, 1: 0.3, 2: 0.4}}
    (second / "metrics.json").write_text(json.dumps({"val/acc": {"steps": [1, 2], "values": [0.3]}}))
    with pytest.raises(ResultsError, match="equal length"):
        read_metrics([second])


def completed_run_without_domains(study, variant, seed, value, fold, n_correct, n_examples=20):
    """A completed run of data without domains (results.json as ESC-50's: domain_kind null, group_names [], one
    domain "all"): the first n_correct of its fold's n_examples test clips right."""
    folder = study.run(variant, seed, value).base / "1"
    folder.mkdir(parents=True)
    (folder / "run.json").write_text(json.dumps({"status": "COMPLETED"}))
    with open(folder / "test_predictions.csv", "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["file_name", "label", "domain", "net_selected", "net_last"])
        writer.writerows([f"audio/{fold}-{index}-A-0.wav", "dog", "all", "dog" if index < n_correct else "rain",
                          "dog"] for index in range(n_examples))
    (folder / "results.json").write_text(json.dumps({
        "model_selection": "validation", "selected_epoch": 0, "last_epoch": 0, "domain_kind": None,
        "group_names": [], "class_names": ["dog", "rain"], "domain_names": ["all"], "seen_domains": ["all"]}))


def test_folds_of_data_without_domains_report_overall_accuracy_alone(tmp_path):
    study = make_study(tmp_path, "folds = [1, 2]\n")
    first, second = study.protocol.values
    for seed in (1, 2):
        completed_run_without_domains(study, "baseline", seed, first, 1, 10)
        completed_run_without_domains(study, "other", seed, first, 1, 14)
        completed_run_without_domains(study, "baseline", seed, second, 2, 12)
        completed_run_without_domains(study, "other", seed, second, 2, 16)
        write_metrics(study.run("other", seed, second).base / "1", {"test/acc": [0.5, 0.95, 0.8]})
    report = build_report(study, resamples=500)
    text = markdown(report)
    folds = section(text, "Folds: mean over folds")
    overall = folds.split("Test accuracy, overall:", 1)[1]
    assert table_row(overall, "other")[:5] == ["other", "4", "0.700", "0.800", "0.750"]
    assert table_row(overall, "baseline")[:5] == ["baseline", "4", "0.500", "0.600", "0.550"]
    assert "within each" not in text and "seen" not in text and "Test accuracy per domain" not in text
    assert "fold = 1: test examples: 20; the data has no domains" in text
    panel = section(text, "Test accuracy per variant (fold = 2)")
    assert table_row(panel, "variant")[2:] == ["overall (n=20)"]
    assert table_row(panel, "other")[2] == "0.800 ± 0.000"
    rules = section(text, "Selection rules (fold = 2)")  # the oracle's epoch by test/acc: no per-domain figures
    assert "| other | test-domain oracle (optimistic) | 2 | 0.950 ± 0.000 |" in rules
    rows = csv_rows(report)
    assert {row["figure"] for row in rows if row["table"] in ("accuracy", "pooled")} == {"overall"}
    assert not [row for row in rows if row["table"] == "domain"]
    assert (study.folder / "report.png").stat().st_size > 0
