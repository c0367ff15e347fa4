"""Training, evaluation and prediction for image classifiers on cvprep datasets.

Models are built so that the saved ``model.keras`` takes raw RGB images of any size:

    raw image → preprocessing spec (cvprep layers) → Resize(img_size) → [training model]
    training model = augmentation (active in training only) → InputScaling → CNN or backbone → head

The preprocessing spec is the one recorded by ``cvprep preprocess`` in DATA (already applied
to the training files) followed by ``--ops`` (applied in the tf.data pipeline while training).
"""

from __future__ import annotations

import contextlib
import json
import platform
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cvprep import __version__
from cvprep.errors import CvprepError, ImageError
from cvprep.files import class_of, iter_files
from cvprep.io import read_image
from cvprep.pipeline import Pipeline

MODEL_FILE = "model.keras"
LABELS_FILE = "labels.json"
PIPELINE_FILE = "pipeline.json"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class Backbone:
    name: str
    constructor: str  # attribute of keras.applications
    scaling: str  # InputScaling mode matching the backbone's preprocess_input
    default_size: int
    has_alpha: bool = False


BACKBONES = {
    b.name: b
    for b in [
        Backbone("mobilenet", "MobileNet", "tf", 224, has_alpha=True),
        Backbone("mobilenet_v2", "MobileNetV2", "tf", 224, has_alpha=True),
        Backbone("efficientnet_b0", "EfficientNetB0", "none", 224),
        Backbone("resnet50", "ResNet50", "caffe", 224),
        Backbone("vgg16", "VGG16", "caffe", 224),
    ]
}
MODELS = ("cnn", *BACKBONES)
AUGMENT_PRESETS = ("none", "light", "medium", "heavy")
CNN_MIN_SIZE = 46  # four (3×3 valid conv + 2×2 pool) stages leave at least 1×1


@dataclass
class TrainConfig:
    """Every argument of a training run (written to config.json)."""

    data: str
    out: str
    model: str = "cnn"
    alpha: float = 1.0
    weights: str = "imagenet"
    img_size: int | None = None
    epochs: int = 20
    fine_tune_epochs: int = 0
    unfreeze: int = 20
    batch_size: int = 32
    learning_rate: float = 1e-3
    fine_tune_learning_rate: float = 1e-5
    ops: str = ""
    augment: str = "none"
    seed: int = 1337
    patience: int = 5
    distribute: bool = False
    coordinator: str = ""  # HOST:PORT of process 0, for multi-process data parallelism (JAX)
    num_processes: int = 1
    process_id: int = 0
    data_spec: str = ""  # filled in: the preprocessing recorded in DATA
    classes: list[str] = field(default_factory=list)  # filled in

    @property
    def size(self) -> int:
        if self.img_size:
            return self.img_size
        return 150 if self.model == "cnn" else BACKBONES[self.model].default_size

    def validate(self) -> None:
        if self.model not in MODELS:
            raise ValueError(
                f"`model` should be one of {', '.join(MODELS)}. Received: model={self.model!r}"
            )
        if self.augment not in AUGMENT_PRESETS:
            raise ValueError(
                f"`augment` should be one of {', '.join(AUGMENT_PRESETS)}. "
                f"Received: augment={self.augment!r}"
            )
        if self.alpha != 1.0 and not (self.model in BACKBONES and BACKBONES[self.model].has_alpha):
            raise ValueError(
                f"`alpha` only applies to mobilenet and mobilenet_v2. "
                f"Received: alpha={self.alpha} with model={self.model!r}"
            )
        minimum = CNN_MIN_SIZE if self.model == "cnn" else 32
        if self.size < minimum:
            raise ValueError(
                f"`img_size` should be >= {minimum} for {self.model}. "
                f"Received: img_size={self.size}"
            )
        if self.weights not in ("imagenet", "none") and not Path(self.weights).is_file():
            raise ValueError(
                f"`weights` should be imagenet, none or a weights file. "
                f"Received: weights={self.weights!r}"
            )
        Pipeline.parse(self.ops)
        if self.num_processes > 1 and not self.coordinator:
            raise ValueError("`coordinator` (HOST:PORT) is needed with `num_processes` > 1")
        if not 0 <= self.process_id < self.num_processes:
            raise ValueError(
                f"`process_id` should be in [0, {self.num_processes}). "
                f"Received: process_id={self.process_id}"
            )
        if self.batch_size % self.num_processes:
            raise ValueError(
                f"`batch_size` should be a multiple of `num_processes`. "
                f"Received: batch_size={self.batch_size}"
            )


# --------------------------------------------------------------------------- data
@dataclass
class Split:
    files: list[str]  # absolute paths
    labels: list[int]


def read_data_spec(data: Path) -> str:
    """The spec ``cvprep preprocess`` recorded in DATA (already applied to its files)."""
    record = data / "cvprep.json"
    if not record.exists():
        return ""
    content = json.loads(record.read_text())
    return (
        content.get("settings", {}).get("spec", "")
        if content.get("command") == "preprocess"
        else ""
    )


def list_split(folder: Path, classes: list[str]) -> Split:
    files, labels = [], []
    for relative in iter_files(folder):
        cls = class_of(relative)
        if cls in classes:
            files.append(str(folder / relative))
            labels.append(classes.index(cls))
    return Split(files, labels)


def discover(data: Path) -> tuple[list[str], dict[str, Split]]:
    """Class names (from train/) and the files of each split folder present."""
    train = data / "train"
    if not train.is_dir():
        raise CvprepError(f"{data} has no train/ folder: make one with `cvprep split`")
    classes = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise CvprepError(f"{train} needs at least two class folders, found {classes}")
    splits = {
        name: list_split(data / name, classes)
        for name in ("train", "val", "test")
        if (data / name).is_dir()
    }
    if not splits["train"].files:
        raise CvprepError(f"{train} contains no images")
    return classes, splits


def load_for_training(path: bytes) -> tuple[np.ndarray, bool]:
    """Decode with cvprep's reader (same decoder and EXIF handling as everywhere else).

    A file that fails is reported on stderr by name and skipped, not fatal.
    """
    try:
        return read_image(path.decode()).astype(np.float32), True
    except ImageError as exc:
        print(f"cvprep: skipping {exc}", file=sys.stderr)
        return np.zeros((1, 1, 3), np.float32), False


def make_dataset(
    split: Split,
    *,
    size: int,
    batch_size: int,
    pipeline: Pipeline,
    shuffle: bool,
    seed: int,
    num_classes: int,
    drop_remainder: bool = False,
) -> Any:
    """tf.data: parallel decode → --ops (cvprep layers) → Resize → batch → cache → prefetch."""
    import tensorflow as tf

    from cvprep.keras_layers import Resize

    layers = [*pipeline.layers(), Resize((size, size), interpolation="area")]
    paths = tf.data.Dataset.from_tensor_slices((split.files, split.labels))
    if shuffle:
        paths = paths.shuffle(len(split.files), seed=seed, reshuffle_each_iteration=True)

    def decode(path: Any, label: Any) -> Any:
        image, ok = tf.numpy_function(load_for_training, [path], (tf.float32, tf.bool))
        image.set_shape((None, None, 3))
        for layer in layers:
            image = layer(image)
        return image, label, ok

    dataset = paths.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    dataset = dataset.filter(lambda image, label, ok: ok).map(lambda i, lab, ok: (i, lab))
    if num_classes > 2:
        dataset = dataset.map(lambda i, lab: (i, tf.one_hot(lab, num_classes)))
    else:
        dataset = dataset.map(lambda i, lab: (i, tf.cast(lab, tf.float32)))
    image_bytes = len(split.files) * size * size * 3 * 4  # float32 RGB (an upper bound)
    # Data-parallel processes must run the same number of equally shaped steps.
    dataset = dataset.batch(batch_size, drop_remainder=shuffle and drop_remainder)
    if not shuffle and image_bytes < 2 * 1024**3:  # cache evaluation data when it fits
        dataset = dataset.cache()
    return dataset.prefetch(tf.data.AUTOTUNE)


def process_shard(split: Split, config: TrainConfig) -> Split:
    """This process's equal share of the training files (same shuffle in every process)."""
    order = np.random.default_rng(config.seed).permutation(len(split.files))
    per_process = len(order) // config.num_processes
    mine = order[config.process_id * per_process : (config.process_id + 1) * per_process]
    return Split([split.files[i] for i in mine], [split.labels[i] for i in mine])


def init_data_parallel(coordinator: str, num_processes: int, process_id: int) -> int:
    """Join a multi-process JAX job and replicate the model over all its devices.

    Every process runs the same command with its own ``process_id``; process 0 listens on
    ``coordinator``. Gradients are averaged across processes by Keras' ``DataParallel``.
    """
    import keras

    if keras.backend.backend() != "jax":
        raise CvprepError("multi-process training needs the JAX backend: set KERAS_BACKEND=jax")
    import jax

    # CPU hosts need a collectives implementation; GPUs use NCCL whatever this says.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    keras.distribution.initialize(
        job_addresses=coordinator, num_processes=num_processes, process_id=process_id
    )
    devices = keras.distribution.list_devices()
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    return len(devices)


# --------------------------------------------------------------------------- models
def augmentation_layers(preset: str, seed: int) -> list[Any]:
    """Keras random layers (inactive at inference and in exported models)."""
    import keras

    from cvprep.keras_layers import RandomGaussianBlur, RandomRotation

    if preset == "none":
        return []
    layers = [keras.layers.RandomFlip("horizontal", seed=seed)]
    if preset in ("medium", "heavy"):
        layers += [
            RandomRotation((-15, 15), seed=seed),
            keras.layers.RandomZoom(0.1, seed=seed),
            keras.layers.RandomContrast(0.1, seed=seed),
        ]
    if preset == "heavy":
        layers += [
            keras.layers.RandomTranslation(0.1, 0.1, fill_mode="reflect", seed=seed),
            RandomGaussianBlur((0.2, 1.5), probability=0.3, seed=seed),
        ]
    return layers


def build_cnn(size: int, channels: int, num_classes: int) -> Any:
    """The classic cats-vs-dogs CNN: Conv 32→64→128→128 (3×3, ReLU) with 2×2 max-pooling,
    Flatten, Dropout 0.5, Dense 512 ReLU, sigmoid (2 classes) or softmax output."""
    import keras

    inputs = keras.Input((size, size, channels))
    x = inputs
    for filters in (32, 64, 128, 128):
        x = keras.layers.Conv2D(filters, 3, activation="relu")(x)
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.5)(x)
    x = keras.layers.Dense(512, activation="relu")(x)
    return keras.Model(inputs, _head(x, num_classes), name="cnn")


def _head(x: Any, num_classes: int) -> Any:
    import keras

    if num_classes == 2:
        return keras.layers.Dense(1, activation="sigmoid", name="prediction")(x)
    return keras.layers.Dense(num_classes, activation="softmax", name="prediction")(x)


def build_backbone(config: TrainConfig) -> Any:
    import keras

    spec = BACKBONES[config.model]
    constructor = getattr(keras.applications, spec.constructor)
    kwargs: dict[str, Any] = {
        "input_shape": (config.size, config.size, 3),
        "include_top": False,
        "weights": None if config.weights == "none" else config.weights,
    }
    if spec.has_alpha:
        kwargs["alpha"] = config.alpha
    return constructor(**kwargs)


def build_training_model(config: TrainConfig, channels: int) -> tuple[Any, Any]:
    """The model trained by fit (fixed-size input); returns (model, backbone or None)."""
    import keras

    from cvprep.keras_layers import InputScaling

    num_classes = len(config.classes)
    inputs = keras.Input((config.size, config.size, channels), name="image")
    x = inputs
    for layer in augmentation_layers(config.augment, config.seed):
        x = layer(x)
    if config.model == "cnn":
        x = InputScaling("unit")(x)
        net = build_cnn(config.size, channels, num_classes)
        return keras.Model(inputs, net(x), name="classifier"), None
    spec = BACKBONES[config.model]
    if channels == 1:  # backbones take RGB: repeat a grayscale channel
        x = keras.layers.Concatenate(name="gray_to_rgb")([x, x, x])
    x = InputScaling(spec.scaling)(x)
    base = build_backbone(config)
    base.trainable = False
    # training=False keeps BatchNormalization in inference mode, also when fine-tuning.
    x = base(x, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, _head(x, num_classes), name="classifier"), base


def unfreeze_top(base: Any, count: int) -> None:
    """Make the top ``count`` layers trainable, except BatchNormalization layers."""
    import keras

    base.trainable = True
    for index, layer in enumerate(base.layers):
        top = index >= len(base.layers) - count
        layer.trainable = top and not isinstance(layer, keras.layers.BatchNormalization)


def wrap_for_raw_images(core: Any, config: TrainConfig, channels_in: int = 3) -> Any:
    """raw image → recorded preprocessing + --ops → Resize → core."""
    import keras

    from cvprep.keras_layers import Resize

    pipeline = full_pipeline(config)
    inputs = keras.Input((None, None, channels_in), name="raw_image")
    x = inputs
    for layer in [*pipeline.layers(), Resize((config.size, config.size), interpolation="area")]:
        x = layer(x)
    return keras.Model(inputs, core(x), name="cvprep_classifier")


def full_pipeline(config: TrainConfig) -> Pipeline:
    specs = [s for s in (config.data_spec, config.ops) if s]
    return Pipeline.parse(",".join(specs))


def output_channels(pipeline: Pipeline) -> int:
    """Channels after the pipeline, by running it on a tiny image."""
    result = pipeline.apply(np.zeros((8, 8, 3), np.uint8))
    return 1 if result.ndim == 2 else result.shape[2]


# --------------------------------------------------------------------------- run folder
def library_versions() -> dict[str, str]:
    import cv2
    import keras
    import sklearn
    import tensorflow as tf

    return {
        "cvprep": __version__,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "backend": keras.backend.backend(),
    }


def write_json(path: Path, data: Any) -> None:
    from cvprep.io import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(data, indent=2, default=str).encode())


def train(
    config: TrainConfig, *, verbose: int = 1, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Train, save every artefact to ``config.out`` and return the metrics."""
    import keras

    from cvprep import report

    config.validate()
    data, out = Path(config.data), Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    config.data_spec = read_data_spec(data)
    config.classes, splits = discover(data)
    keras.utils.set_random_seed(config.seed)
    multi_process = config.num_processes > 1
    devices = 1
    if multi_process:
        devices = init_data_parallel(config.coordinator, config.num_processes, config.process_id)
        splits["train"] = process_shard(splits["train"], config)
    ops = Pipeline.parse(config.ops)
    channels = output_channels(full_pipeline(config))
    write_json(
        out / CONFIG_FILE,
        {**asdict(config), "image_size": config.size, "versions": library_versions()},
    )
    write_json(out / LABELS_FILE, config.classes)
    (out / PIPELINE_FILE).write_text(full_pipeline(config).to_json(indent=2))
    validation = splits.get("val") or splits.get("test")
    datasets = {
        name: make_dataset(
            split,
            size=config.size,
            batch_size=config.batch_size // config.num_processes,
            pipeline=ops,
            shuffle=name == "train",
            seed=config.seed,
            num_classes=len(config.classes),
            drop_remainder=multi_process,
        )
        for name, split in splits.items()
    }
    if not any((out / "backup").glob("*/*")):  # a fresh run, not a resumed one
        (out / "history.csv").unlink(missing_ok=True)
    strategy = _strategy(config.distribute, log)
    with strategy.scope():
        core, base = build_training_model(config, channels)
        _compile(core, config.learning_rate, len(config.classes))
    histories = [
        _fit(
            core, datasets, validation is not None, config.epochs, 0, out, "phase1", config, verbose
        )
    ]
    if base is not None and config.fine_tune_epochs > 0:
        with strategy.scope():
            unfreeze_top(base, config.unfreeze)
            _compile(core, config.fine_tune_learning_rate, len(config.classes))
        start = len(histories[0].get("loss", []))
        histories.append(
            _fit(
                core,
                datasets,
                validation is not None,
                config.fine_tune_epochs,
                start,
                out,
                "phase2",
                config,
                verbose,
            )
        )
    model = wrap_for_raw_images(core, config)
    model.save(out / MODEL_FILE)
    with contextlib.suppress(OSError):  # BackupAndRestore removes its own folders on success
        (out / "backup").rmdir()
    eval_name = next(name for name in ("test", "val", "train") if name in splits)
    if eval_name == "train":
        log("warning: no val/ or test/ split: the metrics below are on the training images")
        datasets["train"] = make_dataset(
            splits["train"],
            size=config.size,
            batch_size=config.batch_size,
            pipeline=ops,
            shuffle=False,
            seed=config.seed,
            num_classes=len(config.classes),
        )
    metrics = evaluate_dataset(core, datasets[eval_name], config.classes)
    metrics["evaluated_on"] = eval_name
    metrics["data_parallel_devices"] = devices
    metrics["epochs_run"] = sum(len(h.get("loss", [])) for h in histories)
    write_json(out / "metrics.json", metrics)
    report.write_run_report(out, config, metrics)
    log(f"accuracy on {eval_name}: {metrics['accuracy']:.3f}; report: {out / 'report.html'}")
    return metrics


def _strategy(distribute: bool, log: Callable[[str], None]) -> Any:
    import tensorflow as tf

    gpus = tf.config.list_logical_devices("GPU")
    if distribute and len(gpus) > 1:
        log(f"training on {len(gpus)} GPUs with MirroredStrategy")
        return tf.distribute.MirroredStrategy()
    if distribute:
        log(f"--distribute: {len(gpus)} GPU(s) visible, training on the default device")
    return tf.distribute.get_strategy()


def _compile(model: Any, learning_rate: float, num_classes: int) -> None:
    import keras

    loss = "binary_crossentropy" if num_classes == 2 else "categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss, metrics=["accuracy"])


def _fit(
    model: Any,
    datasets: dict[str, Any],
    has_validation: bool,
    epochs: int,
    initial_epoch: int,
    out: Path,
    phase: str,
    config: TrainConfig,
    verbose: int,
) -> dict[str, list[float]]:
    import keras

    monitor = "val_loss" if has_validation else "loss"
    callbacks = [
        keras.callbacks.BackupAndRestore(str(out / "backup" / phase)),  # resume after a kill
        keras.callbacks.EarlyStopping(
            monitor=monitor, patience=config.patience, restore_best_weights=True
        ),
        keras.callbacks.ModelCheckpoint(
            str(out / "checkpoint.keras"), monitor=monitor, save_best_only=True
        ),
        keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.2, patience=max(1, config.patience // 2)
        ),
        keras.callbacks.CSVLogger(str(out / "history.csv"), append=True),
    ]
    validation = datasets.get("val") or datasets.get("test")
    with warnings.catch_warnings():
        # Skipping unreadable files leaves the dataset length unknown to Keras, which then
        # warns at the end of every epoch that the input "ran out of data".
        warnings.filterwarnings("ignore", message=".*ran out of data")
        history = model.fit(
            datasets["train"],
            validation_data=validation if has_validation else None,
            epochs=initial_epoch + epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            verbose=verbose,
            shuffle=False,  # tf.data already shuffles
        )
    return history.history


# --------------------------------------------------------------------------- evaluation
def probabilities_to_classes(probabilities: np.ndarray, num_classes: int) -> np.ndarray:
    if num_classes == 2:
        return (probabilities.reshape(-1) >= 0.5).astype(int)
    return probabilities.argmax(axis=1)


def class_probability(probabilities: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class probabilities (N×classes), also for the single sigmoid output."""
    if num_classes == 2:
        positive = probabilities.reshape(-1)
        return np.stack([1 - positive, positive], axis=1)
    return probabilities


def metrics_from_predictions(
    truth: np.ndarray, predicted: np.ndarray, classes: list[str]
) -> dict[str, Any]:
    from sklearn.metrics import accuracy_score, classification_report, confusion_matrix

    labels = list(range(len(classes)))
    per_class = classification_report(
        truth, predicted, labels=labels, target_names=classes, output_dict=True, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(truth, predicted)),
        "count": len(truth),
        "per_class": {c: {k: float(v) for k, v in per_class[c].items()} for c in classes},
        "macro_avg": {k: float(v) for k, v in per_class["macro avg"].items()},
        "confusion_matrix": confusion_matrix(truth, predicted, labels=labels).tolist(),
        "classes": classes,
    }


def evaluate_dataset(model: Any, dataset: Any, classes: list[str]) -> dict[str, Any]:
    truth, outputs = [], []
    for images, labels in dataset:
        outputs.append(np.asarray(model(images, training=False)))
        labels = np.asarray(labels)
        truth.append(labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(int))
    probabilities = np.concatenate(outputs)
    predicted = probabilities_to_classes(probabilities, len(classes))
    return metrics_from_predictions(np.concatenate(truth), predicted, classes)


def load_run(run: Path) -> tuple[Any, list[str], dict[str, Any]]:
    """The saved raw-image model, class names and config of a run folder."""
    import keras

    import cvprep.keras_layers  # noqa: F401  (registers cvprep's layers for loading)

    if not (run / MODEL_FILE).is_file():
        raise CvprepError(f"{run} has no {MODEL_FILE}: is it a `cvprep train` run folder?")
    model = keras.saving.load_model(run / MODEL_FILE)
    classes = json.loads((run / LABELS_FILE).read_text())
    config = json.loads((run / CONFIG_FILE).read_text())
    return model, classes, config


@dataclass
class Prediction:
    path: str
    label: str = ""
    probability: float = 0.0
    probabilities: dict[str, float] = field(default_factory=dict)
    error: str = ""


def predict_files(model: Any, classes: list[str], paths: list[Path]) -> list[Prediction]:
    """Predict raw image files one by one (any size); unreadable files get an error."""
    import tensorflow as tf

    run = tf.function(lambda x: model(x, training=False), reduce_retracing=True)
    results = []
    for path in paths:
        try:
            image = read_image(path)
        except ImageError as exc:
            results.append(Prediction(str(path), error=f"[{exc.kind}] {exc.reason}"))
            continue
        output = np.asarray(run(tf.constant(image[None], tf.float32)))
        probabilities = class_probability(output, len(classes))[0]
        best = int(probabilities.argmax())
        results.append(
            Prediction(
                str(path),
                classes[best],
                float(probabilities[best]),
                {c: float(p) for c, p in zip(classes, probabilities, strict=True)},
            )
        )
    return results


def evaluate_folder(run: Path, data: Path) -> dict[str, Any]:
    """Evaluate a run's raw-image model on DATA/test (or val, or DATA's class folders)."""
    model, classes, config = load_run(run)
    recorded = read_data_spec(data)
    if recorded and recorded == config.get("data_spec"):
        raise CvprepError(
            f"{data} was preprocessed with {recorded!r}, which the model already "
            "applies to raw images: evaluate on the raw (split) folder instead"
        )
    for name in ("test", "val"):
        if (data / name).is_dir():
            folder, split_name = data / name, name
            break
    else:
        folder, split_name = data, data.name
    split = list_split(folder, classes)
    if not split.files:
        raise CvprepError(f"no images of classes {classes} under {folder}")
    predictions = predict_files(model, classes, [Path(f) for f in split.files])
    good = [(p, label) for p, label in zip(predictions, split.labels, strict=True) if not p.error]
    truth = np.array([label for _, label in good])
    predicted = np.array([classes.index(p.label) for p, _ in good])
    metrics = metrics_from_predictions(truth, predicted, classes)
    metrics["evaluated_on"] = str(folder)
    metrics["split"] = split_name
    metrics["rejected"] = {p.path: p.error for p in predictions if p.error}
    return metrics
