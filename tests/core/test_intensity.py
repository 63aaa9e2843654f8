"""Head mask, head box and the N4 step on small synthetic heads (issue #18)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.core.intensity import (
    head_box,
    head_mask,
    n4_bias_correct,
    otsu_threshold,
)


def _wide_field_head(shape=(48, 56, 44), zooms=(2.0, 2.0, 2.0), seed=0):
    """An ellipsoid 'head' (bright brain inside a darker scalp) off-centre in a field of view
    with Rayleigh-noise air, and a linear bias field along the first axis."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) * z for n, z in zip(shape, zooms)],
                                indexing="ij"))
    centre = np.array([40.0, 60.0, 40.0]).reshape(3, 1, 1, 1)
    radius = np.sqrt((((grid - centre) / np.array([30.0, 36.0, 28.0]).reshape(3, 1, 1, 1))
                      ** 2).sum(axis=0))
    head, brain = radius < 1.0, radius < 0.75
    data = np.where(brain, 600.0, np.where(head, 300.0, 0.0))
    data *= 1 + 0.01 * (grid[0] - 40)                        # ±30 % across the head
    data = np.hypot(data + rng.normal(0, 6, shape), rng.normal(0, 6, shape))
    affine = np.diag([*zooms, 1.0])
    return data.astype(np.float32), affine, head, brain


def test_otsu_threshold_separates_two_classes():
    values = np.r_[np.random.default_rng(1).normal(10, 2, 500),
                   np.random.default_rng(2).normal(100, 5, 300)]
    threshold = otsu_threshold(values)
    assert (values[:500] < threshold).all() and (values[500:] > threshold).all()


def test_head_mask_and_box_find_the_head_not_the_air():
    data, _, head, _ = _wide_field_head()
    found = head_mask(data, (2.0, 2.0, 2.0))
    assert found.shape == data.shape and found.dtype == bool
    assert found[head].mean() > 0.99                         # the whole head ...
    assert found[~head].mean() < 0.1                         # ... and little air
    box = head_box(found, (2.0, 2.0, 2.0), margin_mm=4)
    inside = np.zeros_like(found)
    inside[box] = True
    assert inside[head].all() and inside.sum() < 0.8 * inside.size
    assert not head_mask(np.zeros((8, 8, 8)), (1, 1, 1)).any()


def test_n4_corrects_the_head_and_leaves_the_air_outside_the_box(tmp_path):
    data, affine, _, brain = _wide_field_head()
    path = tmp_path / "t1w.nii.gz"
    nib.Nifti1Image(data, affine).to_filename(path)
    n4_bias_correct(path, tmp_path / "n4.nii.gz")
    corrected = nib.load(tmp_path / "n4.nii.gz").get_fdata()
    assert corrected.shape == data.shape
    spread = lambda values: values.std() / values.mean()
    assert spread(corrected[brain]) < 0.5 * spread(data[brain])
    box = head_box(head_mask(data, (2.0, 2.0, 2.0)), (2.0, 2.0, 2.0))
    outside = np.ones(data.shape, bool)
    outside[box] = False
    assert outside.any()
    # air outside the box keeps its values (plus N4's positivity offset)
    offset = 1e-3 * data[data > 0].mean()
    np.testing.assert_allclose(corrected[outside], data[outside] + offset, rtol=1e-5)


@pytest.mark.parametrize("margin, expected", [(0, (slice(2, 5),)), (2, (slice(1, 6),))])
def test_head_box_margin_in_millimetres(margin, expected):
    mask = np.zeros((10, 3, 3), bool)
    mask[2:5, 1, 1] = True
    assert head_box(mask, (2.0, 1.0, 1.0), margin_mm=margin)[:1] == expected
