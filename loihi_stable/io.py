"""Atomic file writes and safe checkpoint loading."""
from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import stat
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from . import interrupts, schema
from .errors import UserError

CHECKPOINT_FORMAT = "loihi-stable-checkpoint"
CHECKPOINT_VERSION = 1


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _remove_stale_temps(path: Path) -> None:
    """Temp files of ``path`` left by writers that were killed (their pid is gone)."""
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        pid = tmp.name[len(path.name) + 2:].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not Path(f"/proc/{pid}").exists():
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temp path beside ``path``; rename it into place only if the block succeeds.

    The file gets the permissions a plain ``open`` would (the umask, or the mode of the file it
    replaces); only regular files are ever replaced.
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        raise UserError(f"output folder '{path.parent}' does not exist: create it or choose another path")
    if os.path.lexists(path) and not (path.exists() and stat.S_ISREG(os.stat(path).st_mode)):
        raise UserError(f"'{path}' exists and is not a regular file: choose another output path")
    _remove_stale_temps(path)
    mode = stat.S_IMODE(os.stat(path).st_mode) if path.exists() else 0o666 & ~_umask()
    tmp = None
    try:
        with interrupts.deferred():  # no Ctrl-C between creating the temp file and owning its removal
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent or ".")
            os.close(fd)
        yield Path(tmp)
        # a Ctrl-C received on the way (even one that was swallowed) means: write nothing; one that comes
        # from here on waits until the file is in place and noted, so that the last line can name it
        with interrupts.deferred():
            os.chmod(tmp, mode)
            os.replace(tmp, path)
            interrupts.wrote(path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: str | os.PathLike, data: dict) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def checkpoint_from_bytes(data: bytes, source: str) -> dict:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"the checkpoint embedded in '{source}' is unreadable: re-export the file with "
                        "'loihi-stable export --to netx model.pt'") from None
    return _validated(payload, source)


def load_checkpoint(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint '{path}' not found: pass the .pt file written by 'loihi-stable train --out'")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol warning: the file is checked (and refused) below
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"'{path}' is not a loihi-stable checkpoint (unreadable by torch.load): "
                        "pass the .pt file written by 'loihi-stable train --out'") from None
    return _validated(payload, str(path))


@dataclass
class CheckpointFields:
    """The top-level fields a checkpoint may hold, and their types."""

    format: str
    version: int
    model_config: dict
    state_dict: dict
    train_config: dict
    metrics: dict
    history: list[dict]
    epoch: int
    best_accuracy: float
    optimizer: dict
    scheduler: dict
    scaler: dict
    rng: dict


@dataclass
class BestMetrics:
    best_val_clean: float
    best_epoch: int


def _validated(payload, source: str) -> dict:
    from .classifier import ModelConfig
    from .training import TrainConfig

    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"'{source}' is a torch file but not a loihi-stable checkpoint: "
                        "pass the .pt file written by 'loihi-stable train --out'")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise UserError(f"'{source}' has checkpoint version {payload.get('version')!r:.40}, this loihi-stable "
                        f"reads version {CHECKPOINT_VERSION}: retrain or upgrade loihi-stable")
    try:
        schema.check_fields(CheckpointFields, payload, "checkpoint")
        for key, cls in (("model_config", ModelConfig), ("train_config", TrainConfig), ("metrics", BestMetrics)):
            if key in payload:
                schema.check_fields(cls, payload[key], key)
    except ValueError as err:
        raise UserError(f"'{source}' is a damaged checkpoint ({err}): pass the .pt file written by "
                        "'loihi-stable train --out', or retrain") from None
    return payload
