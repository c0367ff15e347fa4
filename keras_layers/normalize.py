"""Input scaling for classifier backbones, as a serialisable layer (not an OpenCV op)."""

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
