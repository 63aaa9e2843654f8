"""T1w checks and conforming."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.core import images
from tests.conftest import tiny_head


def _save(tmp_path, data, affine=None, name="t1w.nii.gz"):
    """Save ``data``; a degenerate ``affine`` is written into the sform as a scanner might."""
    path = tmp_path / name
    header = nib.Nifti1Header()
    header.set_data_dtype(data.dtype)
    affine = np.diag([1.0, 1, 1, 1]) if affine is None else affine
    header["sform_code"], header["qform_code"] = 1, 0
    header["srow_x"], header["srow_y"], header["srow_z"] = affine[:3]
    nib.Nifti1Image(data, None, header).to_filename(path)
    return path


@pytest.mark.parametrize(("data", "affine", "message"), [
    (np.zeros((4, 4, 4, 3), np.float32) + np.arange(3), None, "4D image"),
    (np.full((4, 4, 4), np.nan, np.float32), None, "every voxel is NaN"),
    (np.full((4, 4, 4), 7, np.int16), None, "constant image"),
    (np.arange(8, dtype=np.float32).reshape(2, 2, 2), np.diag([0, 1, 1, 1.0]),
     "implausible affine"),
    (np.arange(8, dtype=np.float32).reshape(2, 2, 2), np.diag([20, 1, 1, 1.0]),
     "implausible affine"),
    (np.arange(4, dtype=np.float32).reshape(2, 2), None, "2D image"),
])
def test_load_t1w_rejects(tmp_path, data, affine, message):
    path = _save(tmp_path, data, affine)
    with pytest.raises(images.ImageError, match=message) as info:
        images.load_t1w(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_load_t1w_unreadable(tmp_path):
    for name, content in (("bad.nii.gz", b"not a gzip"), ("bad.nii", b"\x00" * 10)):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(images.ImageError, match="unreadable NIfTI"):
            images.load_t1w(path)
    with pytest.raises(images.ImageError, match="not found"):
        images.load_t1w(tmp_path / "missing.nii.gz")


def test_load_t1w_accepts_single_volume_4d_and_partial_nan(tmp_path):
    data = np.arange(64, dtype=np.float32).reshape(4, 4, 4, 1)
    data[0, 0, 0, 0] = np.nan
    image = images.load_t1w(_save(tmp_path, data))
    assert image.shape == (4, 4, 4)


def test_conform_reorients_without_resampling():
    head = tiny_head()
    lps = nib.orientations.ornt_transform(nib.io_orientation(head.affine),
                                          nib.orientations.axcodes2ornt("LPS"))
    stored = head.as_reoriented(lps)
    assert nib.aff2axcodes(stored.affine) == ("L", "P", "S")
    conformed = images.conform_t1w(stored)
    assert nib.aff2axcodes(conformed.affine) == ("R", "A", "S")
    assert conformed.get_data_dtype() == np.float32
    np.testing.assert_allclose(conformed.affine, head.affine)
    np.testing.assert_array_equal(conformed.get_fdata(), head.get_fdata())
