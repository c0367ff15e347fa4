"""Input scaling for classifier backbones, and batch normalisation that trains faster on
TensorFlow, as serialisable layers (not OpenCV ops)."""

from __future__ import annotations

from typing import Any

import keras

from cvprep.keras_layers.base import register

# keras.applications' preprocess_input conventions, plus [0, 1] and pass-through.
MODES = ("unit", "tf", "caffe", "torch", "none")
_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN_RGB = (0.485, 0.456, 0.406)
_TORCH_STD_RGB = (0.229, 0.224, 0.225)


@register
class InputScaling(keras.layers.Layer):
    """Scale [0, 255] RGB input the way a backbone expects.

    ``"unit"``: [0, 1] (cvprep's small CNN). ``"tf"``: [-1, 1] (MobileNet, MobileNetV2).
    ``"caffe"``: RGB→BGR minus the ImageNet mean (ResNet50, VGG16). ``"torch"``: [0, 1] then
    ImageNet mean/std. ``"none"``: unchanged (EfficientNet rescales inside the model).
    """

    def __init__(self, mode: str = "unit", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"`mode` should be one of {', '.join(MODES)}. Received: mode={mode!r}")
        self.mode = mode

    def call(self, inputs: Any) -> Any:
        x = keras.ops.cast(inputs, "float32")
        if self.mode == "unit":
            return x / 255.0
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            mean = keras.ops.convert_to_tensor(_CAFFE_MEAN_BGR, "float32")
            return keras.ops.flip(x, axis=-1) - mean
        if self.mode == "torch":
            mean = keras.ops.convert_to_tensor(_TORCH_MEAN_RGB, "float32")
            std = keras.ops.convert_to_tensor(_TORCH_STD_RGB, "float32")
            return (x / 255.0 - mean) / std
        return x

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


@register
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' ``BatchNormalization`` (same weights, settings and results), which runs
    TensorFlow's fused kernel under the TensorFlow backend, in training and inference.

    Keras 3 computes a training step's batch statistics, normalisation and their gradients
    as separate elementwise operations; on a CPU they took as long as the convolution before
    them (``benchmarks/cnn_layers.py``: 97 ms against 84 ms for cvprep's CNN's 75×75×64
    layer, batch 32), and TensorFlow's ``FusedBatchNormV3`` does the same work in one pass
    forward and one backward; in inference it is one pass, which TensorFlow's oneDNN graph
    rewrite folds into a convolution it directly follows (in cvprep's CNN the stem and the
    last convolution; the others are pooled in between). Used where it applies (TensorFlow,
    float32 images with the channels last); elsewhere (JAX, mixed precision) it is Keras'
    code.
    The moving variance is updated with the batch's unbiased variance (Keras: biased), a
    factor ``n / (n - 1)`` that is below 1.0004 for the batches it sees.
    """

    def _fusable(self, inputs: Any) -> bool:
        return (
            keras.backend.backend() == "tensorflow"
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype == "float32"
            and self.scale
            and self.center
            and not (self.renorm or self.synchronized)
        )

    def call(self, inputs: Any, training: Any = None, mask: Any = None) -> Any:
        plain_flag = training is None or isinstance(training, bool)
        if mask is not None or not plain_flag or not self._fusable(inputs):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        if not (training and self.trainable):  # Keras' rule: batch statistics only then
            outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(
                inputs,
                self.gamma,
                self.beta,
                mean=self.moving_mean,
                variance=self.moving_variance,
                epsilon=self.epsilon,
                is_training=False,
            )
            return outputs
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, self.gamma, self.beta, epsilon=self.epsilon, is_training=True
        )
        keep = self.momentum
        self.moving_mean.assign(self.moving_mean * keep + mean * (1.0 - keep))
        self.moving_variance.assign(self.moving_variance * keep + variance * (1.0 - keep))
        return outputs
