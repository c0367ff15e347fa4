"""Layers survive saving, loading and exporting in a fresh process, TFLite, and JAX."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from cvprep import keras_layers as kl  # noqa: E402
from cvprep import ops  # noqa: E402
from tests.conftest import ROOT, load_photo  # noqa: E402

pytestmark = pytest.mark.slow

SIZE = 64


def all_layers_model():
    """One input, one output per layer (random layers included: they must pass through)."""
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    layers = [
        kl.Resize((32, 40), fit="pad"),
        kl.Grayscale(),
        kl.HistogramEqualization(),
        kl.CLAHE(tile_grid=(4, 4)),
        kl.GaussianBlur(5),
        kl.MedianBlur(3),
        kl.CannyEdges(50, 150),
        kl.Rotate(20),
        kl.RandomRotation(seed=1),
        kl.RandomGaussianBlur(probability=1.0, seed=1),
    ]
    return keras.Model(inputs, [layer(inputs) for layer in layers])


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    photos = [ops.resize(load_photo(n), (SIZE, SIZE)) for n in ("chelsea", "coffee")]
    return np.stack(photos).astype(np.float32)


def run_fresh(code: str, tmp_path: Path, env: dict[str, str] | None = None) -> None:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(code))
    result = subprocess.run(
        [sys.executable, str(script)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]


def test_keras_file_loads_in_a_fresh_process(tmp_path, batch):
    model = all_layers_model()
    expected = [np.asarray(o) for o in model.predict(batch, verbose=0)]
    model.save(tmp_path / "layers.keras")
    np.save(tmp_path / "batch.npy", batch)
    run_fresh(
        f"""
        import numpy as np, keras
        import cvprep.keras_layers  # registers cvprep's layers with Keras
        model = keras.saving.load_model({str(tmp_path / "layers.keras")!r})
        outputs = model.predict(np.load({str(tmp_path / "batch.npy")!r}), verbose=0)
        np.savez({str(tmp_path / "out.npz")!r}, *outputs)
    """,
        tmp_path,
    )
    loaded = np.load(tmp_path / "out.npz")
    for index, want in enumerate(expected):
        np.testing.assert_allclose(loaded[f"arr_{index}"], want, atol=1e-3)
    np.testing.assert_array_equal(expected[-2], batch)  # random layers inactive in predict
    np.testing.assert_array_equal(expected[-1], batch)


def test_export_serves_in_a_fresh_process(tmp_path, batch):
    model = all_layers_model()
    expected = [np.asarray(o) for o in model.predict(batch, verbose=0)]
    model.export(str(tmp_path / "exported"), verbose=False)
    np.save(tmp_path / "batch.npy", batch)
    run_fresh(
        f"""
        import numpy as np, tensorflow as tf  # no cvprep import: the export stands alone
        served = tf.saved_model.load({str(tmp_path / "exported")!r})
        outputs = served.serve(tf.constant(np.load({str(tmp_path / "batch.npy")!r})))
        np.savez({str(tmp_path / "out.npz")!r}, *[o.numpy() for o in outputs])
    """,
        tmp_path,
    )
    loaded = np.load(tmp_path / "out.npz")
    for index, want in enumerate(expected):
        np.testing.assert_allclose(loaded[f"arr_{index}"], want, atol=1e-3)
    # Exported models call the model without training=False: random layers must not act.
    np.testing.assert_array_equal(loaded[f"arr_{len(expected) - 1}"], batch)


def test_tflite_with_builtin_ops_only(batch):
    model = all_layers_model()
    expected = [np.asarray(o) for o in model.predict(batch[:1], verbose=0)]
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints signatures
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        converted = converter.convert()
    runner = tf.lite.Interpreter(model_content=converted).get_signature_runner()
    outputs = runner(image=batch[:1])
    assert len(outputs) == len(expected)
    for index, want in enumerate(expected):  # paired by position: output_i is model output i
        got = outputs[f"output_{index}"]
        assert got.shape == want.shape, index
        assert np.abs(got - want).max() <= 1.0, (index, model.outputs[index].name)


def test_jax_backend_model_and_tf_data(tmp_path):
    pytest.importorskip("jax")
    run_fresh(
        """
        import json, numpy as np, keras, tensorflow as tf
        assert keras.backend.backend() == "jax"
        from cvprep import Pipeline, ops
        from tests.conftest import load_photo
        results = {}
        photo = ops.resize(load_photo("chelsea"), (60, 80))
        for spec in ["resize=32x40:fit=pad", "grayscale", "equalize", "clahe=2:tile_grid=4x4",
                     "gaussian_blur=5", "median_blur=3", "rotate=20", "canny=50:150"]:
            pipeline = Pipeline.parse(spec)
            model = pipeline.to_keras(input_shape=(60, 80, 3))
            got = np.asarray(model.predict(photo[None], verbose=0))[0]
            want = pipeline.apply(photo).astype(np.float32)
            want = want[..., None] if want.ndim == 2 else want
            if spec.startswith("canny"):
                both = ((got > 0) & (want > 0)).sum()
                results[spec] = float(2 * both / max((got > 0).sum() + (want > 0).sum(), 1))
            else:
                results[spec] = float(np.abs(np.rint(got) - want)[2:-2, 2:-2].max())
        layers = Pipeline.parse("resize=32x32,equalize,gaussian_blur=3").layers()
        def prep(image):
            for layer in layers:
                image = layer(image)
            return image
        ds = tf.data.Dataset.from_tensor_slices(photo[None].astype("float32")).map(prep)
        (out,) = list(ds.as_numpy_iterator())
        want = Pipeline.parse("resize=32x32,equalize,gaussian_blur=3").apply(photo)
        results["tf.data"] = float(np.abs(np.rint(out) - want).max())
        print(json.dumps(results))
        open("RESULT_PATH", "w").write(json.dumps(results))
    """.replace("RESULT_PATH", str(tmp_path / "jax.json")),
        tmp_path,
        env={"KERAS_BACKEND": "jax"},
    )
    results = json.loads((tmp_path / "jax.json").read_text())
    assert results.pop("canny=50:150") >= 0.95
    assert all(value <= 2 for value in results.values()), results
