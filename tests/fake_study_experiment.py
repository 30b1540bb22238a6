"""A stand-in for ex_dcase20.py in the study tests: a Sacred experiment that "trains" without a network.

It leaves in its FileStorageObserver run folder what a frito training leaves for a study (see
helpers/results/run_files.py): Sacred's files, checkpoints/last.ckpt rewritten atomically after every epoch,
checkpoints/best.ckpt, and at the end results.json and test_predictions.csv.

An epoch takes ``epoch_seconds`` in "batches" of 0.05 s. SIGTERM stops it at the next batch with exit
status 143, as frito does. ``resume=<run folder>`` continues after the epoch in that folder's last.ckpt and
records resumed_from in info.json. The test predictions are fixed by the config: in each test domain the
first round(a * n) of its n examples are classified correctly (a = ``domain_accuracy[domain]``, else
``accuracy``, or ``unseen_accuracy`` for unseen domains; plus ``seed_step * (seed - 1)``), the others as
the other class.

The dataset settings a study's [protocol] gives are accepted as frito's are (basedataset.train_domains,
train_fraction, fold): the seen domains are train_domains, and with a fold the test files are named after it
(fold k tests on other clips). Every epoch logs val/acc and the test figures (test/acc, test/acc_seen,
test/acc_unseen, test/domain/<name>) at the final levels, so that metrics.json has what a report reads.
"""

# Sacred reads the config scope's local variables as config entries:
# ruff: noqa: F841

import csv
import json
import os
import shutil
import signal
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)

from sacred import Experiment  # noqa: E402
from sacred.observers import FileStorageObserver  # noqa: E402

CLASSES = ["metro", "park"]
TEST_DOMAINS = {"a": 20, "b": 10, "c": 10, "s4": 20, "s5": 10}  # examples per device; a, b, c seen
SEEN = ["a", "b", "c"]
BATCH_SECONDS = 0.05

ex = Experiment("fake_study")


@ex.config
def config():
    n_epochs = 3  # epochs of the "training"
    epoch_seconds = 0.0  # how long an epoch takes
    accuracy = 0.5  # fraction of each seen domain's test examples classified correctly
    unseen_accuracy = None  # the same for unseen domains (None: accuracy)
    seed_step = 0.0  # added to both per seed above 1
    domain_accuracy = {}  # domain -> fraction correct, over the two above
    fail = False  # raise an error after the first epoch
    model_selection = "validation"  # written into results.json
    resume = None  # a run folder to continue from
    basedataset = {"train_domains": SEEN, "train_fraction": 1.0, "fold": None}  # as a [protocol] sets them


@ex.named_config
def better():
    """Classify more test examples correctly."""
    accuracy = 0.8


@ex.named_config
def oracle():
    """Claim test-split model selection."""
    model_selection = "oracle"


@ex.main
def main(_run, _config, seed, n_epochs, epoch_seconds, accuracy, unseen_accuracy, seed_step, fail, model_selection,
         resume, domain_accuracy, basedataset):
    stop_requested = []
    signal.signal(signal.SIGTERM, lambda signum, frame: stop_requested.append(signum))
    run_dir = Path(next(o.dir for o in _run.observers if isinstance(o, FileStorageObserver)))
    checkpoints = run_dir / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    _run.info["environment"] = {name: os.environ.get(name)
                                for name in ("CUDA_VISIBLE_DEVICES", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    start = 0
    if resume is not None:
        source = Path(resume) / "checkpoints" / "last.ckpt"
        start = json.loads(source.read_text())["epoch"] + 1
        _run.info["resumed_from"] = str(source)
    print(f"training epochs {start}..{n_epochs - 1}", flush=True)
    seen = list(basedataset["train_domains"])
    levels = {domain: domain_accuracy.get(domain, accuracy if domain in seen or unseen_accuracy is None
                                          else unseen_accuracy) + seed_step * (seed - 1) for domain in TEST_DOMAINS}
    figures = figures_of(levels, seen)
    for epoch in range(start, n_epochs):
        for _ in range(max(1, round(epoch_seconds / BATCH_SECONDS))):
            if stop_requested:
                print("stopped by SIGTERM", flush=True)
                raise SystemExit(143)
            time.sleep(BATCH_SECONDS if epoch_seconds else 0)
        _run.log_scalar("val/acc", 0.1 * epoch, epoch)
        for name, value in figures.items():
            _run.log_scalar(f"test/{name}", value, epoch)
        temporary = checkpoints / ".last.ckpt.tmp"
        temporary.write_text(json.dumps({"epoch": epoch}))
        os.replace(temporary, checkpoints / "last.ckpt")
        shutil.copy(checkpoints / "last.ckpt", checkpoints / "best.ckpt")
        print(f"epoch {epoch} done", flush=True)
        if fail:
            raise RuntimeError("the fake experiment fails on purpose")
    write_outputs(run_dir, levels, model_selection, n_epochs, seen=seen, fold=basedataset["fold"])


def correct_count(level, count):
    """How many of a domain's ``count`` test examples are right at accuracy ``level``."""
    return round(level * count)


def figures_of(levels, seen=SEEN):
    """The test figures (acc, acc_seen, acc_unseen, domain/<name>) of the predictions ``levels`` gives."""
    per_domain = {domain: correct_count(levels[domain], count) / count for domain, count in TEST_DOMAINS.items()}
    unseen = [domain for domain in TEST_DOMAINS if domain not in seen]
    return {"acc": sum(correct_count(levels[domain], count) for domain, count in TEST_DOMAINS.items())
            / sum(TEST_DOMAINS.values()),
            "acc_seen": sum(per_domain[domain] for domain in seen) / len(seen),
            **({"acc_unseen": sum(per_domain[domain] for domain in unseen) / len(unseen)} if unseen else {}),
            **{f"domain/{domain}": value for domain, value in per_domain.items()}}


def write_outputs(run_dir, levels, model_selection="validation", n_epochs=1, seen=SEEN, fold=None, last_levels=None):
    """results.json and test_predictions.csv with the fraction levels[domain] of each domain's examples correct
    at the selected epoch (last_levels[domain] at the last epoch; default the same); seen: the training domains;
    fold: names the test files after it."""
    last_levels = levels if last_levels is None else last_levels
    rows = []
    for domain, count in TEST_DOMAINS.items():
        n_correct, n_last = correct_count(levels[domain], count), correct_count(last_levels[domain], count)
        for index in range(count):
            label = CLASSES[index % 2]
            other = CLASSES[(index + 1) % 2]
            prefix = "" if fold is None else f"fold{fold}_"
            rows.append({"file_name": f"{prefix}{domain}_{index:03d}.wav", "label": label, "domain": domain,
                         "net_selected": label if index < n_correct else other,
                         "net_last": label if index < n_last else other})
    with open(run_dir / "test_predictions.csv", "w", newline="") as stream:
        writer = csv.DictWriter(stream, ["file_name", "label", "domain", "net_selected", "net_last"])
        writer.writeheader()
        writer.writerows(rows)
    results = {
        "model_selection": model_selection, "selected_epoch": n_epochs - 1, "last_epoch": n_epochs - 1,
        "domain_kind": "device", "group_names": ["seen devices", "unseen devices"], "class_names": CLASSES,
        "domain_names": list(TEST_DOMAINS), "seen_domains": list(seen),
        "test": {"net": {"selected": figures_of(levels, seen), "last": figures_of(last_levels, seen)}},
        "validation": {"net": {"selected": {}, "last": {}}},
    }
    (run_dir / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    ex.run_commandline()
