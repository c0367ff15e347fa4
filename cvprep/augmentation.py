"""Augmentation presets: one definition per name, and both of its forms, side by side.

``cvprep augment --preset medium`` (offline, albumentations, written to disk:
:func:`to_albumentations`) and ``cvprep train --augment medium`` (online, Keras layers in the
input pipeline: :func:`to_keras_layers`) apply the same transforms with the same ranges: both
are built here from the :class:`Preset` below, and a test holds them to each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cvprep.errors import ParameterError

PRESET_NAMES = ("none", "light", "medium", "heavy")


@dataclass(frozen=True)
class Preset:
    """Ranges of the random transforms of a preset (0 = transform off)."""

    name: str
    flip: bool = False  # horizontal flip with probability 0.5
    rotation: float = 0.0  # ± degrees
    zoom: float = 0.0  # scale in [1 - zoom, 1 + zoom]
    shift: float = 0.0  # ± fraction of the height and width
    # torchvision's ColorJitter semantics: pixels × a factor in [1 - brightness, 1 + brightness],
    # then blended with the image's mean gray by a factor in [1 - contrast, 1 + contrast].
    brightness: float = 0.0
    contrast: float = 0.0
    blur_probability: float = 0.0  # Gaussian blur with sigma in blur_sigma
    blur_sigma: tuple[float, float] = (0.1, 1.5)
    noise: float = 0.0  # Gaussian noise of this standard deviation (a fraction of 255)

    def describe(self) -> str:
        if self.name == "none":
            return "no augmentation"
        parts = ["horizontal flip"] if self.flip else []
        if self.rotation or self.zoom or self.shift:
            parts.append(
                f"affine (rotation ±{self.rotation:g}°, zoom ±{self.zoom:g}, shift ±{self.shift:g})"
            )
        if self.brightness or self.contrast:
            parts.append(f"brightness ±{self.brightness:g}, contrast ±{self.contrast:g}")
        if self.blur_probability:
            parts.append(f"Gaussian blur (p={self.blur_probability:g}, sigma {self.blur_sigma})")
        if self.noise:
            parts.append(f"Gaussian noise (sigma {self.noise:g}×255)")
        return ", ".join(parts)


PRESETS = {
    preset.name: preset
    for preset in [
        Preset("none"),
        Preset("light", flip=True, brightness=0.1, contrast=0.1),
        Preset(
            "medium", flip=True, rotation=15.0, zoom=0.15, shift=0.1, brightness=0.1, contrast=0.2
        ),
        Preset(
            "heavy",
            flip=True,
            rotation=25.0,
            zoom=0.25,
            shift=0.15,
            brightness=0.15,
            contrast=0.3,
            blur_probability=0.3,
            noise=0.03,
        ),
    ]
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ParameterError(
            f"`preset` should be one of {', '.join(PRESET_NAMES)}. Received: preset={name!r}"
        )
    return PRESETS[name]


def to_albumentations(preset: Preset) -> Any:
    """The preset as an albumentations ``Compose`` (offline augmentation)."""
    import albumentations as A

    transforms: list[Any] = []
    if preset.flip:
        transforms.append(A.HorizontalFlip(p=0.5))
    if preset.rotation or preset.zoom or preset.shift:
        transforms.append(
            A.Affine(
                scale=(1 - preset.zoom, 1 + preset.zoom),
                translate_percent=(-preset.shift, preset.shift),
                rotate=(-preset.rotation, preset.rotation),
                border_mode=2,  # cv2.BORDER_REFLECT, as the Keras side (and Keras itself)
                p=1.0,
            )
        )
    if preset.brightness or preset.contrast:
        transforms.append(
            A.ColorJitter(
                brightness=(1 - preset.brightness, 1 + preset.brightness),
                contrast=(1 - preset.contrast, 1 + preset.contrast),
                saturation=(1.0, 1.0),
                hue=(0.0, 0.0),
                p=1.0,
            )
        )
    if preset.blur_probability:
        transforms.append(A.GaussianBlur(sigma_limit=preset.blur_sigma, p=preset.blur_probability))
    if preset.noise:
        transforms.append(A.GaussNoise(std_range=(preset.noise, preset.noise), p=1.0))
    return A.Compose(transforms)


def to_keras_layers(preset: Preset, seed: int) -> list[Any]:
    """The preset as random Keras layers applied to whole batches (online augmentation,
    ``training=True``); the flip is part of the affine warp when there is one."""
    import keras

    from cvprep import keras_layers as kl

    layers: list[Any] = []
    if preset.rotation or preset.zoom or preset.shift:
        affine = kl.RandomAffine(
            preset.rotation,
            preset.zoom,
            preset.shift,
            flip=preset.flip,
            border="reflect",
            seed=seed,
        )
        affine.warp_with_opencv = True  # these layers only run in tf.data, never in a model
        layers.append(affine)
    elif preset.flip:
        layers.append(keras.layers.RandomFlip("horizontal", seed=seed))
    if preset.brightness or preset.contrast:
        layers.append(kl.RandomBrightnessContrast(preset.brightness, preset.contrast, seed=seed))
    if preset.blur_probability:
        layers.append(
            kl.RandomGaussianBlur(preset.blur_sigma, probability=preset.blur_probability, seed=seed)
        )
    if preset.noise:
        layers.append(_PixelNoise(preset.noise, seed=seed))
    return layers


class _PixelNoise:
    """Keras' ``GaussianNoise`` (standard deviation as a fraction of 255) on [0, 255] pixels."""

    def __init__(self, stddev: float, seed: int) -> None:
        import keras

        self.noise = keras.layers.GaussianNoise(stddev, seed=seed)
        self.stddev = stddev

    def __call__(self, images: Any, training: bool = False) -> Any:
        import tensorflow as tf  # tf.data runs TensorFlow whatever the Keras backend

        noisy = self.noise(images / 255.0, training=training) * 255.0
        return tf.clip_by_value(noisy, 0.0, 255.0)
