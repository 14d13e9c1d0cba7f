"""feature_maps: the maps shown are the CNN's real activations; the figure shows each of them."""

from __future__ import annotations

import io

import keras
import numpy as np
import pytest
from matplotlib.image import AxesImage
from scipy import signal

from inference import feature_maps
from ml import config, model, plots

DIGIT = np.zeros((28, 28, 1), np.uint8)
DIGIT[6:22, 12:16] = 255  # a "1"


@pytest.fixture
def three_convs() -> keras.Model:
    """A plain conv, a batch-norm pair, and a 40-filter conv (more maps than the figure shows)."""
    keras.utils.set_random_seed(0)
    spec = config.ModelSpec(
        blocks=[
            config.ConvBlock(filters=6, kernel_size=5),
            config.ConvBlock(filters=4, batch_norm=True, pool=False),
            config.ConvBlock(filters=40, pool=False),
        ],
        dense=[8],
    )
    return model.build_cnn(spec)


def test_each_conv_layer_is_shown_after_its_activation(three_convs):
    ends = [type(end).__name__ for _, end in feature_maps.conv_outputs(three_convs)]
    assert ends == ["Conv2D", "Activation", "Conv2D"]


def test_the_first_maps_are_the_filters_applied_to_the_image(three_convs):
    views = feature_maps.views(three_convs, DIGIT)
    conv = feature_maps.conv_outputs(three_convs)[0][0]
    bias = keras.ops.convert_to_numpy(conv.bias)
    pixels = DIGIT[..., 0] / 255
    for channel, kernel in enumerate(views.filters):
        expected = np.maximum(signal.correlate2d(pixels, kernel, mode="valid") + bias[channel], 0)
        np.testing.assert_allclose(views.convs[0].maps[..., channel], expected, atol=1e-5)
    assert [c.maps.shape for c in views.convs] == [(24, 24, 6), (10, 10, 4), (8, 8, 40)]
    np.testing.assert_allclose(
        views.probabilities, three_convs.predict_on_batch(DIGIT[np.newaxis])[0], rtol=1e-5
    )
    assert views.convs[2].title == "conv 3: 40 filters 3x3"


@pytest.mark.parametrize("original", [None, np.full((90, 60), 200, np.uint8)])
def test_the_figure_draws_every_filter_and_map_it_names(three_convs, original):
    views = feature_maps.views(three_convs, DIGIT)
    fig = plots.cnn_views(views, original)
    drawn = sum(isinstance(artist, AxesImage) for ax in fig.axes for artist in ax.get_children())
    images = 1 if original is None else 2
    # the images, 6 filters and their 6 maps, 4 maps, then 32 of conv 3's 40
    assert drawn == images + 6 + 6 + 4 + plots.MAPS_SHOWN
    (title,) = (text.get_text() for text in fig.subfigs[-1].texts)
    assert title == "conv 3: 40 filters 3x3: the 32 most active of 40 maps (8x8)"
    fig.savefig(io.BytesIO(), format="png")  # lays out and renders without error
