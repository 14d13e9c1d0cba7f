"""The CNN: `build_cnn(spec)` turns a ModelSpec from params.yaml into a Keras model.

The model takes raw uint8-range pixels; its first layer applies the preprocess stage's scaling,
so every caller (evaluation, prediction, serving) feeds the same thing and cannot forget it.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
from keras import layers

from common.errors import PipelineError
from ml.config import Augment, ConvBlock, ModelSpec, TrainParams

INPUT_SHAPE = (28, 28, 1)
NUM_CLASSES = 10
NO_AUGMENT = Augment()
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
SAVED = "1980-01-01@00:00:00"  # metadata.json's date_saved, in Keras' format, at that time

# The architectures of the seed documents, selectable with `train.preset`.
PRESETS: dict[str, ModelSpec] = {
    # (a) CSDN posts: Conv32-MaxPool-Conv64-MaxPool-Flatten-Dense64-Dense10; 121,930 params.
    "seed_a": ModelSpec(blocks=[ConvBlock(filters=32), ConvBlock(filters=64)], dense=[64]),
    # (b) PyTorch post: Conv32 5x5 pad 2 + BatchNorm + ReLU, MaxPool, Dense70-Dense30 tanh.
    "seed_b": ModelSpec(
        blocks=[ConvBlock(filters=32, kernel_size=5, padding="same", batch_norm=True)],
        dense=[70, 30],
        dense_activation="tanh",
    ),
    # (c) Chollet, Deep Learning with Python ch. 8: three 3x3 convs, no dense hidden layer.
    "seed_c": ModelSpec(
        blocks=[ConvBlock(filters=32), ConvBlock(filters=64), ConvBlock(filters=128, pool=False)],
    ),
    # (d) TF textbook chapter: two 'same' convs, Dense128.
    "seed_d": ModelSpec(
        blocks=[ConvBlock(filters=16, padding="same"), ConvBlock(filters=32, padding="same")],
        dense=[128],
    ),
}


def architecture(params: TrainParams) -> ModelSpec:
    """The architecture to build: the named preset's, or the spec from params.yaml."""
    return params.model if params.preset is None else PRESETS[params.preset]


def conv_block(block: ConvBlock, activation: str) -> list[layers.Layer]:
    stack: list[layers.Layer] = []
    for _ in range(block.convs):
        # With batch norm the conv bias is redundant: BN's own shift replaces it.
        stack.append(
            layers.Conv2D(
                block.filters,
                block.kernel_size,
                padding=block.padding,
                use_bias=not block.batch_norm,
                activation=None if block.batch_norm else activation,
            )
        )
        if block.batch_norm:
            stack += [layers.BatchNormalization(), layers.Activation(activation)]
    if block.pool:
        stack.append(layers.MaxPooling2D())
    if block.dropout:
        stack.append(layers.Dropout(block.dropout))
    return stack


def dense_head(spec: ModelSpec) -> list[layers.Layer]:
    stack: list[layers.Layer] = [layers.Flatten()]
    for width in spec.dense:
        if spec.dense_dropout:
            stack.append(layers.Dropout(spec.dense_dropout))
        stack.append(layers.Dense(width, activation=spec.dense_activation))
    if spec.dense_dropout:
        stack.append(layers.Dropout(spec.dense_dropout))
    # float32 output even under mixed precision: softmax in float16 loses small probabilities.
    stack.append(layers.Dense(NUM_CLASSES, activation="softmax", dtype="float32"))
    return stack


def augmentation(augment: Augment) -> list[layers.Layer]:
    """Random shifts and rotations, active only in training (Keras skips them in predict and
    evaluate). They come before rescaling, so the pixels moved in are black (0) whatever the
    scaling. Seeded from Keras' global seed, so a seeded run draws the same distortions."""
    stack: list[layers.Layer] = []
    if augment.shift:
        stack.append(layers.RandomTranslation(augment.shift, augment.shift, fill_mode="constant"))
    if augment.rotate_deg:
        stack.append(layers.RandomRotation(augment.rotate_deg / 360, fill_mode="constant"))
    return stack


DISTORTIONS = (layers.RandomTranslation, layers.RandomRotation)  # what augmentation() adds


def without_augmentation(cnn: keras.Model) -> keras.Model:
    """The same layers and weights minus the training-time distortions. They do nothing at
    inference, yet their ops stay in an exported graph, and some runtimes cannot convert them
    (OpenVINO has no ImageProjectiveTransformV3 or stateless random ops)."""
    kept = [layer for layer in cnn.layers if not isinstance(layer, DISTORTIONS)]
    return keras.Sequential([keras.Input(INPUT_SHAPE, dtype="uint8"), *kept], name=cnn.name)


def build_cnn(
    spec: ModelSpec,
    scale: float = 1 / 255,
    offset: float = 0.0,
    name: str = "cnn",
    augment: Augment = NO_AUGMENT,
) -> keras.Model:
    """A Sequential CNN that maps (N, 28, 28, 1) pixels in 0..255 to 10 class probabilities."""
    stack = [keras.Input(INPUT_SHAPE, dtype="uint8"), *augmentation(augment)]
    stack.append(layers.Rescaling(scale, offset))
    for block in spec.blocks:
        stack += conv_block(block, spec.conv_activation)
    return keras.Sequential(stack + dense_head(spec), name=name)


def save(cnn: keras.Model, path: Path) -> None:
    """Save as a .keras archive that is the same bytes for the same weights. Keras stamps the
    weights' entry and metadata.json's `date_saved` with the clock, and numbers the objects that
    layers share (their dtype policy) by memory address, so DVC would store every retraining to
    identical weights as a new model. Here the times are the zip epoch (the MLflow run records
    when the model was trained) and the shared objects are numbered in order. The saved model
    computes in float32 whatever precision trained it (float32_policies)."""
    with tempfile.TemporaryDirectory() as scratch:
        saved = Path(scratch) / "model.keras"
        cnn.save(saved)
        with zipfile.ZipFile(saved) as source, zipfile.ZipFile(path, "w") as target:
            for entry in source.infolist():
                content = source.read(entry)
                if entry.filename == "metadata.json":
                    content = json.dumps({**json.loads(content), "date_saved": SAVED}).encode()
                if entry.filename == "config.json":
                    portable = float32_policies(numbered_shared_objects(json.loads(content)))
                    content = json.dumps(portable).encode()
                fixed = zipfile.ZipInfo(entry.filename, date_time=ZIP_EPOCH)
                fixed.compress_type = entry.compress_type
                target.writestr(fixed, content)


def numbered_shared_objects(config: Any, numbers: dict[int, int] | None = None) -> Any:
    """The config with each `shared_object_id` (an address) replaced by 1, 2, ... in the order
    first met: the same objects stay shared, and the same model gives the same text."""
    numbers = {} if numbers is None else numbers
    if isinstance(config, list):
        return [numbered_shared_objects(item, numbers) for item in config]
    if not isinstance(config, dict):
        return config
    renumbered = {key: numbered_shared_objects(value, numbers) for key, value in config.items()}
    if "shared_object_id" in config:
        address = config["shared_object_id"]
        renumbered["shared_object_id"] = numbers.setdefault(address, len(numbers) + 1)
    return renumbered


def float32_policies(config: Any) -> Any:
    """The config with each mixed-precision dtype policy made float32. Under mixed precision the
    weights are float32 already; only the compute is 16-bit, which is how a model trains fast
    where the hardware has it (ml.runtime), not how it should serve on a machine that may not."""
    if isinstance(config, list):
        return [float32_policies(item) for item in config]
    if not isinstance(config, dict):
        return config
    converted = {key: float32_policies(value) for key, value in config.items()}
    policy = config.get("config")
    mixed = isinstance(policy, dict) and str(policy.get("name", "")).startswith("mixed_")
    if config.get("class_name") == "DTypePolicy" and mixed:
        converted["config"] = {**policy, "name": "float32"}
    return converted


@contextmanager
def served_copy(cnn: keras.Model) -> Iterator[tuple[keras.Model, Path]]:
    """The model as the pipeline serves it, saved to a scratch archive and loaded back (float32
    whatever precision trained it), with that archive's path while the block runs."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "model.keras"
        save(cnn, path)
        yield load(path), path


def load(path: Path) -> keras.Model:
    """Load a .keras file; a missing or damaged one is one line naming the file and the fix
    (Keras itself calls an empty or truncated file "File not found")."""
    fix = "train one with `dvc repro` (or python src/train.py)"
    if not path.is_file():
        raise PipelineError(f"{path} does not exist: {fix}")
    if not zipfile.is_zipfile(path):
        raise PipelineError(f"{path}: not a Keras model file (not a .keras zip archive); {fix}")
    try:
        return keras.saving.load_model(path)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as err:
        raise PipelineError(f"{path}: a damaged Keras model ({err}); {fix}") from err
