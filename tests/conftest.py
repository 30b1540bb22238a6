"""Fixtures the test modules share: one demo cache per session, the experiments in process and as commands.

Independent reference computations (the rf_norm_t rules written out by hand, a plain softmax) are in
tests/oracles.py.
"""

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One demo data set and cache for the whole test session, in-process and command-line tests alike."""
    return tmp_path_factory.getbasetemp() / "frito-cache"


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """The test's temporary folder as the working directory (where runs/ is created without -F)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def frito(cache_dir):
    """Run an experiment's command line as a user types it: frito("ex_nsynth.py", "with", ..., cwd=folder).

    script: a file of the repository (or any path) ending in .py, else a module run with -m. The demo data
    comes from the session's cache folder; processes=N sets DDP=N; check=True asserts exit status 0 and
    shows the end of the output otherwise. Returns the CompletedProcess (text output)."""

    def run(script: str, *arguments: str, cwd: Path, processes: int | None = None, check: bool = True,
            env: dict | None = None) -> subprocess.CompletedProcess:
        environment = {**os.environ, "FRITO_CACHE_DIR": str(cache_dir), **(env or {})}
        environment.pop("DDP", None)
        if processes:
            environment["DDP"] = str(processes)
        command = [sys.executable, *([str(REPO / script)] if script.endswith(".py") else ["-m", script])]
        result = subprocess.run([*command, *arguments], cwd=cwd, env=environment, capture_output=True, text=True,
                                timeout=300)
        if check:
            assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result

    return run


@pytest.fixture(scope="session")
def load_experiment():
    """load_experiment("ex_nsynth"): the Sacred experiment of an experiment file, imported in this process."""

    def load(name: str):
        sys.path.insert(0, str(REPO))
        try:
            return importlib.import_module(name).ex
        finally:
            sys.path.remove(str(REPO))

    return load
