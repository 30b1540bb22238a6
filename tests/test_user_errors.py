"""Every command on each kind of user error: exit status 1, the message, no traceback (with --debug, the traceback).

Each case runs a command line as a user types it: the experiments' commands (main, prepare, evaluate_only, predict,
export, test_loaders, model_speed_test, plot_attention_mask), `python -m datasets.prepare` and `study.py run` /
`report`, on a bad setting, a dataset folder in the wrong layout, a bad audio file, a class that could never be
trained (NSynth's synth_lead with the acoustic training default, a label only the test rows of a folder's CSV
have), a foreign or outdated checkpoint, a bad study file and an existing export target. The data are built by
hand, small, in the test's folder. One case of each entry point runs in a subprocess, as typed; the others run the
same entry point (the experiment's ``run_commandline``, ``study.main``, ``datasets.prepare.main``) in this process,
with the same arguments, which spares each an interpreter start.
"""

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from helpers.checkpoint import NETWORK_PREFIXES, checkpoint_entry
from helpers.model_spec import ModelSpec
from models.passt import get_model

REPO = Path(__file__).resolve().parents[1]
NET = {"arch": "passt_mini", "n_classes": 2, "input_fdim": 128, "input_tdim": 100, "fstride": 10, "tstride": 10}
MEL = {"n_mels": 128, "sr": 32000, "win_length": 800, "hopsize": 320, "n_fft": 1024}


def tiny_nsynth(folder: Path) -> Path:
    """NSynth's layout, a few notes per split, with synth_lead notes in every split but all of them synthetic (as
    a user's subset of NSynth can be): under the default train_domains=["acoustic"], synth_lead has no training
    note of the training source."""
    notes = {"bass": ("acoustic", "synthetic"), "synth_lead": ("synthetic", "synthetic")}
    for split in ("nsynth-train", "nsynth-valid", "nsynth-test"):
        (folder / split / "audio").mkdir(parents=True)
        examples = {}
        for family, sources in notes.items():
            for number, source in enumerate(sources):
                note = f"{family}_{source}_{split[7:]}_{number}-060-100"
                examples[note] = {"note_str": note, "instrument_family_str": family, "instrument_source_str": source,
                                  "instrument_str": f"{family}_{source}_{split[7:]}_{number}", "pitch": 60,
                                  "velocity": 100}
                soundfile.write(folder / split / "audio" / f"{note}.wav", np.zeros(1600), 16000)
        (folder / split / "examples.json").write_text(json.dumps(examples))
    return folder


def folder_with_a_broken_file(folder: Path) -> Path:
    folder.mkdir()
    rows = ["filename,label"]
    for index in range(12):
        soundfile.write(folder / f"tone{index}.wav", np.sin(np.arange(8000) * 0.01 * (index + 1)), 16000)
        rows.append(f"tone{index}.wav,{'low' if index < 6 else 'high'}")
    (folder / "broken.wav").write_bytes(b"RIFF not really audio")
    rows.append("broken.wav,low")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def folder_with_a_test_only_label(folder: Path) -> Path:
    """A CSV with a split column whose label 'owl' has test rows only."""
    folder.mkdir()
    rows = ["filename,label,split"]
    for index in range(12):
        soundfile.write(folder / f"tone{index}.wav", np.sin(np.arange(8000) * 0.01 * (index + 1)), 16000)
        rows.append(f"tone{index}.wav,{'low' if index % 2 else 'high'},{('train', 'validation', 'test')[index % 3]}")
    soundfile.write(folder / "owl.wav", np.zeros(8000), 16000)
    rows.append("owl.wav,owl,test")
    (folder / "metadata.csv").write_text("\n".join(rows) + "\n")
    return folder


def frito_checkpoint(path: Path, dataset: str = "folder") -> Path:
    """A checkpoint in the current format (weights only), as a training on ``dataset`` writes it."""
    network = get_model(**NET)
    state = {NETWORK_PREFIXES["plain"] + key: value for key, value in network.state_dict().items()}
    entry = checkpoint_entry(ModelSpec(NET, MEL, sample_rate=32000, clip_length=1.0), ["high", "low"], ["all"], ["all"],
                             dataset)
    torch.save({"state_dict": state, "frito": entry}, path)
    return path


def files(folder: Path) -> dict[str, Path]:
    """The inputs the cases refer to by name, built in ``folder``."""
    checkpoints = folder / "checkpoints"
    checkpoints.mkdir()
    torch.save({"state_dict": {"net.x": torch.zeros(1)}, "epoch": 3}, checkpoints / "foreign.ckpt")
    torch.save({"state_dict": {"net.x": torch.zeros(1)}, "frito": {"version": 1}}, checkpoints / "v1.ckpt")
    exported = folder / "exported"
    exported.mkdir()
    (exported / "model.torchscript.pt").write_bytes(b"an earlier export")
    (folder / "no_audio").mkdir()
    (folder / "bad_study.toml").write_text('experiment = "ex_nsynth.py"\n[variants]\nbaseline = []\n')
    return {"missing": folder / "not_there", "nsynth": tiny_nsynth(folder / "nsynth"),
            "broken": folder_with_a_broken_file(folder / "mine"),
            "test_only": folder_with_a_test_only_label(folder / "owl"), "foreign": checkpoints / "foreign.ckpt",
            "v1": checkpoints / "v1.ckpt", "trained": frito_checkpoint(checkpoints / "trained.ckpt"),
            "exported": exported, "no_audio": folder / "no_audio", "study": folder / "bad_study.toml"}


UNTRAINED = "nsynth: the classes ['synth_lead'] have no training clip of the training instrument_sources ['acoustic']"
# (kind of error, script, command line ({name} for the inputs of files()), the message expected)
CASES = [
    ("setting", "ex_nsynth.py", "plot_attention_mask with models.net.rf_norm_t=row_overlap_x",
     "Unknown rf_norm_t 'row_overlap_x'"),
    ("setting", "ex_nsynth.py", "test_loaders with basedataset.train_domains=['piano']",
     "train_domains=['piano']: ['piano'] not among the instrument_sources of nsynth"),
    ("setting", "ex_nsynth.py", "model_speed_test with trainer.weights_summary=all",
     "trainer.weights_summary must be 'top', 'full' or None (Lightning 1.x), got 'all'"),
    ("setting", "ex_nsynth.py", "with models.net.s_patchout_f=99", "models.net.s_patchout_f=99 would drop all 12 "
                                                                   "frequency rows"),
    ("setting", "ex_nsynth.py", "with models.net.pretrained_path=weights.pt",
     "models.net.pretrained_path='weights.pt' is set but models.net.pretrained=False"),
    ("layout", "ex_dcase20.py", "prepare with basedataset.base_dir={missing}",
     "basedataset.base_dir='{missing}' does not exist"),
    ("layout", "datasets.prepare", "nsynth --base-dir {missing}", "basedataset.base_dir='{missing}' does not exist"),
    ("audio", "ex_folder.py", "prepare with basedataset.base_dir={broken}", "skip_bad_files=True"),
    ("audio", "datasets.prepare", "folder --base-dir {broken}", "skip_bad_files"),
    ("untrained class", "ex_nsynth.py", "prepare with basedataset.base_dir={nsynth}", UNTRAINED),
    ("untrained class", "ex_nsynth.py", "with basedataset.base_dir={nsynth}", UNTRAINED),
    ("untrained class", "ex_nsynth.py", "test_loaders with basedataset.base_dir={nsynth}", UNTRAINED),
    ("untrained class", "ex_folder.py", "with basedataset.base_dir={test_only}",
     "folder: the classes ['owl'] have no training clip of the training domains ['all'], so the model could never "
     "learn them ('owl': no training clip at all)"),
    ("checkpoint", "ex_nsynth.py", "evaluate_only with checkpoint={v1}",
     "checkpoint {v1} is in frito's checkpoint format version 1; this frito reads version 3 only"),
    ("checkpoint", "ex_nsynth.py", "predict with checkpoint={foreign} files={no_audio}",
     "checkpoint {foreign} is not a frito checkpoint (it has no 'frito' entry)"),
    ("checkpoint", "ex_folder.py", "export with checkpoint={missing}/best.ckpt",
     "checkpoint '{missing}/best.ckpt' does not exist"),
    ("setting", "ex_folder.py", "predict with checkpoint={trained} files={no_audio}",
     "no audio files (.wav, .flac, .ogg, .mp3) found in ['{no_audio}']"),
    ("setting", "ex_folder.py", "predict with checkpoint={trained} files={no_audio} hop_fraction=2",
     "hop_fraction=2: expected a number in (0, 1]"),
    ("export target", "ex_folder.py", "export with checkpoint={trained} export_dir={exported}",
     "['{exported}/model.torchscript.pt'] exist; choose another folder"),
    ("study file", "study.py", "run {study}", "{study}: no 'seeds'; a study file needs experiment, seeds"),
    ("study file", "study.py", "report {study}", "no 'seeds'"),
]
# One command line per entry point, as typed, in a subprocess.
TYPED = {("ex_nsynth.py", "evaluate_only with checkpoint={v1}"), ("datasets.prepare", "nsynth --base-dir {missing}"),
         ("study.py", "run {study}")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    return files(tmp_path_factory.mktemp("user_errors"))


def run(frito, script, arguments, inputs, folder):
    """The command line in ``folder`` (a module such as datasets.prepare, in the repository as its README says)."""
    cwd = folder if script.endswith(".py") else REPO
    return frito(script, *[argument.format(**inputs) for argument in arguments.split()], cwd=cwd, check=False)


def run_in_process(script, arguments, inputs, folder, monkeypatch, capsys, cache_dir) -> tuple[int, str]:
    """(exit status, output) of the entry point ``script`` given the command line's arguments, in this process."""
    argv = [argument.format(**inputs) for argument in arguments.split()]
    monkeypatch.chdir(folder if script.endswith(".py") else REPO)
    monkeypatch.setenv("FRITO_CACHE_DIR", str(cache_dir))
    monkeypatch.syspath_prepend(str(REPO))
    module = importlib.import_module(script.removesuffix(".py"))
    try:
        if script.startswith("ex_"):
            module.ex.run_commandline([script, *argv, "--capture=sys"])  # pytest captures sys.stdout, not fds
            status = 0
        else:
            status = module.main(argv) or 0
    except SystemExit as stop:
        status = stop.code if isinstance(stop.code, int) else 1
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    captured = capsys.readouterr()
    return status, captured.out + captured.err


@pytest.mark.parametrize("kind, script, arguments, message", CASES)
def test_a_user_error_is_its_message_with_status_1(frito, inputs, tmp_path, monkeypatch, capsys, cache_dir, kind,
                                                   script, arguments, message):
    if (script, arguments) in TYPED:
        result = run(frito, script, arguments, inputs, tmp_path)
        status, output = result.returncode, result.stdout + result.stderr
    else:
        status, output = run_in_process(script, arguments, inputs, tmp_path, monkeypatch, capsys, cache_dir)
    assert status == 1, output[-3000:]
    assert message.format(**inputs) in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]


def test_every_entry_point_is_typed_once():
    def entry_point(script):  # the experiments share one (helpers.experiment.commands)
        return "experiment" if script.startswith("ex_") else script

    assert sorted(entry_point(script) for script, _ in TYPED) == ["datasets.prepare", "experiment", "study.py"]
    assert TYPED <= {(script, arguments) for _, script, arguments, _ in CASES}


def test_a_setting_error_stops_the_training_before_anything_is_written(frito, tmp_path):
    result = frito("ex_dcase20.py", "with", "models.net.rf_norm_tt=row_overlap_8", cwd=tmp_path, check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" not in output
    assert "Unknown config key 'models.net.rf_norm_tt'. Did you mean models.net.rf_norm_t?" in output
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("script, arguments", [
    ("ex_nsynth.py", "prepare with basedataset.base_dir={nsynth} --debug"),
    ("study.py", "report {study} --debug"),
])  # fmt: skip
def test_debug_shows_the_traceback(frito, inputs, tmp_path, script, arguments):
    result = run(frito, script, arguments, inputs, tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 1 and "Traceback" in output, output[-3000:]
    assert "have no training clip" in output or "no 'seeds'" in output
