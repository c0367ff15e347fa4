"""Images held in arrays: ``keras.datasets``' layout as a source, and :func:`from_arrays`.

``keras.datasets.mnist.load_data()`` and ``cifar10.load_data()`` return ``(x_train,
y_train), (x_test, y_test)``; the same arrays saved with ``numpy.savez`` (an ``.npz``) are a
source every dataset job reads, and :func:`from_arrays` writes them as folders of lossless
PNGs. Both name and encode an image the same way, so a split of the ``.npz`` and a split of
the folders ``from_arrays`` wrote are the same, file for file.

Rules for the arrays (one check, :func:`image_arrays` and :func:`label_array`):

- images ``N×H×W`` (grayscale), ``N×H×W×1`` (grayscale) or ``N×H×W×3`` (RGB), channels last;
- ``uint8`` as is; other integer types when every value is in [0, 255]; floats when every
  value is finite and in [0, 255] (rounded half to even, like :func:`cvprep.ops.to_uint8`).
  Floats that all lie in [0, 1] are refused: cvprep reads floats as [0, 255], so scale them
  (``x * 255``) rather than get black images;
- labels ``N`` or ``N×1`` (Keras' CIFAR-10 shape): non-negative integers, named by
  ``class_names`` (default: the numbers, zero-padded so that folders sort in class order), or
  the class names themselves (strings).
"""

from __future__ import annotations

import functools
import hashlib
import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from cvprep import params
from cvprep.dataset.labels import class_name_problem
from cvprep.dataset.output import (
    check_record,
    has_content,
    output_lock,
    read_record,
    remove_stale,
    write_record,
)
from cvprep.dataset.results import Progress, tracked
from cvprep.errors import CvprepError, ImageError, ParameterError, filesystem_errors
from cvprep.files import check_can_write
from cvprep.io import atomic_write_bytes, encode_image
from cvprep.ops import to_uint8

COMMAND = "from_arrays"
SPLIT_KEYS = {"train": ("x_train", "y_train"), "test": ("x_test", "y_test")}
CLASS_NAMES_KEY = "class_names"


# --------------------------------------------------------------------------- checks
def image_arrays(x: Any, name: str = "x") -> np.ndarray:
    """``x`` as ``uint8`` images (see the module docstring for the rules)."""
    array = np.asarray(x)
    check_image_shape(array.shape, array.dtype, name)
    if array.dtype == np.uint8:
        return array
    if np.issubdtype(array.dtype, np.integer):
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 255:
            raise ParameterError(
                f"`{name}` holds {array.dtype} values in [{low}, {high}]; images need values "
                "in [0, 255] (scale them to 8 bits first)"
            )
        return array.astype(np.uint8)
    if not np.all(np.isfinite(array)):
        raise ParameterError(f"`{name}` holds NaN or infinite values")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0 or high > 255:
        raise ParameterError(
            f"`{name}` holds float values in [{low:g}, {high:g}]; cvprep reads floats as "
            "values in [0, 255]"
        )
    if high <= 1.0:
        raise ParameterError(
            f"`{name}` holds float values in [{low:g}, {high:g}]: cvprep reads floats as "
            f"values in [0, 255], so these would be black images; pass {name} * 255"
        )
    return to_uint8(array)


def check_image_shape(shape: tuple[int, ...], dtype: np.dtype, name: str) -> None:
    """Channels-last images of a numeric type (see the module docstring)."""
    if dtype == np.bool_ or not (
        np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)
    ):
        raise params.fail(name, "an array of images (uint8, other integers or floats)", dtype)
    if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3):
        raise ParameterError(
            f"`{name}` of shape {shape} looks channels-first; pass channels-last images "
            f"({name}.transpose(0, 2, 3, 1))"
        )
    if not (len(shape) == 3 or (len(shape) == 4 and shape[3] in (1, 3))):
        raise ParameterError(
            f"`{name}` should be images N×H×W, N×H×W×1 or N×H×W×3. Received shape={shape}"
        )
    if shape[0] == 0 or min(shape[1:3]) == 0:
        raise ParameterError(f"`{name}` holds no image. Received shape={shape}")


def label_array(y: Any, count: int, name: str = "y") -> np.ndarray:
    """``y`` as a 1-D array of ``count`` non-negative integers or of class names."""
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2:
        raise ParameterError(
            f"`{name}` of shape {labels.shape} looks one-hot; pass {name}.argmax(axis=1)"
        )
    if labels.ndim != 1 or len(labels) != count:
        raise ParameterError(
            f"`{name}` should hold one label per image ({count}). Received shape={labels.shape}"
        )
    if labels.dtype.kind in "US" or (
        labels.dtype == object and all(isinstance(v, str) for v in labels)
    ):
        return labels.astype(str)
    if labels.dtype == np.bool_ or not np.issubdtype(labels.dtype, np.integer):
        raise ParameterError(
            f"`{name}` should hold integer class numbers or class names. "
            f"Received dtype={labels.dtype}"
        )
    if count and labels.min() < 0:
        raise ParameterError(f"`{name}` holds a negative class number ({labels.min()})")
    return labels.astype(np.int64)


MAX_CLASS_NUMBER = 100_000  # class numbers at or above it need class_names (a stray value)


def class_folders(labels: list[np.ndarray], class_names: Sequence[str] | None) -> list[str]:
    """The folder name of each class number (or each name, sorted, for string labels)."""
    if len({array.dtype.kind == "U" for array in labels}) > 1:
        raise ParameterError(
            "the labels of train and test should both be class numbers or both be class names"
        )
    if labels[0].dtype.kind == "U":
        if class_names is not None:
            raise ParameterError("`class_names` apply to integer labels; these are names")
        names = sorted({str(v) for array in labels for v in array})
    else:
        largest = max(int(array.max()) for array in labels)
        if class_names is None and largest >= MAX_CLASS_NUMBER:
            raise ParameterError(
                f"class numbers go up to {largest}: a folder per number up to it would be "
                f"made; give `class_names`, or check the labels (at most {MAX_CLASS_NUMBER - 1} "
                "without names)"
            )
        if class_names is None:
            names = [str(number).zfill(len(str(largest))) for number in range(largest + 1)]
        else:
            names = _check_class_names(class_names, largest)
    for name in names:
        reason = class_name_problem(name)
        if reason:
            raise ParameterError(f"`class_names`: {reason}")
    return names


def _check_class_names(class_names: Any, largest: int) -> list[str]:
    if isinstance(class_names, str | bytes) or not isinstance(class_names, Sequence | np.ndarray):
        raise params.fail("class_names", "a sequence of names, one per class number", class_names)
    names = [str(n) if isinstance(n, np.str_) else n for n in class_names]
    if not all(isinstance(n, str) for n in names):
        raise params.fail("class_names", "a sequence of names (text)", class_names)
    if len(names) <= largest:
        raise ParameterError(
            f"`class_names` has {len(names)} names, but the labels go up to {largest}"
        )
    if len(set(names)) != len(names):
        raise ParameterError(f"`class_names` names a class twice: {names}")
    return names


def member_relative(cls: str, index: int, count: int) -> str:
    """Where image ``index`` of an array of ``count`` goes: ``<class>/<index>.png``, the index
    zero-padded so that files sort in array order."""
    return f"{cls}/{index:0{len(str(count - 1))}d}.png"


def encode_png(image: np.ndarray) -> bytes:
    """Lossless, and the same bytes every time for the same pixels."""
    return encode_image(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image, ".png")


# --------------------------------------------------------------------------- .npz sources
@dataclass(frozen=True)
class ArrayOpener:
    """Image ``index`` of array ``key`` in an ``.npz``, encoded as PNG when read."""

    archive: str
    key: str
    index: int
    version: tuple[int, int]
    path = None

    def read(self) -> bytes:
        try:
            images = _images(self.archive, self.key, self.version)
        except (OSError, ValueError, zipfile.BadZipFile) as exc:
            raise ImageError(f"{self.archive}:{self.key}", "unreadable", str(exc)) from exc
        return encode_png(images[self.index])


@functools.lru_cache(maxsize=4)
def _images(archive: str, key: str, version: tuple[int, int]) -> np.ndarray:
    """A whole image array, loaded once per process (a worker encodes thousands of them)."""
    with np.load(archive, allow_pickle=False) as npz:
        return image_arrays(npz[key], key)


def release_arrays() -> None:
    """Drop the image arrays this process keeps (a job's end: memory goes back)."""
    _images.cache_clear()


@dataclass(frozen=True)
class ArrayMember:
    """One image of an ``.npz`` as a source lists it."""

    name: str
    cls: str
    relative: str
    split: str
    opener: ArrayOpener
    stamp: int


def npz_members(location: Path) -> list[ArrayMember]:
    """The images of an ``.npz`` in ``keras.datasets``' layout: ``x_train``, ``y_train``
    and optionally ``x_test``, ``y_test`` (kept as the ``test`` split) and ``class_names``."""
    info = location.stat()
    version = (info.st_mtime_ns, info.st_size)
    try:
        with np.load(location, allow_pickle=False) as npz:
            keys = set(npz.files)
            missing = {"x_train", "y_train"} - keys
            if missing or ("x_test" in keys) != ("y_test" in keys):
                raise ParameterError(
                    f"{location} is not in keras.datasets' layout (x_train, y_train[, x_test, "
                    f"y_test, class_names]); it holds: {', '.join(sorted(keys)) or 'nothing'}"
                )
            splits = [s for s, (xk, _) in SPLIT_KEYS.items() if xk in keys]
            counts = {s: _checked_images(npz, SPLIT_KEYS[s][0]) for s in splits}
            labels = {
                s: label_array(npz[SPLIT_KEYS[s][1]], counts[s], SPLIT_KEYS[s][1]) for s in splits
            }
            names = npz[CLASS_NAMES_KEY].tolist() if CLASS_NAMES_KEY in keys else None
    except (OSError, zipfile.BadZipFile, EOFError) as exc:
        if isinstance(exc, OSError) and exc.errno is not None:
            raise
        raise CvprepError(f"{location}: damaged .npz file ({exc})") from exc
    except ValueError as exc:
        if isinstance(exc, ParameterError):
            raise
        raise CvprepError(f"{location}: cannot read its arrays ({exc})") from exc
    folders = class_folders(list(labels.values()), names)
    members = []
    for split in splits:
        key, values = SPLIT_KEYS[split][0], labels[split]
        for index, label in enumerate(values.tolist()):
            cls = folders[label] if isinstance(label, int) else label
            members.append(
                ArrayMember(
                    f"{location.name}:{key}[{index}]",
                    cls,
                    member_relative(cls, index, len(values)),
                    split if len(splits) > 1 else "",
                    ArrayOpener(str(location), key, index, version),
                    info.st_mtime_ns,
                )
            )
    return members


def _checked_images(npz: Any, key: str) -> int:
    """The number of images in ``npz[key]``, its shape and type checked from the array's
    header alone (``uint8`` arrays are not loaded here; others are, for their values)."""
    with npz.zip.open(f"{key}.npy") as handle:
        version = np.lib.format.read_magic(handle)
        reader = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, _fortran, dtype = reader(handle)
    check_image_shape(tuple(shape), dtype, key)
    if dtype != np.uint8:
        image_arrays(npz[key], key)
    return int(shape[0])


# --------------------------------------------------------------------------- from_arrays
@dataclass
class ArraysResult:
    """What :func:`from_arrays` wrote: images per class (and split), files written, skipped
    (already there from an earlier run with the same arrays) and removed."""

    output: Path
    counts: dict[str, dict[str, int]]
    written: int = 0
    skipped: int = 0
    removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "output": str(self.output),
            "counts": self.counts,
            "written": self.written,
            "skipped": self.skipped,
            "removed": self.removed,
        }


@filesystem_errors
def from_arrays(
    x: npt.ArrayLike | tuple[Any, Any],
    y: npt.ArrayLike | tuple[Any, Any],
    output: str | os.PathLike[str],
    *,
    class_names: Sequence[str] | None = None,
    x_test: npt.ArrayLike | None = None,
    y_test: npt.ArrayLike | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
) -> ArraysResult:
    """Write images held in arrays as class folders of lossless PNGs.

    ``output/<class>/<index>.png``; with test arrays, ``output/train/<class>/…`` and
    ``output/test/<class>/…`` (``cvprep split`` keeps that test set and splits the rest).
    ``keras.datasets``' ``load_data()`` output is accepted as it is:
    ``from_arrays(*mnist.load_data(), "digits/")``.

    Writes are atomic, ``output/cvprep.json`` records the arrays' digest, and a re-run with
    the same arrays finishes an interrupted one; a non-empty folder made otherwise is
    refused unless ``overwrite``.

    Parameters
    ----------
    x, y : arrays, or the ``(x_train, y_train), (x_test, y_test)`` pairs of ``load_data()``
        Images (``N×H×W``, ``N×H×W×1`` or ``N×H×W×3``; uint8, or integers/floats in [0, 255])
        and their labels (``N`` or ``N×1``: class numbers or names).
    output : path
        The folder to write.
    class_names : sequence of str, optional
        The name of each class number (default: the numbers, zero-padded).
    x_test, y_test : arrays, optional
        A test set, written to ``output/test``.
    overwrite : bool
        Write into a folder made otherwise (its other files are kept).

    Returns
    -------
    ArraysResult

    Examples
    --------
    >>> from cvprep.dataset import from_arrays
    >>> x = np.zeros((4, 8, 8), np.uint8); x[:, 2:6, 2:6] = [[[0]], [[90]], [[180]], [[255]]]
    >>> result = from_arrays((x[:3], [0, 1, 1]), (x[3:], [1]), tmp / "digits",
    ...                      class_names=["zero", "one"])
    >>> result.counts
    {'one': {'train': 2, 'test': 1}, 'zero': {'train': 1, 'test': 0}}
    >>> sorted(str(p.relative_to(tmp / "digits")) for p in (tmp / "digits").rglob("*.png"))
    ['test/one/0.png', 'train/one/1.png', 'train/one/2.png', 'train/zero/0.png']
    """
    x, y, x_test, y_test = _unpack(x, y, x_test, y_test)
    parts = {"train": (x, y), "test": (x_test, y_test)} if x_test is not None else {"": (x, y)}
    images, labels = {}, {}
    for split, (xs, ys) in parts.items():
        suffix = "_test" if split == "test" else ""
        images[split] = image_arrays(xs, f"x{suffix}")
        labels[split] = label_array(ys, len(images[split]), f"y{suffix}")
    if len({array.dtype.kind for array in labels.values()}) > 1:
        raise ParameterError("`y` and `y_test` should both hold class numbers, or both names")
    folders = class_folders(list(labels.values()), class_names)
    out = Path(output)
    params.check_bool("overwrite", overwrite)
    check_can_write(out)
    files = {
        (f"{split}/" if split else "") + member_relative(cls, index, len(values)): (split, index)
        for split, values in labels.items()
        for index, cls in enumerate(_names(values, folders))
    }
    settings = {"arrays": _digest(images, labels, folders), "class_names": folders}
    with output_lock(out, COMMAND):
        owned = read_record(out).get("command") == COMMAND or not has_content(out)
        if not overwrite:
            check_record(out, COMMAND, settings)
        write_record(out, COMMAND, settings, status="in progress")
        result = ArraysResult(out, _counts(labels, folders))
        result.removed = remove_stale(out, set(files)) if owned else []
        for relative, (split, index) in tracked(files.items(), len(files), "writing", progress):
            target = out / relative
            if target.exists() and not overwrite:
                result.skipped += 1  # an earlier run with these arrays wrote it, atomically
                continue
            atomic_write_bytes(target, encode_png(images[split][index]))
            result.written += 1
        write_record(out, COMMAND, settings, status="finished", extra={"counts": result.counts})
    return result


def _unpack(x: Any, y: Any, x_test: Any, y_test: Any) -> tuple[Any, Any, Any, Any]:
    """Accept ``load_data()``'s ``(x_train, y_train), (x_test, y_test)`` as ``x, y``."""
    pairs = all(isinstance(v, tuple | list) and len(v) == 2 for v in (x, y))
    if pairs and all(np.ndim(part) >= 1 for part in (*x, *y)) and np.ndim(x[0]) >= 3:
        if x_test is not None or y_test is not None:
            raise ParameterError("give the test set once: as load_data()'s pair, or x_test=")
        return x[0], x[1], y[0], y[1]
    if (x_test is None) != (y_test is None):
        raise ParameterError("`x_test` and `y_test` go together")
    return x, y, x_test, y_test


def _names(values: np.ndarray, folders: list[str]) -> list[str]:
    return [folders[v] if isinstance(v, int) else v for v in values.tolist()]


def _counts(labels: dict[str, np.ndarray], folders: list[str]) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for name in sorted(folders):
        counts[name] = {
            split or "images": _names(values, folders).count(name)
            for split, values in labels.items()
        }
    return counts


def _digest(
    images: dict[str, np.ndarray], labels: dict[str, np.ndarray], folders: list[str]
) -> str:
    """What identifies the arrays: a re-run with other arrays is another dataset."""
    digest = hashlib.sha256()
    for split in sorted(images):
        digest.update(f"{split}:{images[split].shape}".encode())
        digest.update(np.ascontiguousarray(images[split]).data)
        digest.update(np.asarray(labels[split]).astype(str).tobytes())
    digest.update("\0".join(folders).encode())
    return digest.hexdigest()
