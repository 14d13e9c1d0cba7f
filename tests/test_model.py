"""model: the seed presets have their published sizes; any spec maps pixels to probabilities."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ml import config, model

# Counted by hand from each seed document's layer list (see model.PRESETS).
EXPECTED_PARAMS = {
    "seed_a": 121_930,  # as published
    "seed_b": 442_478,  # conv 800 (no bias under BN) + BN 128 + 439,110 + 2,130 + 310
    "seed_c": 104_202,  # as in Deep Learning with Python's model summary
    "seed_d": 206_922,  # 160 + 4,640 + 200,832 + 1,290
}


@pytest.mark.parametrize("preset", sorted(EXPECTED_PARAMS))
def test_each_seed_preset_has_its_expected_parameter_count(preset):
    assert model.build_cnn(model.PRESETS[preset]).count_params() == EXPECTED_PARAMS[preset]


def test_the_default_spec_maps_uint8_pixels_to_class_probabilities():
    spec = config.load().train.model
    cnn = model.build_cnn(spec)
    pixels = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1), dtype=np.uint8)
    probs = cnn.predict(pixels, verbose=0)
    assert probs.shape == (4, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)


def test_batch_norm_blocks_drop_the_redundant_conv_bias():
    block = config.ConvBlock(filters=8, convs=2, batch_norm=True, dropout=0.1)
    layers = model.conv_block(block, "relu")
    names = [type(layer).__name__ for layer in layers]
    assert names == ["Conv2D", "BatchNormalization", "Activation"] * 2 + ["MaxPooling2D", "Dropout"]
    assert not layers[0].use_bias


def test_a_preset_replaces_the_spec_and_names_the_architecture():
    custom = config.load().train.model_copy(update={"preset": None})
    assert (model.architecture(custom), custom.arch) == (custom.model, "custom")
    preset = custom.model_copy(update={"preset": "seed_c"})
    assert (model.architecture(preset), preset.arch) == (model.PRESETS["seed_c"], "seed_c")


def test_augmentation_distorts_training_batches_only_and_fills_with_black():
    keras.utils.set_random_seed(0)
    distort = keras.Sequential(model.augmentation(config.Augment(shift=0.25, rotate_deg=15)))
    white = np.full((8, 28, 28, 1), 255, dtype=np.uint8)
    np.testing.assert_array_equal(distort(white, training=False), white)
    moved = np.asarray(distort(white, training=True))
    assert (moved == 0).any()  # pixels moved in are black, not reflections of the digit
    assert (moved == 255).mean() > 0.5  # shifted and turned, not blanked


def test_an_augmented_model_predicts_like_the_plain_one_and_survives_saving(tmp_path):
    spec = config.load().train.model
    augmented = model.build_cnn(spec, augment=config.Augment(shift=0.1, rotate_deg=10))
    plain = model.build_cnn(spec)
    plain.set_weights(augmented.get_weights())
    pixels = np.random.default_rng(1).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    expected = plain.predict(pixels, verbose=0)
    np.testing.assert_array_equal(augmented.predict(pixels, verbose=0), expected)
    augmented.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(loaded.predict(pixels, verbose=0), expected)


def test_without_augmentation_drops_the_distortions_and_keeps_the_weights():
    spec = config.load().train.model
    augmented = model.build_cnn(spec, augment=config.Augment(shift=0.1, rotate_deg=10))
    plain = model.without_augmentation(augmented)
    assert not any(isinstance(layer, model.DISTORTIONS) for layer in plain.layers)
    assert len(plain.layers) == len(augmented.layers) - 2
    pixels = np.random.default_rng(2).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    np.testing.assert_array_equal(
        plain.predict(pixels, verbose=0), augmented.predict(pixels, verbose=0)
    )


def test_a_model_trained_in_mixed_precision_is_saved_to_compute_in_float32(tmp_path):
    """bfloat16 is how a model trains fast where the CPU has it, not how it serves elsewhere."""
    spec = config.load().train.model
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        mixed = model.build_cnn(spec, augment=config.Augment(shift=0.1, rotate_deg=10))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert mixed.layers[0].dtype_policy.name == "mixed_bfloat16"
    model.save(mixed, tmp_path / "model.keras")
    loaded = model.load(tmp_path / "model.keras")
    assert {layer.dtype_policy.name for layer in loaded.layers} == {"float32"}
    for saved, trained in zip(loaded.get_weights(), mixed.get_weights(), strict=True):
        np.testing.assert_array_equal(saved, trained)
    pixels = np.random.default_rng(2).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    float32 = model.build_cnn(spec)
    float32.set_weights(mixed.get_weights())
    np.testing.assert_array_equal(
        loaded.predict(pixels, verbose=0), float32.predict(pixels, verbose=0)
    )


def test_float32_policies_leaves_float32_and_other_dtypes_alone():
    policy = {"class_name": "DTypePolicy", "config": {"name": "mixed_float16"}}
    config_in = {
        "layers": [
            {"dtype": policy},
            {"dtype": "uint8"},
            {"dtype": {**policy, "config": {"name": "float32"}}},
        ]
    }
    converted = model.float32_policies(config_in)
    assert [layer["dtype"] for layer in converted["layers"]] == [
        {"class_name": "DTypePolicy", "config": {"name": "float32"}},
        "uint8",
        {"class_name": "DTypePolicy", "config": {"name": "float32"}},
    ]
    assert policy["config"]["name"] == "mixed_float16"  # the input is not changed in place
