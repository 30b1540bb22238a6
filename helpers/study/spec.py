"""The study file (TOML): which experiment, the settings every run gets, the variants and the seeds.

    experiment = "ex_dcase20.py"               # the Sacred experiment each run is
    seeds = [1, 2, 3]
    with = ["basedataset.base_dir=/data/tau2020", "trainer.max_epochs=80"]   # every run; named configs too
    baseline = "baseline"                      # optional: the variant the others are compared with
    folder = "studies/my_study"                # optional: default studies/<file stem>
    [variants]                                 # name -> the settings it adds, in this order
    baseline = []
    per_row_1 = ["models.net.rf_norm_t=per_row_1"]
    mixstyle = ["freq_mixstyle"]
    [protocol]                                 # optional, one of: a study axis beside seeds
    held_out_domains = ["acoustic", "electronic", "synthetic"]  # leave-one-domain-out, with
    training_domains = ["acoustic", "electronic", "synthetic"]  #   the domains the runs train on (required)
    # train_fractions = [0.05, 0.1, 0.25, 0.5, 1.0]   # basedataset.train_fraction
    # folds = [1, 2, 3, 4, 5]                        # basedataset.fold: fold k is the test set
    [slurm]                                    # optional: the SLURM launcher's resources per run
    partition = "gpu"
    time = "24:00:00"                          # or minutes
    gpus_per_task = 1
    cpus_per_task = 8
    mem_gb = 32
    array_parallelism = 8                      # runs at once
    setup = ["module load cuda"]               # shell lines before each run
    [slurm.extra]                              # any further sbatch option
    account = "my_account"

Each (variant, seed) is one ordinary run of the experiment:
``python <experiment> -F <folder>/runs/<variant>/seed_<s> with <with...> <variant's...> seed=<s>``.
With a [protocol], each (variant, protocol value, seed) is one, in ``<folder>/runs/<variant>/<value>/seed_<s>``
(the value's folder name: held_out_<domain>, fraction_<f>, fold_<k>), with the value's setting after the
variant's: ``basedataset.train_domains=[<training_domains but the held-out one>]``,
``basedataset.train_fraction=<f>`` or ``basedataset.fold=<k>``. The study cannot read an experiment's domains
without loading its data, so leave-one-domain-out names the domains it draws from (training_domains).
Relative paths (experiment, folder) are taken from the current folder, as the experiments' own command
lines are; they are resolved once, here, and the runs use absolute paths.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import re
import sys
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from errors import UserError

STUDY_KEYS = ("experiment", "seeds", "with", "variants", "baseline", "folder", "protocol", "slurm")
SLURM_KEYS = ("partition", "time", "gpus_per_task", "cpus_per_task", "mem_gb", "array_parallelism",
              "signal_delay_s", "setup", "extra")
DEFAULT_STUDIES_DIR = Path("studies")
RUNS_DIR = "runs"  # <study folder>/runs/<variant>/[<protocol value>/]seed_<s>/
# A variant name is a folder name: letters, digits, '_', '.', '-'.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
# Settings the study gives each run itself.
RESERVED_SETTINGS = ("seed", "resume")
# SLURM time formats (sbatch --time): minutes, minutes:seconds, hours:minutes:seconds, days-hours,
# days-hours:minutes, days-hours:minutes:seconds.
SLURM_TIME = re.compile(r"(?:(?P<days>\d+)-)?(?P<parts>\d+(?::\d+){0,2})")


class StudyError(UserError, ValueError):
    """A study file, folder or command line that cannot be used as given; the message says the fix."""


@dataclass(frozen=True)
class ProtocolKind:
    """A protocol of the [protocol] table: its key there, the report.csv column of its values, the run setting
    each value gives, and the prefix of a value's folder name."""

    key: str
    column: str
    setting: str
    folder_prefix: str


PROTOCOLS = {kind.key: kind for kind in (
    ProtocolKind("held_out_domains", "held_out_domain", "basedataset.train_domains", "held_out_"),
    ProtocolKind("train_fractions", "train_fraction", "basedataset.train_fraction", "fraction_"),
    ProtocolKind("folds", "fold", "basedataset.fold", "fold_"),
)}
PROTOCOL_KEYS = (*PROTOCOLS, "training_domains")


@dataclass(frozen=True)
class ProtocolValue:
    """One value of a study's protocol: a held-out domain (str), a training fraction (float) or a fold (int).

    label: its folder name (held_out_acoustic, fraction_0.25, fold_3); setting: what it adds to a run."""

    kind: ProtocolKind
    value: str | float | int
    label: str
    setting: str


@dataclass(frozen=True)
class Protocol:
    """The [protocol] table: one protocol and its values; training_domains: what leave-one-domain-out's runs
    train on, less the held-out domain (empty for the other protocols)."""

    kind: ProtocolKind
    values: tuple[ProtocolValue, ...]
    training_domains: tuple[str, ...] = ()

    def value(self, label: str) -> ProtocolValue:
        return next(value for value in self.values if value.label == label)


@dataclass(frozen=True)
class Run:
    """One (variant, seed) of a study: an ordinary run of the experiment.

    base: the FileStorageObserver's base folder; Sacred numbers the attempts 1, 2, ... inside it.
    command: the command line of a new training (a continued one adds resume=<attempt folder>).
    cwd: the folder the command runs in.
    """

    variant: str
    seed: int
    base: Path
    command: tuple[str, ...]
    cwd: Path
    protocol: ProtocolValue | None = None

    @property
    def label(self) -> str | None:
        """The protocol value's folder name, None without a protocol."""
        return None if self.protocol is None else self.protocol.label

    @property
    def name(self) -> str:
        return "/".join(part for part in (self.variant, self.label, f"seed_{self.seed}") if part)

    def resumed_command(self, attempt: Path | None) -> list[str]:
        """The command line continuing the training of ``attempt`` (a run folder), or a new one (None)."""
        return [*self.command, f"resume={attempt}"] if attempt is not None else list(self.command)


@dataclass(frozen=True)
class Study:
    """A parsed, validated study file.

    source: the file's text, recorded in the study folder; settings: the ``with`` list (every run);
    variants: name -> the settings it adds; protocol: the [protocol] table or None; slurm: the [slurm] table
    (see :data:`SLURM_KEYS`).
    """

    path: Path
    source: str
    experiment: Path
    seeds: tuple[int, ...]
    settings: tuple[str, ...]
    variants: dict[str, tuple[str, ...]]
    baseline: str
    folder: Path
    cwd: Path
    python: str = sys.executable
    slurm: dict[str, Any] = field(default_factory=dict)
    protocol: Protocol | None = None

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def protocol_values(self) -> tuple[ProtocolValue | None, ...]:
        """The protocol's values, or (None,) for a study without one."""
        return self.protocol.values if self.protocol is not None else (None,)

    def run(self, variant: str, seed: int, value: ProtocolValue | None = None) -> Run:
        if (value is None) != (self.protocol is None):
            raise ValueError(f"a run of study {self.name} needs {'a' if self.protocol else 'no'} protocol value")
        parts = (variant, value.label, f"seed_{seed}") if value is not None else (variant, f"seed_{seed}")
        base = self.folder.joinpath(RUNS_DIR, *parts)
        command = (self.python, str(self.experiment), "-F", str(base), "with", *self.settings,
                   *self.variants[variant], *((value.setting,) if value is not None else ()), f"seed={seed}")
        return Run(variant, seed, base, command, self.cwd, value)

    def runs(self) -> list[Run]:
        """Every run, seed by seed (all variants and protocol values of the first seed first, so a partial study
        compares them all)."""
        return [self.run(variant, seed, value) for seed in self.seeds for value in self.protocol_values
                for variant in self.variants]


def load_study(path: str | Path, folder: str | Path | None = None, cwd: Path | None = None) -> Study:
    """Read and check the study file at ``path``; ``folder`` (the command line's) wins over the file's."""
    path = Path(path)
    cwd = (cwd or Path.cwd()).resolve()
    try:
        source = path.read_text()
    except OSError as error:
        raise StudyError(f"cannot read the study file {path}: {error.strerror}; give the path of a .toml "
                         f"file.") from None
    try:
        table = tomllib.loads(source)
    except tomllib.TOMLDecodeError as error:
        raise StudyError(f"{path} is not valid TOML: {error}") from None
    return parse_study(table, path, source, folder, cwd)


def parse_study(table: Mapping[str, Any], path: Path, source: str, folder: str | Path | None, cwd: Path) -> Study:
    """The Study a study file's parsed table describes (see the module's docstring)."""
    _refuse_unknown(table, STUDY_KEYS, f"{path}")
    for key in ("experiment", "seeds", "variants"):
        if key not in table:
            raise StudyError(f"{path}: no '{key}'; a study file needs experiment, seeds and [variants] "
                             f"(see studies/frito_forms_demo.toml).")
    experiment = _path(table["experiment"], "experiment", path, cwd)
    if not experiment.is_file():
        raise StudyError(f"{path}: experiment = {table['experiment']!r}: no such file {experiment} (relative paths "
                         f"are taken from the current folder {cwd}); give the experiment script, e.g. ex_dcase20.py.")
    seeds = table["seeds"]
    if (not isinstance(seeds, list) or not seeds or not all(type(seed) is int for seed in seeds)
            or len(set(seeds)) != len(seeds)):
        raise StudyError(f"{path}: seeds = {seeds!r}; expected a list of distinct integers, e.g. seeds = [1, 2, 3].")
    settings = _settings(table.get("with", []), "with", path)
    variants = _variants(table["variants"], path)
    baseline = _baseline(table, variants, path)
    if folder is None and "folder" in table:
        folder = _path(table["folder"], "folder", path, cwd)
    folder = Path(cwd / (folder if folder is not None else DEFAULT_STUDIES_DIR / path.stem)).resolve()
    slurm = _slurm(table.get("slurm", {}), path)
    protocol = _protocol(table["protocol"], path) if "protocol" in table else None
    if protocol is not None:
        for where, items in (("with", settings), *((f"variant {name}", items) for name, items in variants.items())):
            for item in items:
                if item.split("=", 1)[0].strip() == protocol.kind.setting:
                    raise StudyError(f"{path}: {where} sets {item!r}; the [protocol] {protocol.kind.key} sets "
                                     f"{protocol.kind.setting} for each run itself. Remove it.")
    return Study(path=path, source=source, experiment=experiment, seeds=tuple(seeds), settings=settings,
                 variants=variants, baseline=baseline, folder=folder, cwd=cwd, slurm=slurm, protocol=protocol)


def merge_slurm_options(study: Study, options: Sequence[str]) -> Study:
    """``study`` with command-line [slurm] settings (KEY=VALUE; extra.OPTION=VALUE for an sbatch option) over
    the file's. Numbers are read as numbers (60, 8.5), anything else as text."""
    if not options:
        return study
    slurm = {**study.slurm, "extra": dict(study.slurm.get("extra", {}))}
    for option in options:
        key, separator, raw = option.partition("=")
        if not separator or not key:
            raise StudyError(f"--slurm {option!r}: expected KEY=VALUE, e.g. --slurm partition=gpu.")
        try:
            value = tomllib.loads(f"value = {raw}")["value"]
        except tomllib.TOMLDecodeError:
            value = raw
        if not isinstance(value, int | float | str):  # e.g. 12:00:00 reads as a TOML time: SLURM's text
            value = raw
        if key.startswith("extra."):
            slurm["extra"][key.removeprefix("extra.")] = value
        else:
            slurm[key] = value
    if not slurm["extra"]:
        del slurm["extra"]
    return dataclasses.replace(study, slurm=_slurm(slurm, Path("--slurm")))


def slurm_minutes(value: int | str, where: str = "time") -> int:
    """A SLURM time limit (minutes, or sbatch's "[days-]hours:minutes:seconds" forms) in whole minutes."""
    if type(value) is int and value > 0:
        return value
    match = SLURM_TIME.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise StudyError(f"{where} = {value!r}; expected minutes (an integer) or a SLURM time such as "
                         f"'24:00:00' or '2-12:00:00'.")
    parts = [int(part) for part in match["parts"].split(":")]
    days = int(match["days"] or 0)
    if match["days"] is not None:  # days-hours[:minutes[:seconds]]
        hours, minutes, seconds = (parts + [0, 0])[:3]
    elif len(parts) == 3:
        hours, minutes, seconds = parts
    else:  # minutes[:seconds]
        hours, (minutes, seconds) = 0, (parts + [0])[:2]
    total = days * 24 * 60 + hours * 60 + minutes + (1 if seconds else 0)
    if total <= 0:
        raise StudyError(f"{where} = {value!r}: the time limit must be positive.")
    return total


def _path(value: Any, key: str, path: Path, cwd: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise StudyError(f"{path}: {key} = {value!r}; expected a path (a string).")
    return (cwd / Path(value).expanduser()).resolve()


def _settings(value: Any, where: str, path: Path) -> tuple[str, ...]:
    """A list of Sacred updates (key=value) and named configs, without the ones the study sets itself."""
    if not isinstance(value, list) or not all(isinstance(item, str) and item.strip() for item in value):
        raise StudyError(f"{path}: {where} = {value!r}; expected a list of settings such as "
                         f"[\"trainer.max_epochs=80\", \"freq_mixstyle\"].")
    for item in value:
        key = item.split("=", 1)[0].strip()
        if key in RESERVED_SETTINGS:
            raise StudyError(f"{path}: {where} sets {item!r}; the study sets {key} for each run itself "
                             f"(seeds = [...]; interrupted runs continue by themselves). Remove it.")
        if item.startswith("-"):
            raise StudyError(f"{path}: {where} holds the option {item!r}; a study passes the run folder (-F) "
                             f"itself and takes settings (key=value) and named configs only.")
    return tuple(value)


def _variants(value: Any, path: Path) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping) or not value:
        raise StudyError(f"{path}: [variants] must be a table of name = [settings], e.g. baseline = [] and "
                         f"per_row_1 = [\"models.net.rf_norm_t=per_row_1\"].")
    variants = {}
    for name, settings in value.items():
        if not NAME.fullmatch(name):
            raise StudyError(f"{path}: variant name {name!r} is also a folder name: use letters, digits, "
                             f"'_', '.' and '-' only.")
        variants[name] = _settings(settings, f"variant {name}", path)
    return variants


def _baseline(table: Mapping[str, Any], variants: Mapping[str, Sequence[str]], path: Path) -> str:
    """The file's ``baseline``, else the variant named baseline, else the first."""
    if "baseline" in table:
        name = table["baseline"]
        if name not in variants:
            raise StudyError(f"{path}: baseline = {name!r} is not a variant; the variants are {list(variants)}.")
        return name
    return "baseline" if "baseline" in variants else next(iter(variants))


def _protocol(value: Any, path: Path) -> Protocol:
    """The [protocol] table: exactly one of held_out_domains (with training_domains), train_fractions, folds."""
    where = f"{path} [protocol]"
    if not isinstance(value, Mapping):
        raise StudyError(f"{where} must be a table, e.g. [protocol] with folds = [1, 2, 3, 4, 5].")
    _refuse_unknown(value, PROTOCOL_KEYS, where)
    given = [key for key in PROTOCOLS if key in value]
    if len(given) != 1:
        found = f"it gives {' and '.join(given)}" if given else "it gives none"
        raise StudyError(f"{where}: a study has one protocol ({', '.join(PROTOCOLS)}); {found}. Write one study "
                         f"file per protocol.")
    kind = PROTOCOLS[given[0]]
    values = value[kind.key]
    if not isinstance(values, list) or not values:
        raise StudyError(f"{where}: {kind.key} = {values!r}; expected a non-empty list.")
    if kind.key == "held_out_domains":
        if "training_domains" not in value:
            raise StudyError(f"{where}: held_out_domains needs training_domains = [...], the domains the runs train "
                             f"on less the held-out one (the study does not read the dataset), e.g. "
                             f"training_domains = {values!r}.")
        training = value["training_domains"]
        if (not isinstance(training, list) or len(training) < 2 or not all(isinstance(name, str) for name in training)
                or len(set(training)) != len(training)):
            raise StudyError(f"{where}: training_domains = {training!r}; expected two or more distinct domain names.")
        if (not all(isinstance(name, str) and NAME.fullmatch(name) for name in values)
                or len(set(values)) != len(values)):
            raise StudyError(f"{where}: held_out_domains = {values!r}; expected distinct domain names made of "
                             f"letters, digits, '_', '.' and '-' (they name folders).")
        outside = [name for name in values if name not in training]
        if outside:
            raise StudyError(f"{where}: held-out domains {outside} are not among training_domains {training}; a "
                             f"held-out domain is one of the domains the study trains on.")
        return Protocol(kind, tuple(
            ProtocolValue(kind, name, f"{kind.folder_prefix}{name}",
                          f"{kind.setting}={_json_list([other for other in training if other != name])}")
            for name in values), tuple(training))
    if "training_domains" in value:
        raise StudyError(f"{where}: training_domains goes with held_out_domains only; remove it (the runs of "
                         f"{kind.key} train on the experiment's own training domains).")
    if kind.key == "train_fractions":
        if (not all(type(number) in (int, float) and 0 < number <= 1 for number in values)
                or len({float(number) for number in values}) != len(values)):
            raise StudyError(f"{where}: train_fractions = {values!r}; expected distinct fractions in (0, 1], e.g. "
                             f"[0.05, 0.1, 0.25, 0.5, 1.0].")
        return Protocol(kind, tuple(ProtocolValue(kind, float(number), f"{kind.folder_prefix}{float(number)!r}",
                                                  f"{kind.setting}={float(number)!r}") for number in values))
    if not all(type(number) is int and number >= 0 for number in values) or len(set(values)) != len(values):
        raise StudyError(f"{where}: folds = {values!r}; expected distinct fold numbers (integers >= 0) as the "
                         f"dataset's fold column gives them, e.g. [1, 2, 3, 4, 5].")
    return Protocol(kind, tuple(ProtocolValue(kind, number, f"{kind.folder_prefix}{number}",
                                              f"{kind.setting}={number}") for number in values))


def _json_list(names: Sequence[str]) -> str:
    """A list as a Sacred command-line value: ["a","b"] (one argument, no spaces)."""
    return json.dumps(list(names), separators=(",", ":"))


def _slurm(value: Any, path: Path) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise StudyError(f"{path}: slurm must be a table ([slurm]) of {', '.join(SLURM_KEYS)}.")
    _refuse_unknown(value, SLURM_KEYS, f"{path} [slurm]")
    slurm = dict(value)
    if "time" in slurm:
        slurm_minutes(slurm["time"], f"{path} [slurm] time")
    for key in ("gpus_per_task", "cpus_per_task", "array_parallelism", "signal_delay_s"):
        if key in slurm and (type(slurm[key]) is not int or slurm[key] < 0):
            raise StudyError(f"{path} [slurm] {key} = {slurm[key]!r}; expected a non-negative integer.")
    if "mem_gb" in slurm and (type(slurm["mem_gb"]) not in (int, float) or slurm["mem_gb"] <= 0):
        raise StudyError(f"{path} [slurm] mem_gb = {slurm['mem_gb']!r}; expected a positive number of GB.")
    if "partition" in slurm and not isinstance(slurm["partition"], str):
        raise StudyError(f"{path} [slurm] partition = {slurm['partition']!r}; expected a partition name.")
    if "setup" in slurm and not (isinstance(slurm["setup"], list)
                                 and all(isinstance(line, str) for line in slurm["setup"])):
        raise StudyError(f"{path} [slurm] setup = {slurm['setup']!r}; expected a list of shell lines.")
    if "extra" in slurm and not isinstance(slurm["extra"], Mapping):
        raise StudyError(f"{path} [slurm] extra must be a table of sbatch options ([slurm.extra]).")
    return slurm


def _refuse_unknown(table: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise StudyError(f"{where}: unknown key {key!r}; the keys are {', '.join(known)}.{hint}")
