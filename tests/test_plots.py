"""Figure helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from align_lite.plots import image_grid, to_image, wrap


def test_to_image_maps_model_pixels_back_to_unit_range():
    pixels = torch.tensor([-1.0, 0.0, 1.0, 3.0]).reshape(1, 2, 2).expand(3, 2, 2)
    image = to_image(pixels)
    assert image.shape == (2, 2, 3)
    np.testing.assert_allclose(image[..., 0], [[0.0, 0.5], [1.0, 1.0]])
    with pytest.raises(ValueError, match="3, S, S"):
        to_image(torch.zeros(2, 4, 4))


def test_wrap_and_grid():
    assert wrap("a " * 40, width=10, max_lines=2).count("\n") == 1
    fig = image_grid([np.zeros((4, 4, 3))] * 3, ["a", "b", "c"], ncols=2)
    assert len([ax for ax in fig.axes if ax.images]) == 3
