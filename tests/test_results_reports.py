"""End-of-run reports: CSV contents against the hand-built case, PNGs written, the console summary."""

import csv

from helpers.results.metrics import evaluation
from helpers.results.reports import console_summary, write_reports
from helpers.results.selection import EpochEvaluations

CLASSES = ("cat", "dog")
DOMAINS = ("a", "s4")
GROUPS = ("seen devices", "unseen devices")


def small_case():
    # (label, prediction, domain): a: 2 of 3 right, s4: 1 of 2
    rows = [(0, 0, 0), (1, 1, 0), (1, 0, 0), (0, 1, 1), (1, 1, 1)]
    return evaluation([r[1] for r in rows], [r[0] for r in rows], [r[2] for r in rows], [0.5] * 5,
                      CLASSES, DOMAINS, seen_domains=("a",))


def read(path):
    with open(path, newline="") as stream:
        return list(csv.reader(stream))


def test_report_files(tmp_path):
    files = write_reports(small_case(), tmp_path, "net", GROUPS)
    assert sorted(p.name for p in files) == sorted(p.name for p in tmp_path.iterdir())
    assert {p.suffix for p in files} == {".csv", ".png"}
    assert all(p.stat().st_size > 0 for p in files)
    assert read(tmp_path / "net_confusion_matrix.csv") == [
        ["true \\ predicted", "cat", "dog"],
        ["cat", "1", "1"],
        ["dog", "1", "2"],
    ]
    domains = read(tmp_path / "net_domains.csv")
    assert domains[0] == ["domain", "group", "examples", "accuracy", "cat", "dog"]
    # a: cat 1/1, dog 1/2; s4: cat 0/1, dog 1/1
    assert domains[1] == ["a", "seen devices", "3", str(round(2 / 3, 6)), "1.0", "0.5"]
    assert domains[2] == ["s4", "unseen devices", "2", "0.5", "0.0", "1.0"]
    assert domains[3][:4] == ["mean of seen devices", "seen devices", "", str(round(2 / 3, 6))]
    assert domains[4][:4] == ["mean of unseen devices", "unseen devices", "", "0.5"]


def test_console_summary_fits_one_screen_and_says_how_each_epoch_was_chosen():
    selected = EpochEvaluations(3, {"val": {"net": small_case()},
                                    "test": {"net": small_case(), "net_swa": small_case()}})
    last = EpochEvaluations(9, {"test": {"net": small_case()}})
    text = console_summary([("selected", selected), ("last", last)], "device", GROUPS, "demo run", files=())
    lines = text.splitlines()
    assert len(lines) < 25 and max(map(len, lines)) <= 110
    assert "acc 0.6000" in text and "seen devices 0.6667" in text and "unseen devices 0.5000" in text
    assert "a* 0.667" in text and "s4 0.500" in text
    assert "test split, epoch 3 (selected: best validation accuracy):" in text
    assert "test split, epoch 9 (last):" in text and "validation split: acc 0.6000 (5 examples)" in text
    oracle = console_summary([("oracle", selected)], "device", GROUPS, "demo run")
    assert "ORACLE: selected on the test split itself; optimistic" in oracle
    assert "seen devices / unseen devices: means of the per-device accuracies" in text


def no_domain_case():
    # ESC-50-like: every example in the one domain "all"; 3 of 5 right
    rows = [(0, 0), (1, 1), (1, 0), (0, 1), (1, 1)]
    return evaluation([r[1] for r in rows], [r[0] for r in rows], [0] * 5, [0.5] * 5, CLASSES, ("all",),
                      seen_domains=("all",))


def test_data_without_domains_reports_accuracy_without_seen_or_unseen(tmp_path):
    files = write_reports(no_domain_case(), tmp_path, "net", ())
    assert sorted(p.name for p in files) == sorted(p.name for p in tmp_path.iterdir()) == [
        "net_confusion_matrix.csv", "net_confusion_matrix.png"]
    selected = EpochEvaluations(3, {"val": {"net": no_domain_case()}, "test": {"net": no_domain_case()}})
    text = console_summary([("selected", selected)], None, (), "esc50 run")
    assert "net      acc 0.6000  macro 0.5833  loss 0.5000  (5 examples)" in text.splitlines()
    assert "seen" not in text and "per " not in text and "nan" not in text
    # data with domains, every one trained on: the empty unseen group is left out, not printed as nan
    every = evaluation([0, 1], [0, 1], [0, 1], [0.5, 0.5], CLASSES, DOMAINS, seen_domains=DOMAINS)
    text = console_summary([("selected", EpochEvaluations(1, {"test": {"net": every}}))], "device", GROUPS, "run")
    line = next(line for line in text.splitlines() if line.startswith("net"))
    assert "seen devices 1.0000  loss" in line and "unseen" not in line and "nan" not in text
