"""cvprep: classic OpenCV preprocessing as functions, Keras 3 layers and a CLI."""

from importlib.metadata import PackageNotFoundError, version

from cvprep.errors import CvprepError, ImageError
from cvprep.io import read_image, write_image
from cvprep.pipeline import Pipeline, SpecError

try:
    __version__ = version("cvprep")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

__all__ = [
    "CvprepError",
    "ImageError",
    "Pipeline",
    "SpecError",
    "__version__",
    "read_image",
    "write_image",
]
