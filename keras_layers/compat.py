"""Every private Keras name cvprep uses, in one place, beside the version range it was
tested with.

cvprep's layers build on Keras' private ``DataLayer``
(``keras/src/layers/preprocessing/data_layer.py``): its ``__call__`` makes ``self.backend``
the TensorFlow backend while tracing inside ``tf.data`` and the configured backend (TensorFlow
or JAX) elsewhere, and its ``_get_seed_generator`` gives a random layer the seed generator of
the backend it is running on. Keras' own preprocessing layers are built the same way. Nothing
else in cvprep reaches into ``keras.src``: a Keras upgrade that moves these names breaks this
module, and ``tests/test_layers.py`` checks that each of them still exists.

``KERAS_VERSIONS`` is the range pinned in ``pyproject.toml`` (a test checks that they agree).
"""

from __future__ import annotations

import warnings
from typing import Any

import keras

KERAS_VERSIONS = ((3, 13), (3, 16))
"""Tested Keras versions: at least the first, below the second (``keras>=3.13,<3.16``)."""

# (module, attribute path) of every private name used below.
PRIVATE_NAMES = (
    ("keras.src.layers.preprocessing.data_layer", "DataLayer"),
    ("keras.src.layers.preprocessing.data_layer", "DataLayer._get_seed_generator"),
    ("keras.src.utils.backend_utils", "DynamicBackend.name"),
)


def keras_version() -> tuple[int, int]:
    major, minor = keras.__version__.split(".")[:2]
    return int(major), int(minor)


def tested_keras() -> bool:
    low, high = KERAS_VERSIONS
    return low <= keras_version() < high


def _range_text() -> str:
    (a, b), (c, d) = KERAS_VERSIONS
    return f">={a}.{b},<{c}.{d}"


try:
    from keras.src.layers.preprocessing.data_layer import DataLayer
except ImportError as exc:  # moved or renamed by a Keras release cvprep does not know
    raise ImportError(
        f"cvprep.keras_layers needs Keras {_range_text()} (it builds on Keras' private "
        f"DataLayer); found Keras {keras.__version__}: {exc}"
    ) from exc

if not tested_keras():
    warnings.warn(
        f"cvprep.keras_layers was tested with Keras {_range_text()}, not {keras.__version__}: "
        "its layers build on Keras' private DataLayer",
        RuntimeWarning,
        stacklevel=2,
    )


def seed_generator(layer: DataLayer) -> Any:
    """The seed generator of the backend ``layer`` runs on now (TensorFlow inside ``tf.data``,
    else the configured one); the layer has ``seed`` and ``generator`` attributes."""
    return layer._get_seed_generator(layer.backend.name)


__all__ = [
    "KERAS_VERSIONS",
    "PRIVATE_NAMES",
    "DataLayer",
    "keras_version",
    "seed_generator",
    "tested_keras",
]
