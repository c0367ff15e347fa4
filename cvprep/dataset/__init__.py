"""Dataset jobs as Python functions: the same work as ``cvprep verify/inspect/split/preprocess/
augment``.

Every function takes keyword arguments that mirror the command's options and returns a small
result object (counts per class, rejected files with reasons, the output path) that the CLI
renders as tables or JSON. Nothing here imports Click.

Every job reads a *source* (:mod:`cvprep.dataset.sources`): class folders, split folders, a
flat folder labelled by file names (``labels="name"``), a label table
(``labels="labels.csv"``), an archive holding any of these, or an ``.npz`` of arrays;
:func:`from_arrays` writes arrays (``keras.datasets``' ``load_data()``) as class folders.

>>> from cvprep.dataset import make_shapes_dataset, preprocess, split, verify
>>> photos = make_shapes_dataset(tmp / "photos", per_class=10)
>>> verify(photos, workers=0).ok
True
>>> split(photos, tmp / "data", seed=1, workers=0).rows["angular"]
{'train': 8, 'val': 1, 'test': 1, 'rejected': 0, 'excluded': 0}
>>> preprocess(tmp / "data", tmp / "prepped", "resize=32x32,equalize", workers=0).summary.total
{'ok': 20, 'skipped': 0, 'rejected': 0}
"""

from cvprep.dataset.arrays import ArraysResult, from_arrays
from cvprep.dataset.augment import AugmentResult, augment
from cvprep.dataset.engines import ENGINES, Engine, LocalEngine, RayEngine, make_engine
from cvprep.dataset.inspect import Finding, InspectResult, inspect
from cvprep.dataset.label_check import LabelCheck, LabelCheckResult
from cvprep.dataset.output import OutputBusyError, SettingsMismatchError
from cvprep.dataset.preprocess import PreprocessResult, preprocess
from cvprep.dataset.results import FileResult, Progress, Summary
from cvprep.dataset.sources import Source, SourceFile, open_source
from cvprep.dataset.split import SplitResult, split
from cvprep.dataset.synthetic import make_shapes_dataset
from cvprep.dataset.verify import VerifyResult, verify
from cvprep.files import EmptyTreeError

__all__ = [
    "ENGINES",
    "ArraysResult",
    "AugmentResult",
    "EmptyTreeError",
    "Engine",
    "FileResult",
    "Finding",
    "InspectResult",
    "LabelCheck",
    "LabelCheckResult",
    "LocalEngine",
    "OutputBusyError",
    "PreprocessResult",
    "Progress",
    "RayEngine",
    "SettingsMismatchError",
    "Source",
    "SourceFile",
    "SplitResult",
    "Summary",
    "VerifyResult",
    "augment",
    "from_arrays",
    "inspect",
    "make_engine",
    "make_shapes_dataset",
    "open_source",
    "preprocess",
    "split",
    "verify",
]
