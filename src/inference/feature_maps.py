"""What the CNN computes on the way to its answer, for one image: the first conv layer's learned
filters and the activations (feature maps) of every conv layer.

evaluate draws this for a test digit and `predict.py --explain` for the user's; the figure itself
is `plots.cnn_views`. Backend-agnostic: a Keras functional model over the trained layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import numpy as np
from keras import layers

# Layers that finish a conv layer's output when they follow it directly.
FINISHING = (layers.BatchNormalization, layers.Activation)


@dataclass(frozen=True)
class ConvMaps:
    title: str  # e.g. "conv 2: 48 filters 3x3"
    maps: np.ndarray  # (height, width, channels), after the activation


@dataclass(frozen=True)
class CnnViews:
    seen: np.ndarray  # (28, 28) the image as the model received it
    probabilities: np.ndarray  # (10,)
    filters: np.ndarray  # (channels, k, k) the first conv layer's kernels
    convs: list[ConvMaps]


def conv_outputs(cnn: keras.Model) -> list[tuple[layers.Conv2D, layers.Layer]]:
    """Each conv layer with the layer whose output is its activated result: itself, or the
    batch norm + activation that follow it."""
    picked: list[tuple[layers.Conv2D, layers.Layer]] = []
    previous = None
    for layer in cnn.layers:
        if isinstance(layer, layers.Conv2D):
            picked.append((layer, layer))
        elif isinstance(layer, FINISHING) and picked and picked[-1][1] is previous:
            picked[-1] = (picked[-1][0], layer)
        previous = layer
    return picked


def views(cnn: keras.Model, image: np.ndarray) -> CnnViews:
    """One forward pass of a (28, 28, 1) uint8 image, keeping every conv layer's output."""
    convs = conv_outputs(cnn)
    if not convs:
        raise ValueError(f"model {cnn.name} has no Conv2D layer to show")
    probe = keras.Model(cnn.inputs, [end.output for _, end in convs] + [cnn.outputs[0]])
    *maps, probabilities = probe.predict_on_batch(image[np.newaxis])
    kernels = keras.ops.convert_to_numpy(convs[0][0].kernel)  # (k, k, 1, channels)
    return CnnViews(
        seen=image[..., 0],
        probabilities=np.asarray(probabilities)[0],
        filters=np.moveaxis(kernels[:, :, 0, :], -1, 0),
        convs=[
            ConvMaps(conv_title(i + 1, conv), np.asarray(out)[0])
            for i, ((conv, _), out) in enumerate(zip(convs, maps, strict=True))
        ],
    )


def conv_title(number: int, conv: layers.Conv2D) -> str:
    height, width = conv.kernel_size
    return f"conv {number}: {conv.filters} filters {height}x{width}"
