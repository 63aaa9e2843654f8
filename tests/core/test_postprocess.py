"""Threshold and small-component rule on hand-made arrays."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

from stroke_lesion_app.core import postprocess
from stroke_lesion_app.core.postprocess import (
    postprocess_probability,
    remove_small_components,
    threshold_probability,
)


def test_threshold_is_strict_and_keeps_shape():
    prob = np.array([[[0.0, 0.3], [0.5, 0.500001]], [[0.9, 1.0], [np.nan, 0.49]]], np.float32)
    mask = threshold_probability(prob, 0.5)
    assert mask.dtype == np.uint8 and mask.shape == prob.shape
    np.testing.assert_array_equal(mask, [[[0, 0], [0, 1]], [[1, 1], [0, 0]]])
    assert threshold_probability(prob, 0.0).sum() == 6  # NaN and 0 stay background


@pytest.mark.parametrize("threshold", [-0.1, 1.0, 2])
def test_threshold_out_of_range(threshold):
    with pytest.raises(ValueError, match="threshold must lie in"):
        threshold_probability(np.zeros(3), threshold)


def three_shapes() -> np.ndarray:
    """A 2×2×2 cube (8 voxels), a diagonal corner-touching pair, and a 3-voxel edge-touching L."""
    mask = np.zeros((12, 12, 12), dtype=np.uint8)
    mask[1:3, 1:3, 1:3] = 1                     # cube: one component under any connectivity
    mask[6, 6, 6] = mask[7, 7, 7] = 1           # corner neighbours: joined by 26 only
    mask[10, 2, 2] = mask[10, 3, 3] = 1         # edge neighbours: joined by 18 and 26
    mask[10, 2, 3] = 1                          # ... plus a face neighbour of both: a 3-voxel L
    return mask


@pytest.mark.parametrize("connectivity, min_voxels, kept", [
    (26, 2, 8 + 2 + 3),     # every shape is one component of >= 2 voxels
    (18, 2, 8 + 3),         # the corner pair splits into two singletons
    (6, 2, 8 + 3),          # the L is face-connected through its middle voxel
    (26, 3, 8 + 3),
    (26, 4, 8),
    (26, 9, 0),
    (6, 0, 13),             # 0 keeps everything
])
def test_component_removal_respects_connectivity(connectivity, min_voxels, kept):
    out = remove_small_components(three_shapes(), min_voxels, connectivity)
    assert out.dtype == np.uint8 and out.shape == (12, 12, 12)
    assert int(out.sum()) == kept
    assert set(np.unique(out)) <= {0, 1}


def test_edge_pair_needs_18_connectivity():
    mask = np.zeros((4, 4, 4), np.uint8)
    mask[1, 1, 1] = mask[1, 2, 2] = 1  # share an edge
    assert remove_small_components(mask, 2, 6).sum() == 0
    assert remove_small_components(mask, 2, 18).sum() == 2


def test_kept_components_are_unchanged():
    mask = three_shapes() * 7  # any non-zero value is foreground
    out = remove_small_components(mask, 4, 26)
    np.testing.assert_array_equal(out[1:3, 1:3, 1:3], 1)
    assert out[6:8].sum() == 0 and out[10].sum() == 0


@pytest.mark.parametrize("kwargs, message", [
    ({"connectivity": 8}, "connectivity 8 unknown; choose one of"),
    ({"min_voxels": -1}, "non-negative integer"),
    ({"min_voxels": 2.5}, "non-negative integer"),
])
def test_component_arguments(kwargs, message):
    args = {"min_voxels": 2, "connectivity": 26, **kwargs}
    with pytest.raises(ValueError, match=message):
        remove_small_components(np.zeros((2, 2, 2)), **args)
    with pytest.raises(ValueError, match="3-D"):
        remove_small_components(np.zeros((2, 2)), 1)


def test_postprocess_probability_combines_both():
    prob = np.zeros((8, 8, 8), np.float32)
    prob[1:4, 1:4, 1:4] = 0.8   # 27 voxels kept
    prob[6, 6, 6] = 0.95        # isolated voxel removed
    prob[6, 1, 1] = 0.4         # below threshold
    mask = postprocess_probability(prob, 0.5, 2, 26)
    assert mask.sum() == 27 and mask[1:4, 1:4, 1:4].all()


def test_docstring_examples():
    result = doctest.testmod(postprocess, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
