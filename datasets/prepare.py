"""Prepare a dataset's HDF5 caches ahead of training.

    python -m datasets.prepare dcase20 --base-dir ~/data/TAU2020 --cache-dir /scratch/frito
    python -m datasets.prepare nsynth --base-dir ~/data/nsynth --workers 8
    python -m datasets.prepare nsynth            # the demo data, generated on first use
    python -m datasets.prepare folder --base-dir ~/data/mine --csv labels.csv

The experiments' `prepare` command does the same with the experiment's configuration. Problems with the
data or the settings are reported as one message and exit status 1 (--debug adds the traceback). Several
runs may prepare the same data at once: one builds each cache file, the others wait for it.
"""

from __future__ import annotations

import argparse
import logging
import time

from datasets.registry import DATASETS
from errors import UserError

logger = logging.getLogger("datasets.prepare")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        prepare(args)
    except UserError as error:  # its message says what to fix
        if args.debug:
            raise
        raise SystemExit(f"error: {error}") from None  # printed to stderr, exit status 1


def prepare(args: argparse.Namespace) -> None:
    """Build the caches of every role of the dataset the command line describes."""
    package = DATASETS[args.dataset]
    settings = {
        "base_dir": args.base_dir,
        "cache_dir": args.cache_dir,
        "sample_rate": args.sample_rate,
        "cache_format": args.cache_format,
        "audio_dtype": args.audio_dtype,
        "resample_quality": args.resample_quality,
        "skip_bad_files": args.skip_bad_files,
        "prepare_workers": args.workers,
    }
    if args.csv is not None:
        if args.dataset != "folder":
            raise SystemExit("--csv applies to the folder dataset only")
        settings["csv"] = args.csv
    mel = {"sr": args.sample_rate} if args.cache_format == "spectrogram" else None
    start = time.perf_counter()
    data = package.Data(**{**package.DEFAULTS, **settings}, mel=mel)
    data.prepare()
    for split, path in data.cache_files().items():
        logger.info("%s %s: %s (%.1f MB)", args.dataset, split, path, path.stat().st_size / 1e6)
    for role, names in data.roles().items():
        logger.info("%s %s role: %d files", args.dataset, role, len(names))
    logger.info("done in %.1f s", time.perf_counter() - start)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset", choices=sorted(DATASETS))
    parser.add_argument("--base-dir", default=None, help="the downloaded dataset (default: generate the demo data)")
    parser.add_argument(
        "--cache-dir", default=None, help="where caches go (default: $FRITO_CACHE_DIR or ~/.cache/frito)"
    )
    parser.add_argument("--csv", default=None, help="folder dataset: the file list (default: <base-dir>/metadata.csv)")
    parser.add_argument("--workers", type=int, default=2, help="decoding processes (default: 2)")
    parser.add_argument("--sample-rate", type=int, default=32000)
    parser.add_argument(
        "--cache-format",
        choices=("waveform", "spectrogram"),
        default="waveform",
        help="spectrogram: eval-mode log-mel with the front-end's default settings",
    )
    parser.add_argument("--audio-dtype", choices=("int16", "float16"), default="int16")
    parser.add_argument("--resample-quality", choices=("HQ", "VHQ"), default="HQ")
    parser.add_argument("--skip-bad-files", action="store_true", help="leave out unusable files instead of stopping")
    parser.add_argument("--debug", action="store_true", help="show the traceback of errors in the data or settings")
    return parser


if __name__ == "__main__":
    main()
