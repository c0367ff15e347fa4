"""The networks: cvprep's CNN, the course's classic CNN, and keras.applications backbones.

The model trained by ``fit`` takes fixed-size images in [0, 255] (augmentation happens in the
input pipeline, so no random layer ends up in a saved model). The saved model wraps it so
that it takes raw RGB images of any size:

    raw image → recorded preprocessing + --ops (cvprep layers) → Resize → trained model
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from cvprep.training.compute import dtype_policy
from cvprep.training.config import BACKBONES
from cvprep.training.plan import TrainPlan


def head(x: Any, num_classes: int) -> Any:
    """One sigmoid unit for two classes, else a softmax; in float32 whatever the policy
    (with ``mixed_bfloat16``, the probabilities and the loss stay float32)."""
    import keras

    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="prediction", dtype="float32")(x)
    return keras.layers.Dense(
        num_classes, activation="softmax", name="prediction", dtype="float32"
    )(x)


def build_classic(size: int, channels: int, num_classes: int) -> Any:
    """The classic cats-vs-dogs CNN of the course: Conv 32→64→128→128 (3×3, ReLU) with 2×2
    max-pooling, Flatten, Dropout 0.5, Dense 512 ReLU, sigmoid (2 classes) or softmax."""
    import keras

    from cvprep.keras_layers import InputScaling

    inputs = keras.Input((size, size, channels))
    x = InputScaling("unit")(inputs)
    for filters in (32, 64, 128, 128):
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(512, activation="relu")(x)
    return keras.Model(inputs, head(x, num_classes), name="classic")


def _conv_bn(x: Any, filters: int, strides: int = 1, pool: bool = False) -> Any:
    import keras

    from cvprep.keras_layers.normalize import FusedBatchNormalization

    x = keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False)(x)
    if pool:
        # Pooled before normalisation and ReLU, which then touch a quarter of the values:
        # on a CPU they are bound by memory, and this made a training step about 10 %
        # faster, with validation accuracy as before (README, "Training speed").
        x = keras.layers.MaxPooling2D(2)(x)
    # Momentum 0.9, not Keras' 0.99: small datasets give few steps per epoch, and slow moving
    # statistics leave validation at chance for many epochs. Fused: a third of a training
    # step went to Keras' unfused batch normalisation (benchmarks/cnn_layers.py).
    x = FusedBatchNormalization(momentum=0.9)(x)
    return keras.layers.ReLU()(x)


# The layout of cvprep's CNN, recorded with a run's backups: weights saved by another layout
# have the same shapes but another meaning, so a resumed run must not load them.
NETWORK_VERSIONS = {"cnn": "2 (pooling before batch normalisation)"}
STRIDED_STEM = 32  # smaller inputs keep their full resolution in the stem
SMALLEST_MAP = 2  # the last convolution sees at least 2×2


def cnn_downsampling(size: int) -> tuple[int, int]:
    """(stem stride, number of 2×2 poolings) of :func:`build_cnn` for a ``size`` input.

    Inputs of 32 pixels and up (a CIFAR-10 image, a digit upscaled to 32) get the strided
    stem and three poolings, which leave a 2×2 map at 32; smaller ones lose the stem's stride
    and as many poolings as needed to leave at least a 2×2 map, so an 8-pixel digit is not
    pooled to nothing.

    Examples
    --------
    >>> [cnn_downsampling(s) for s in (8, 16, 32, 150)]
    [(1, 2), (1, 3), (2, 3), (2, 3)]
    """
    stride = 2 if size >= STRIDED_STEM else 1
    after_stem = -(-size // stride)
    pools = 0
    while pools < 3 and after_stem // 2 ** (pools + 1) >= SMALLEST_MAP:
        pools += 1
    return stride, pools


def build_cnn(size: int, channels: int, num_classes: int, *, any_size: bool = False) -> Any:
    """cvprep's CNN for training from scratch: a 3×3 stem, three stages of a 3×3
    convolution, 2×2 max-pooling and batch normalisation (64, 128, 256 filters), a last
    256-filter convolution, global average pooling, dropout 0.3. The stem is strided and
    every stage pools for photos; small inputs pool less (:func:`cnn_downsampling`).

    For photos about 1.5× the classic CNN's compute with a sixth of its weights (no 6272×512
    dense layer); measured on the dev photos it reaches 0.90 validation accuracy in 60 epochs
    where the classic one stops below 0.80, and 0.89-0.90 in 46 epochs of progressive
    resizing (README). It ends in global pooling, so the same weights run at any input size.

    ``any_size``: the input takes any height and width (progressive resizing trains on
    smaller copies first); ``size`` still decides the downsampling.
    """
    import keras

    from cvprep.keras_layers import InputScaling

    stride, pools = cnn_downsampling(size)
    inputs = keras.Input((None, None, channels) if any_size else (size, size, channels))
    x = InputScaling("unit")(inputs)
    x = _conv_bn(x, 32, strides=stride)
    for stage, filters in enumerate((64, 128, 256)):
        x = _conv_bn(x, filters, pool=stage < pools)
    x = _conv_bn(x, 256)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(inputs, head(x, num_classes), name="cnn")


def build_backbone(plan: TrainPlan) -> Any:
    import keras

    config = plan.config
    spec = BACKBONES[config.model]
    constructor = getattr(keras.applications, spec.constructor)
    kwargs: dict[str, Any] = {
        "input_shape": (plan.size, plan.size, 3),
        "include_top": False,
        "weights": None if config.weights == "none" else config.weights,
    }
    if spec.has_alpha:
        kwargs["alpha"] = config.alpha
    return constructor(**kwargs)


def build_training_model(plan: TrainPlan, *, fixed: bool = False) -> tuple[Any, Any]:
    """The model ``fit`` trains (the plan's channels; a fixed input size unless phase 1 has
    several, or ``fixed``), in the plan's precision; returns (model, backbone or None)."""
    with dtype_policy(plan.config.precision):
        return _build_training_model(plan, any_size=len(plan.stages) > 1 and not fixed)


def for_saving(core: Any, plan: TrainPlan) -> Any:
    """``core`` as the saved model holds it: float32 (a bfloat16 run is rebuilt; its
    variables are float32 already), for the plan's input size (a progressive run trained a
    network that takes any size), uncompiled, with its weights. Uncompiled: an optimizer's
    state is of no use to a model that predicts, and when only the models on cached
    features trained (:mod:`cvprep.training.features`), ``core``'s own optimizer never ran
    and Keras would warn at every load that its saved state does not match."""
    import keras

    if plan.config.precision == "float32" and len(plan.stages) == 1:
        copy = keras.models.clone_model(core)
    else:  # rebuilt: in float32, and for the input size it ended on
        config = replace(plan.config, precision="float32")
        copy, _ = build_training_model(replace(plan, config=config), fixed=True)
    copy.set_weights(core.get_weights())
    return copy


def _build_training_model(plan: TrainPlan, any_size: bool) -> tuple[Any, Any]:
    import keras

    from cvprep.keras_layers import InputScaling

    size, channels, model = plan.size, plan.preprocessing.channels, plan.config.model
    if model == "classic":
        return build_classic(size, channels, plan.num_classes), None
    if model == "cnn":
        return build_cnn(size, channels, plan.num_classes, any_size=any_size), None
    inputs = keras.Input((size, size, channels), name="image")
    x = inputs
    if channels == 1:  # backbones take RGB: repeat a grayscale channel
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = InputScaling(BACKBONES[model].scaling)(x)
    base = build_backbone(plan)
    base.trainable = False
    # training=False keeps BatchNormalization in inference mode, also when fine-tuning.
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, head(x, plan.num_classes), name="classifier"), base


def unfreeze_top(base: Any, count: int) -> None:
    """Make the top ``count`` layers trainable (0: all of them), except BatchNormalization
    layers, whose statistics stay those of the pretraining."""
    import keras

    base.trainable = True
    first = 0 if count <= 0 else len(base.layers) - count
    for index, layer in enumerate(base.layers):
        layer.trainable = index >= first and not isinstance(layer, keras.layers.BatchNormalization)


def preprocessing_layers(plan: TrainPlan) -> list[Any]:
    """The layers the saved model applies before the trained network: the full pipeline
    (DATA's recorded preprocessing, then ``--ops``), then the resize to the input size."""
    from cvprep.keras_layers import Resize

    resize = Resize((plan.size, plan.size), interpolation="area", fit=plan.config.resize)
    return [*plan.preprocessing.full.layers(), resize]


def wrap_for_raw_images(core: Any, plan: TrainPlan) -> Any:
    """raw image (any size, RGB) → recorded preprocessing + --ops → Resize → core."""
    import keras

    inputs = keras.Input((None, None, 3), name="raw_image")
    x = inputs
    for layer in preprocessing_layers(plan):
        x = layer(x)
    return keras.Model(inputs, core(x), name="cvprep_classifier")
