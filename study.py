"""Studies: a grid of variants x seeds of one experiment, run, resumed and reported as one table.

    python study.py run studies/frito_forms_demo.toml                 # every run not completed yet, one at a time
    python study.py run STUDY.toml --parallel 4                       # 4 at a time (a GPU each, or a share of cores)
    python study.py run STUDY.toml --launcher slurm                   # one SLURM array job through submitit
    python study.py run STUDY.toml --dry-run                          # each run's state and command line
    python study.py report studies/frito_forms_demo.toml              # report.md, report.csv, report.png

The study file format is described in helpers/study/spec.py and docs/study.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

warnings.filterwarnings("ignore", "pkg_resources is deprecated", UserWarning)  # raised by importing sacred 0.8.7

from errors import UserError  # noqa: E402
from helpers.study.cli import LAUNCHERS, report_study, run_study  # noqa: E402
from helpers.study.local import Stopped  # noqa: E402
from helpers.study.spec import StudyError, load_study, merge_slurm_options  # noqa: E402
from helpers.study.table import RESAMPLES  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="study.py", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="run every (variant[, protocol value], seed) not completed yet; interrupted "
                                          "ones continue")
    report = commands.add_parser("report", help="one table over seeds, differences to the baseline with intervals")
    for command in (run, report):
        command.add_argument("study", help="the study file (TOML)")
        command.add_argument("--folder",
                             help="the study folder (default: folder = ... in the file, else studies/<file stem>)")
        command.add_argument("--debug", action="store_true",
                             help="show the traceback of an error in the study file, folder or command line")
    run.add_argument("--launcher", choices=LAUNCHERS, default="local",
                     help="local (default); slurm: one array job through submitit; submitit-local: the same tasks "
                          "through submitit's local executor")
    run.add_argument("--parallel", type=int, default=1, metavar="N",
                     help="local launcher: N runs at once, each on its own GPU, else on cores // N CPU threads")
    run.add_argument("--slurm", action="append", default=[], metavar="KEY=VALUE",
                     help="a [slurm] setting for this call, e.g. --slurm partition=gpu --slurm time=24:00:00 "
                          "--slurm extra.account=abc")
    run.add_argument("--dry-run", action="store_true", help="show each run's state and command; change nothing")
    report.add_argument("--resamples", type=int, default=RESAMPLES, help=f"bootstrap replicates (default {RESAMPLES})")
    arguments = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        study = load_study(arguments.study, arguments.folder)
        if arguments.command == "report":
            print(report_study(study, arguments.resamples))
            return 0
        study = merge_slurm_options(study, arguments.slurm)
        if arguments.launcher != "local" and arguments.parallel != 1:
            raise StudyError("--parallel is for the local launcher; on SLURM set array_parallelism in [slurm].")
        return run_study(study, arguments.launcher, arguments.parallel, arguments.dry_run)
    except UserError as error:  # a study file, folder or command line that cannot be used: its message says why
        if arguments.debug:
            raise
        print(f"study.py: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # before any run started
        print("study.py: interrupted", file=sys.stderr)
        return 130
    except Stopped as stop:
        print(f"study.py: {stop}; the runs in flight were stopped and continue with the next `study.py run`.",
              file=sys.stderr)
        return 128 + stop.signum


if __name__ == "__main__":
    sys.exit(main())
