"""cvprep's operations as Keras 3 layers that match OpenCV's output.

Every layer takes ``H×W×C`` or ``B×H×W×C`` images holding values in [0, 255] (uint8 or float),
returns float32 in [0, 255], works inside a model and inside ``tf.data`` under the TensorFlow
and JAX backends, and saves, loads and exports. Parameters are validated by the same functions
as :mod:`cvprep.ops`.
"""

from cvprep.keras_layers.color import (
    CLAHE,
    Grayscale,
    HistogramEqualization,
    RandomBrightnessContrast,
)
from cvprep.keras_layers.edges import CannyEdges
from cvprep.keras_layers.filters import GaussianBlur, MedianBlur, RandomGaussianBlur
from cvprep.keras_layers.geometry import RandomAffine, RandomRotation, Resize, Rotate
from cvprep.keras_layers.normalize import InputScaling

__all__ = [
    "CLAHE",
    "CannyEdges",
    "GaussianBlur",
    "Grayscale",
    "HistogramEqualization",
    "InputScaling",
    "MedianBlur",
    "RandomAffine",
    "RandomBrightnessContrast",
    "RandomGaussianBlur",
    "RandomRotation",
    "Resize",
    "Rotate",
]
