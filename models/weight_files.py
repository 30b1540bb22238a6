"""Reading checkpoint files and downloading published ones into the torch hub cache.

Files are read without executing code: a torch pickle restricted to tensors and plain containers
(``weights_only=True``), or a ``.safetensors`` file. Downloads go once into the torch hub cache; offline,
the errors name the URL and the config key that takes a local file instead.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import socket
import zipfile
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch

from errors import UserError

logger = logging.getLogger(__name__)

PATH_KEY = "models.net.pretrained_path"
CONNECT_TIMEOUT_S = 5.0


class PretrainedError(UserError, ValueError):
    """A pretrained checkpoint that cannot be fetched, read, or fitted to the model being built."""


def fetch_checkpoint(url: str, what: str) -> dict:
    """Read a checkpoint from the torch hub cache, downloading it there first if it is missing."""
    cached = cached_path(url)
    filename = cached.name
    if not cached.exists():
        cached.parent.mkdir(parents=True, exist_ok=True)
        offline_fix = (
            f"Offline, fetch {url} on another machine and pass it with {PATH_KEY}=/path/to/{filename} "
            f"(or copy it to {cached}); or set models.net.pretrained=False to train from scratch."
        )
        host = urlparse(url).hostname
        try:
            socket.create_connection((host, 443), timeout=CONNECT_TIMEOUT_S).close()
        except OSError as error:
            raise PretrainedError(f"cannot reach {host} to download the {what} ({error}). {offline_fix}") from error
        match = torch.hub.HASH_REGEX.search(filename)
        logger.info("Downloading the %s from %s to %s", what, url, cached)
        try:
            torch.hub.download_url_to_file(url, str(cached), hash_prefix=match.group(1) if match else None)
        except (OSError, RuntimeError) as error:
            raise PretrainedError(f"downloading the {what} from {url} failed ({error}). {offline_fix}") from error
    try:
        return read_checkpoint(cached)
    except PretrainedError as error:
        raise PretrainedError(f"{error}. Delete the cached file {cached} to download it again.") from error


def cached_path(url: str) -> Path:
    """Where the torch hub cache keeps (or will keep) the file published at ``url``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load a checkpoint file (torch pickle restricted to tensors and containers, or safetensors)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise PretrainedError(f"pretrained checkpoint {path} does not exist; check {PATH_KEY}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            checkpoint = load_file(str(path), device="cpu")
        else:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        culprit = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
        if culprit:
            raise PretrainedError(
                f"{path} holds Python objects besides tensors and plain containers ({culprit.group(1)}), which "
                "are not loaded for safety. If you trust the file, load it with torch.load(..., weights_only=False) "
                "and re-save its tensors."
            ) from None
        raise PretrainedError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {error}") from None
    except (RuntimeError, EOFError, OSError, ValueError, LookupError, zipfile.BadZipFile) as error:
        raise PretrainedError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {error}") from None
    if not isinstance(checkpoint, Mapping):
        raise PretrainedError(f"{path} holds a {type(checkpoint).__name__}, not a state dict or checkpoint dict")
    return dict(checkpoint)
