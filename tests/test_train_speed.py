"""Training speed: FLOP counting, the CPU's peak, cached backbone features."""

from __future__ import annotations

import json
from types import SimpleNamespace

import keras
import numpy as np
import pytest

import cvprep
from cvprep.errors import ParameterError
from cvprep.training import TrainConfig, export, predict, train
from cvprep.training.compute import (
    cpu_flags,
    cpu_ghz,
    cpu_peak,
    cpu_ticks,
    forward_flops,
    has_native_bf16,
    leaf_layers,
    resolve_precision,
    training_flops,
)
from cvprep.training.data import CachedImages, make_dataset
from cvprep.training.features import (
    Features,
    FrozenBackbone,
    _val_data,
    compute_features,
    cut_backbone,
    split_at_pooling,
    train_data,
)
from cvprep.training.models import build_cnn, build_training_model
from cvprep.training.plan import resolve_plan
from cvprep.training.run import load_run
from tests.conftest import SHARED_WEIGHTS
from tests.test_training import make_stripes

ZEN4 = """processor : 0
vendor_id : AuthenticAMD
cpu family : 25
model : 17
model name : AMD EPYC 9R14 96-Core Processor
cpu MHz : 2600.000
flags : fpu sse2 avx2 fma avx512f avx512bw avx512_bf16 avx512_vnni clwb
"""
ICE_LAKE = """processor : 0
vendor_id : GenuineIntel
cpu family : 6
model : 106
model name : Intel(R) Xeon(R) Processor @ 2.80GHz
cpu MHz : 2800.000
flags : fpu sse2 avx2 fma avx512f avx512bw avx512_vnni
"""


@pytest.fixture(scope="module")
def stripes(tmp_path_factory):
    return make_stripes(tmp_path_factory.mktemp("stripes"), {"train": 12, "val": 4})


def test_cpu_peak_and_bf16_from_the_flags():
    assert has_native_bf16(cpu_flags(ZEN4)) and not has_native_bf16(cpu_flags(ICE_LAKE))
    assert cpu_ghz(ICE_LAKE) == 2.8 and cpu_ghz(ZEN4) == 2.6  # no "@": the MHz line
    assert cpu_peak(ICE_LAKE, cores=2).gflops == pytest.approx(2 * 2.8 * 64)
    avx2 = ICE_LAKE.replace(" avx512f avx512bw avx512_vnni", "")
    assert cpu_peak(avx2, cores=4).gflops == pytest.approx(4 * 2.8 * 32)
    assert cpu_flags("no flags here") == frozenset()


def test_amd_peaks_count_the_width_of_the_fma_pipes_not_of_the_instructions():
    # Zen 4 runs AVX-512 as two 256-bit halves: the peak of the issue's 2-core EPYC is half
    # what its flags alone would say.
    assert cpu_peak(ZEN4, cores=2).gflops == pytest.approx(2 * 2.6 * 32)
    assert "256-bit" in cpu_peak(ZEN4, cores=2).describe()
    zen5 = ZEN4.replace("cpu family : 25", "cpu family : 26").replace("model : 17", "model : 2")
    assert cpu_peak(zen5, cores=2).gflops == pytest.approx(2 * 2.6 * 64)
    strix_point = zen5.replace("model : 2", "model : 36")  # a laptop Zen 5: 256-bit pipes
    assert cpu_peak(strix_point, cores=2).gflops == pytest.approx(2 * 2.6 * 32)
    zen1 = ZEN4.replace("cpu family : 25", "cpu family : 23").replace(" avx512f avx512bw", "")
    zen1 = zen1.replace(" clwb", "").replace("model : 17", "model : 1")
    assert cpu_peak(zen1, cores=2).gflops == pytest.approx(2 * 2.6 * 16)
    zen2 = zen1.replace("model : 1", "model : 49")
    assert cpu_peak(zen2, cores=2).gflops == pytest.approx(2 * 2.6 * 32)
    generic_vm = zen1.replace("flags :", "flags : clwb")  # a Zen 3 host, family 0x17 model 1
    assert cpu_peak(generic_vm, cores=2).gflops == pytest.approx(2 * 2.6 * 32)
    hygon = zen1.replace("AuthenticAMD", "HygonGenuine").replace("flags :", "flags : clwb")
    assert cpu_peak(hygon, cores=2).gflops == pytest.approx(2 * 2.6 * 16)


def test_stolen_time_is_read_from_proc_stat():
    before = cpu_ticks("cpu  100 5 50 800 10 0 5 30 0 0\ncpu0 50 2 25 400 5 0 2 15 0 0\n")
    after = cpu_ticks("cpu  200 5 60 850 10 0 5 130 0 0\ncpu0 100 2 30 425 5 0 2 65 0 0\n")
    assert (before.stolen, before.total) == (30, 1000)
    assert after.stolen_share_since(before) == pytest.approx(100 / 260)
    assert after.stolen_share_since(after) == 0.0
    assert cpu_ticks("cpu  1 2 3 4\n") is None  # a kernel without the steal counter
    assert cpu_ticks("cpu  1 2 3 4 5 6 7 x\n") is None
    assert cpu_ticks("") is None


def test_flops_are_counted_from_each_layers_shapes():
    inputs = keras.Input((10, 10, 4))
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", name="dw")(inputs)
    x = keras.layers.Conv2D(6, 1, name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, name="fc")(x)
    model = keras.Model(inputs, outputs)
    expected = {"dw": 2 * 5 * 5 * 4 * 9, "pw": 2 * 5 * 5 * 6 * 4, "fc": 2 * 6 * 3}
    assert forward_flops(model) == expected
    assert training_flops(model) == 3 * sum(expected.values())
    model.get_layer("dw").trainable = False  # frozen below every trainable layer: forward only
    assert training_flops(model) == expected["dw"] + 3 * (expected["pw"] + expected["fc"])
    model.get_layer("dw").trainable = True
    model.get_layer("pw").trainable = False  # frozen above a trainable layer: input gradient
    assert training_flops(model) == 3 * expected["dw"] + 2 * expected["pw"] + 3 * expected["fc"]


def test_the_cnn_costs_what_the_issue_says():
    assert sum(forward_flops(build_cnn(150, 3, 2)).values()) / 1e9 == pytest.approx(0.70, abs=0.01)


def test_training_pipelines_run_without_tf_data_autotuning():
    # Its thread makes an iterator's teardown wait for its next wake-up: epochs, validation
    # passes and label-check fits ended up to seconds after their data (finish_pipeline).
    images = np.arange(6 * 4 * 4 * 3, dtype=np.uint8).reshape(6, 4, 4, 3)
    cached = CachedImages(images, np.array([0, 1, 0, 1, 0, 1]), [f"{i}.png" for i in range(6)])
    features = Features(images[None].astype(np.float16), np.array([[0, 1, 0, 1, 0, 1]]))
    plan = SimpleNamespace(config=SimpleNamespace(seed=3))
    pipelines = {
        "evaluation": make_dataset(cached, batch_size=4, num_classes=2),
        "training": make_dataset(cached, batch_size=4, num_classes=2, training=True),
        "augmented": make_dataset(
            cached, batch_size=4, num_classes=2, training=True, augment="medium"
        ),
        "features": train_data(features, plan, 4),
        "features_val": _val_data(features, 4),
    }
    for name, dataset in pipelines.items():
        assert dataset.options().autotune.enabled is False, name
        assert sum(len(labels) for _, labels in dataset) == 6, name


def test_the_head_on_pooled_features_is_the_classifier(stripes, tmp_path):
    config = TrainConfig(
        str(stripes), str(tmp_path), model="mobilenet", alpha=0.25, weights="none", img_size=32
    )
    plan = resolve_plan(config)
    core, _ = build_training_model(plan)
    extractor, head = split_at_pooling(core)
    images = np.random.default_rng(0).uniform(0, 255, (6, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(
        head(extractor(images)), core(images, training=False), rtol=1e-5, atol=1e-6
    )
    cached = CachedImages(images.astype(np.uint8), np.arange(6) % 2, [f"{i}" for i in range(6)])
    features = compute_features(extractor, cached, plan, views=3, seed=1)
    assert features.arrays.shape == (3, 6, extractor.output.shape[-1])
    mirrored = np.asarray(extractor(cached.images[:, :, ::-1].astype(np.float32)))
    plain = np.asarray(extractor(cached.images.astype(np.float32)))
    tolerance = 1e-4 * np.abs(plain).max()  # untrained weights: tiny outputs
    np.testing.assert_allclose(features.arrays[0], plain, rtol=1e-4, atol=tolerance)
    np.testing.assert_allclose(features.arrays[1], mirrored, rtol=1e-4, atol=tolerance)
    assert np.abs(mirrored - plain).max() > 100 * tolerance  # the mirror is another view
    np.testing.assert_array_equal(features.labels[1], cached.labels)
    change = np.abs(features.arrays[2] - features.arrays[0]).max()
    assert change > 0.01 * np.abs(features.arrays[0]).max()  # augmented


def _backbone_core(stripes, tmp_path, model, alpha, **options):
    config = TrainConfig(
        str(stripes),
        str(tmp_path),
        model=model,
        alpha=alpha,
        weights="none",
        img_size=32,
        **options,
    )
    plan = resolve_plan(config)
    return (*build_training_model(plan), plan)


def test_a_backbone_cut_below_its_unfrozen_layers_is_the_classifier(stripes, tmp_path):
    core, base, _ = _backbone_core(stripes, tmp_path, "mobilenet", 0.25)
    images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(np.float32)
    expected = np.asarray(core(images, training=False))
    cut = cut_backbone(core, base, 25)  # MobileNet's blocks 10-13
    assert cut is not None and base.layers[-25].name == "conv_dw_10"
    activations = cut.extractor(images)
    assert cut.shape == tuple(activations.shape[1:]) == (2, 2, 128)
    np.testing.assert_allclose(cut.upper(activations), expected, rtol=1e-5, atol=1e-6)
    _, head = split_at_pooling(core)
    np.testing.assert_allclose(head(cut.pooled(activations)), expected, rtol=1e-5, atol=1e-6)
    assert cut_backbone(core, base, 0) is None  # every layer unfrozen: nothing to cache
    assert cut_backbone(core, base, len(base.layers)) is None


def test_a_cut_across_a_skip_connection_is_refused(stripes, tmp_path):
    core, base, _ = _backbone_core(stripes, tmp_path, "mobilenet_v2", 0.35)
    names = [layer.name for layer in base.layers]

    def unfreezing_from(name):
        return len(names) - names.index(name)

    # block_15_add adds block_14_add's output to the block's own: a cut inside block 15
    # would leave that tensor below it; a cut at the block's input carries it.
    assert cut_backbone(core, base, unfreezing_from("block_15_project")) is None
    assert cut_backbone(core, base, unfreezing_from("block_15_expand")) is not None
    lines = []
    unfreeze = unfreezing_from("block_15_project")
    core, base, plan = _backbone_core(stripes, tmp_path, "mobilenet_v2", 0.35, unfreeze=unfreeze)
    assert FrozenBackbone(core, base, plan, {}, lines.append).fine_tuning_trainee() is None
    assert lines == [
        f"fine-tuning runs on images: a skip connection crosses the cut below the top "
        f"{unfreeze} layers of {base.name} (another --unfreeze can avoid it)"
    ]


def test_activations_too_large_for_memory_leave_fine_tuning_on_images(
    stripes, tmp_path, monkeypatch
):
    from cvprep.training import features

    core, base, plan = _backbone_core(stripes, tmp_path, "mobilenet", 0.25, unfreeze=25)
    images = np.zeros((10, 32, 32, 3), np.uint8)
    cached = {
        name: CachedImages(images, np.arange(10) % 2, [f"{i}" for i in range(10)])
        for name in ("train", "val")
    }
    # (2 views × 10 + 10) images × 2×2×128 activations × 2 bytes = 30,720 bytes
    monkeypatch.setattr(features, "memory_bytes", lambda: 4 * 30_720)
    assert (
        FrozenBackbone(core, base, plan, cached, lambda _: None).fine_tuning_trainee() is not None
    )
    monkeypatch.setattr(features, "memory_bytes", lambda: 4 * 30_719)
    lines = []
    assert FrozenBackbone(core, base, plan, cached, lines.append).fine_tuning_trainee() is None
    assert len(lines) == 1 and "would take 0.0 GiB" in lines[0]


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_WEIGHTS.is_file(), reason="../shared/weights is not present")
def test_fine_tuning_on_activations_trains_only_the_unfrozen_top(stripes, tmp_path):
    import h5py

    lines = []
    result = train(
        stripes,
        out=tmp_path / "run",
        model="mobilenet",
        alpha=0.25,
        weights=str(SHARED_WEIGHTS),
        img_size=64,
        epochs=2,
        fine_tune_epochs=2,
        fine_tune_learning_rate=1e-3,
        unfreeze=25,
        feature_views=2,
        batch_size=8,
        workers=0,
        log=lines.append,
    )
    assert any("activations below the unfrozen layers" in line for line in lines), lines
    assert not any("pooled backbone features" in line for line in lines)  # derived, not rerun
    assert len(result.history["val_loss"]) == 4
    backbone = load_run(tmp_path / "run").model.layers[-1].get_layer("mobilenet_0.25_64")
    with h5py.File(SHARED_WEIGHTS, "r") as weights:
        for name, moved in [("conv1", False), ("conv_pw_9", False), ("conv_pw_13", True)]:
            stored = weights[name][name]["kernel:0"][()]
            change = np.abs(backbone.get_layer(name).get_weights()[0] - stored).max()
            assert (change > 0) == moved, name


@pytest.mark.slow
@pytest.mark.parametrize("views", [0, 2])
def test_frozen_phase_on_features_or_images_is_recorded(stripes, tmp_path, views):
    result = train(
        stripes,
        out=tmp_path / "run",
        model="mobilenet",
        alpha=0.25,
        weights="none",
        img_size=32,
        epochs=2,
        fine_tune_epochs=0,
        batch_size=8,
        feature_views=views,
        workers=0,
    )
    assert json.loads((tmp_path / "run" / "config.json").read_text())["feature_views"] == views
    assert result.metrics["epochs_run"] == 2 and len(result.history["val_loss"]) == 2


def test_auto_precision_follows_the_cpu_flags(stripes, tmp_path, monkeypatch):
    from cvprep.training import compute

    assert resolve_precision("auto", cpu_flags(ICE_LAKE)) == "float32"  # bfloat16 emulated
    assert resolve_precision("auto", cpu_flags(ZEN4)) == compute.AUTO_ON_NATIVE_BF16
    assert resolve_precision("float32", cpu_flags(ZEN4)) == "float32"
    monkeypatch.setattr(compute, "AUTO_ON_NATIVE_BF16", "bfloat16")  # once measured faster
    assert resolve_precision("auto", cpu_flags(ZEN4)) == "bfloat16"
    assert resolve_precision("auto", cpu_flags(ICE_LAKE)) == "float32"
    monkeypatch.setattr(compute, "CPUINFO", tmp_path / "cpuinfo")
    (tmp_path / "cpuinfo").write_text(ZEN4)
    plan = resolve_plan(TrainConfig(str(stripes), str(tmp_path / "run")))
    assert plan.config.precision == "bfloat16" and plan.settings()["precision"] == "bfloat16"
    with pytest.raises(ParameterError, match="precision"):
        TrainConfig(str(stripes), str(tmp_path / "run"), precision="float16")


@pytest.mark.slow
def test_a_bfloat16_run_saves_a_float32_model(stripes, tmp_path):
    out = tmp_path / "bf16"
    config = TrainConfig(str(stripes), str(out), img_size=32, precision="bfloat16")
    core, _ = build_training_model(resolve_plan(config))
    assert {layer.compute_dtype for layer in core.layers[1:-1]} == {"bfloat16"}
    assert core.get_layer("prediction").compute_dtype == "float32"
    assert keras.config.dtype_policy().name == "float32"
    train(stripes, out=out, img_size=32, epochs=1, batch_size=8, precision="bfloat16", workers=0)
    assert keras.config.dtype_policy().name == "float32"  # restored after training
    assert json.loads((out / "config.json").read_text())["precision"] == "bfloat16"
    run = load_run(out)
    policies = {layer.dtype_policy.name for layer in leaf_layers(run.model)}
    assert "mixed_bfloat16" not in policies
    images = sorted((stripes / "val").rglob("*.png"))[:3]
    probabilities = run.model.predict(
        np.stack([cvprep.read_image(p).astype(np.float32) for p in images]), verbose=0
    )
    assert probabilities.dtype == np.float32
    for prediction in predict(out, images):
        assert sum(prediction.probabilities.values()) == pytest.approx(1, abs=1e-6)
    exported = export(out, "savedmodel")
    assert exported.max_difference < 1e-4


def test_fused_batch_normalization_trains_and_infers_as_keras_does(tmp_path, monkeypatch):
    import tensorflow as tf

    from cvprep.keras_layers.normalize import FusedBatchNormalization

    images = np.random.default_rng(0).normal(2, 3, (8, 10, 10, 5)).astype(np.float32)
    plain = keras.layers.BatchNormalization(momentum=0.9)
    fused = FusedBatchNormalization(momentum=0.9)
    for layer in (plain, fused):
        layer.build(images.shape)
    fused.set_weights(plain.get_weights())
    # Random weights per element: a loss that batch normalisation does not make constant.
    weights = np.random.default_rng(1).normal(size=images.shape).astype(np.float32)

    def step(layer):
        import tensorflow as tf

        x = tf.constant(images)
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(layer(x, training=True) * weights)
        return [np.asarray(g) for g in tape.gradient(loss, [x, *layer.trainable_variables])]

    for expected, got in zip(step(plain), step(fused), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * np.abs(expected).max())
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-5, atol=1e-6)
    # The moving variance takes the unbiased batch variance: n / (n - 1) with n = 800 pixels.
    np.testing.assert_allclose(fused.moving_variance, plain.moving_variance, rtol=2e-3)
    assert not np.allclose(fused.moving_variance, 1.0)  # it was updated
    np.testing.assert_allclose(fused(images), plain(images), rtol=1e-2, atol=1e-2)
    # Inference, fused too: Keras' outputs and input gradients for the same weights, also
    # when frozen (training=True then uses the moving statistics, as Keras' layer does).
    fused.set_weights(plain.get_weights())
    fused.trainable = plain.trainable = False
    np.testing.assert_allclose(
        fused(images, training=True), plain(images, training=True), atol=1e-5
    )
    fused_calls = []
    fused_batch_norm = tf.compat.v1.nn.fused_batch_norm

    def spy(*args, **kwargs):
        fused_calls.append(kwargs["is_training"])
        return fused_batch_norm(*args, **kwargs)

    monkeypatch.setattr(tf.compat.v1.nn, "fused_batch_norm", spy)

    def inference(layer):
        import tensorflow as tf

        x = tf.constant(images)
        with tf.GradientTape() as tape:
            tape.watch(x)
            outputs = layer(x)
            loss = tf.reduce_sum(outputs * weights)
        return np.asarray(outputs), np.asarray(tape.gradient(loss, x))

    for expected, got in zip(inference(plain), inference(fused), strict=True):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert fused_calls == [False]  # the fused kernel, in inference mode
    monkeypatch.undo()
    # Saved and loaded inside a model.
    inputs = keras.Input((10, 10, 5))
    model = keras.Model(inputs, FusedBatchNormalization(momentum=0.9)(inputs))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert type(loaded.layers[-1]).__name__ == "FusedBatchNormalization"
    np.testing.assert_allclose(loaded(images), model(images), atol=1e-6)
