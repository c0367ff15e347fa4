"""Resuming a killed run: the state of each finished epoch, written atomically, and read back
only when it is whole.

Keras' ``BackupAndRestore`` writes ``latest.weights.h5`` in place: a run killed while it
writes leaves a damaged file, and every rerun then fails in ``load_weights`` ("bad object
header version number") until the user deletes ``backup/``. Here each epoch's state (model
and optimizer variables) goes to a temporary file renamed into place, the two newest states
are kept, and a rerun loads the newest one that loads; a damaged file is reported and
removed, and without any whole state the phase starts again. The log says which happened.

Each phase's folder also records the settings its states were made with (``settings.json``):
a rerun with other settings (another ``--unfreeze``, ``--ops``, DATA, …) cannot continue
those states, so it says which settings changed, removes them, and starts the phase again.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras

STATE = "epoch-{:04d}.weights.h5"  # the state after that many epochs (absolute count)
KEEP = 2  # the newest state and the one before: a damaged newest file leaves a good one
SETTINGS = "settings.json"  # the settings the states of a folder were made with
# What Keras' BackupAndRestore wrote (cvprep 0.2 runs): read once, never written.
LEGACY_WEIGHTS, LEGACY_METADATA = "latest.weights.h5", "training_metadata.json"


def save_weights(model: Any, path: Path) -> None:
    """``model.save_weights`` made atomic (Keras wants the ``.weights.h5`` suffix)."""
    partial = path.with_name(f".{path.name.removesuffix('.weights.h5')}.partial.weights.h5")
    try:
        model.save_weights(partial)
        os.replace(partial, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()


def load_weights(model: Any, path: Path) -> str | None:
    """Load a weights file into ``model`` (optimizer state included); on failure, put every
    variable back as it was and return why it failed (None when it loaded)."""
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and not optimizer.built:
        optimizer.build(model.trainable_variables)  # the file holds its variables too
    variables = [*model.variables, *(optimizer.variables if optimizer is not None else [])]
    before = [v.numpy() for v in variables]
    try:
        model.load_weights(path)
    except Exception as exc:  # h5py and Keras raise many kinds of error on damage
        for variable, value in zip(variables, before, strict=True):
            variable.assign(value)
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def _states(folder: Path) -> list[tuple[int, Path]]:
    """(epoch, file) of every saved state, newest first; a legacy one last."""
    found = []
    for path in folder.glob("epoch-*.weights.h5"):
        match = re.fullmatch(r"epoch-(\d+)\.weights\.h5", path.name)
        if match:
            found.append((int(match.group(1)), path))
    found.sort(reverse=True)
    legacy = folder / LEGACY_WEIGHTS
    if legacy.is_file():
        found.append((_legacy_epoch(folder), legacy))
    return found


def _legacy_epoch(folder: Path) -> int:
    try:
        return int(json.loads((folder / LEGACY_METADATA).read_text())["epoch"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1  # no usable epoch: the state cannot be placed, so it is not used


def restore(model: Any, folder: Path, what: str, log: Callable[[str], None]) -> int:
    """Load the newest whole state of ``folder`` into ``model`` and return its epoch (0 when
    there is none: the phase starts from its beginning). ``what`` names the phase in the
    log lines."""
    damaged = []
    for epoch, path in _states(folder):
        problem = "its epoch is unknown" if epoch < 0 else load_weights(model, path)
        if problem is None:
            if damaged:
                log(f"warning: {'; '.join(damaged)}: {what} resumes after epoch {epoch}")
            return epoch
        damaged.append(f"backup {path} is damaged ({problem}) and was removed")
        path.unlink()
    if damaged:
        log(f"warning: {'; '.join(damaged)}: no whole backup left, {what} starts again")
    (folder / LEGACY_METADATA).unlink(missing_ok=True)
    return 0


def changed_settings(recorded: object, settings: dict[str, Any]) -> str | None:
    """What differs between the ``recorded`` settings of saved states and this run's (None:
    nothing, or nothing was recorded: states saved before cvprep recorded settings are tried
    as they are).

    >>> changed_settings({"unfreeze": 37, "alpha": 0.25}, {"unfreeze": 25, "alpha": 0.25})
    'unfreeze 37, now 25'
    """
    if not isinstance(recorded, dict) or recorded == settings:
        return None
    return (
        ", ".join(
            f"{key} {_shown(recorded.get(key))}, now {_shown(value)}"
            for key, value in settings.items()
            if recorded.get(key) != value
        )
        or "their record differs"
    )


def _shown(value: object) -> str:
    return "none" if value in ("", None) else str(value)


def read_settings(folder: Path) -> object:
    """The settings recorded in ``folder``; None when none are, or they cannot be read (the
    states are then tried as they are: a state that does not fit fails to load)."""
    try:
        return json.loads((folder / SETTINGS).read_text())
    except (OSError, ValueError):
        return None


def discard_other_settings(
    folder: Path, settings: dict[str, Any], what: str, log: Callable[[str], None]
) -> None:
    """Remove ``folder``'s states when they were made with other settings, saying which; then
    record ``settings`` there for the states this run saves."""
    from cvprep.io import atomic_write_bytes

    changed = changed_settings(read_settings(folder), settings)
    if changed is not None:
        log(
            f"warning: the backups in {folder} were made with other settings ({changed}) and "
            f"were removed: {what} starts again"
        )
        shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(folder / SETTINGS, json.dumps(settings, sort_keys=True).encode())


class EpochBackup(keras.callbacks.Callback):
    """Saves the state after every epoch whose loss is finite; remembers a diverged one."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.diverged_at: int | None = None  # 1-based epoch whose loss was NaN or infinite

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.diverged_at = epoch + 1
            return  # a diverged state is not worth resuming
        self.folder.mkdir(parents=True, exist_ok=True)
        save_weights(self.model, self.folder / STATE.format(epoch + 1))
        for _, old in _states(self.folder)[KEEP:]:
            old.unlink(missing_ok=True)


class BestCheckpoint(keras.callbacks.Callback):
    """``checkpoint.keras``: the model with the lowest validation loss so far in this phase,
    saved atomically (Keras' ``ModelCheckpoint(save_best_only=True)`` writes in place)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.best = math.inf

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        from cvprep.training.run import save_keras

        value = (logs or {}).get("val_loss")
        if value is not None and float(value) < self.best:
            self.best = float(value)
            save_keras(self.model, self.path)


def trim_history(path: Path, start: int) -> None:
    """Drop the rows of ``history.csv`` for epochs from ``start`` on: they are run again."""
    if not path.is_file():
        return
    from cvprep.io import atomic_write_bytes

    lines = path.read_text().splitlines(keepends=True)
    # A row cut short by a kill (no line end) goes too: its epoch is run again.
    kept = lines[:1] + [line for line in lines[1:] if line.endswith("\n") and _epoch(line) < start]
    if len(kept) != len(lines):
        atomic_write_bytes(path, "".join(kept).encode())


def _epoch(row: str) -> float:
    try:
        return int(row.split(",", 1)[0])
    except ValueError:
        return math.inf
