"""A pytest plugin (``-p tests.doctest_namespace``): what the docstring examples of cvprep's
modules may use. ``tmp`` is a fresh folder; ``trained_run`` and ``raw_data`` are a tiny run
trained once per session on generated shapes (only for the examples that need it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

NEEDS_A_RUN = (
    "cvprep.training.evaluate",
    "cvprep.training.explain.explain",
    "cvprep.training.export",
    "cvprep.training.run",
    "cvprep.training.fit.train_with_config",
)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from cvprep.dataset import make_shapes_dataset, split
    from cvprep.training import train

    root = tmp_path_factory.mktemp("doctest-run")
    shapes = make_shapes_dataset(root / "shapes", per_class=16, size=48, seed=3)
    split(shapes, root / "data", ratios="0.5,0.25,0.25", seed=1, workers=0)
    train(root / "data", out=root / "run", img_size=48, epochs=2, batch_size=8, workers=0)
    return root / "run", root / "data"


@pytest.fixture(autouse=True)
def _doctest_names(request: pytest.FixtureRequest) -> None:
    if not isinstance(request.node, pytest.DoctestItem):
        return
    import cvprep

    namespace = request.getfixturevalue("doctest_namespace")
    namespace.update(np=np, cvprep=cvprep, tmp=request.getfixturevalue("tmp_path"))
    if request.node.name.startswith(NEEDS_A_RUN):
        namespace["trained_run"], namespace["raw_data"] = request.getfixturevalue("tiny_run")
