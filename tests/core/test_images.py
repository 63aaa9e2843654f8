"""T1w checks and conforming."""

from __future__ import annotations

import gzip
import io
import logging

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


def _save_raw(tmp_path, shape=(10, 10, 10), zooms=(2.5, 2.5, 2.5), name="t1w.nii.gz", **fields):
    """Save a valid image, then overwrite header ``fields`` in the file's bytes, bypassing the
    fixes nibabel applies on save (e.g. pixdim 0 -> 1), as a broken converter might write."""
    data = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    image = nib.Nifti1Image(data, np.diag([*zooms, 1.0]))
    image.set_qform(image.affine, code=1)
    raw = bytearray(image.to_bytes())
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(bytes(raw)), check=False)
    for field, value in fields.items():
        if field == "pixdim":
            header["pixdim"][1:4] = value
        else:
            header[field] = value
    raw[:348] = header.binaryblock
    path = tmp_path / name
    path.write_bytes(gzip.compress(bytes(raw)) if name.endswith(".gz") else bytes(raw))
    return path


def _check_error(info, path):
    """The error is one line and names the file."""
    assert str(path) in str(info.value) and "\n" not in str(info.value)


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
    _check_error(info, path)


def _ramp(shape, dtype=np.float32):
    return np.arange(np.prod(shape), dtype=dtype).reshape(shape)


@pytest.mark.parametrize(("shape", "zooms", "message"), [
    ((1, 2, 3), (1.0, 1.0, 1.0), r"too few voxels \(1x2x3; at least 8 per axis"),  # 6 voxels
    ((64, 64, 1), (1.0, 1.0, 1.0), r"too few voxels \(64x64x1;"),  # single slice
    ((1, 64, 64), (1.0, 1.0, 1.0), r"too few voxels \(1x64x64;"),  # single sagittal slice
    ((64, 2, 64), (3.0, 3.0, 3.0), r"too few voxels \(64x2x64;"),  # 2-slice slab
    ((7, 40, 40), (5.0, 5.0, 5.0), r"too few voxels \(7x40x40;"),  # one short of the limit
    ((16, 16, 16), (1.0, 1.0, 1.0), r"field of view too small \(16x16x16 voxels = 16x16x16 mm"),
    ((100, 100, 9), (1.0, 1.0, 2.0), (r"field of view too small \(100x100x9 voxels = "
                                      r"100x100x18 mm; at least 20 mm per axis")),
])
def test_load_t1w_rejects_too_small(tmp_path, shape, zooms, message):
    path = _save(tmp_path, _ramp(shape), np.diag([*zooms, 1.0]))
    with pytest.raises(images.ImageError, match=message) as info:
        images.load_t1w(path)
    _check_error(info, path)
    assert "whole brain" in str(info.value)


@pytest.mark.parametrize(("name", "fields", "message"), [
    ("zero.nii.gz", {"pixdim": [0, 0, 0]}, r"voxel sizes in the header are 0 .*\[0\.0, 0\.0"),
    ("zero_one_axis.nii", {"pixdim": [2.5, 0, 2.5]}, "voxel sizes in the header are 0"),
    ("nan.nii.gz", {"pixdim": [np.nan, 2.5, 2.5]}, "voxel sizes in the header are 0 or not a"),
    ("zero_no_codes.nii.gz", {"pixdim": [0, 0, 0], "qform_code": 0, "sform_code": 0},
     "voxel sizes in the header are 0"),
    ("no_codes.nii.gz", {"qform_code": 0, "sform_code": 0},
     r"no orientation in the header \(qform_code 0, sform_code 0\), so left and right"),
    ("bad_codes.nii.gz", {"qform_code": 0, "sform_code": 7},
     r"no orientation in the header \(qform_code 0, sform_code 7\)"),
])
def test_load_t1w_rejects_header_without_geometry(tmp_path, name, fields, message):
    path = _save_raw(tmp_path, name=name, **fields)
    with pytest.raises(images.ImageError, match=message) as info:
        images.load_t1w(path)
    _check_error(info, path)
    assert "dcm2niix" in str(info.value)


def test_zero_pixdim_is_hidden_by_nibabel(tmp_path):
    """Why the check reads the stored header: nibabel reports pixdim 0 as 1 mm."""
    path = _save_raw(tmp_path, pixdim=[0, 0, 0], qform_code=0, sform_code=0)
    image = nib.load(path)
    assert image.header.get_zooms()[:3] == (1.0, 1.0, 1.0)
    assert np.allclose(np.abs(np.diag(image.affine)), 1.0)


@pytest.mark.parametrize(("shape", "zooms", "fields"), [
    ((64, 76, 60), (2.5, 2.5, 2.5), {}),  # a realistic head: 160 x 190 x 150 mm
    ((8, 8, 8), (2.5, 2.5, 2.5), {}),  # exactly the limits: 8 voxels, 20 mm
    ((10, 10, 10), (2.5, 2.5, 2.5), {"pixdim": [-2.5, 2.5, 2.5]}),  # negative pixdim, sform set
    ((10, 10, 10), (2.5, 2.5, 2.5), {"qform_code": 0}),  # sform only
    ((10, 10, 10), (2.5, 2.5, 2.5), {"sform_code": 0}),  # qform only
])
def test_load_t1w_accepts(tmp_path, shape, zooms, fields):
    image = images.load_t1w(_save_raw(tmp_path, shape=shape, zooms=zooms, **fields))
    assert image.shape == shape
    np.testing.assert_allclose(image.header.get_zooms()[:3], zooms)


def test_load_t1w_accepts_the_test_suites_tiny_head(tmp_path):
    """The CLI tests run the app on ``tiny_head`` (12x14x10 voxels at 2 mm): keep it valid."""
    path = tmp_path / "tiny.nii.gz"
    tiny_head().to_filename(path)
    assert images.load_t1w(path).shape == (12, 14, 10)


def test_load_t1w_unreadable(tmp_path):
    for name, content in (("bad.nii.gz", b"not a gzip"), ("bad.nii", b"\x00" * 10)):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(images.ImageError, match="unreadable NIfTI"):
            images.load_t1w(path)
    with pytest.raises(images.ImageError, match="not found"):
        images.load_t1w(tmp_path / "missing.nii.gz")


def test_load_t1w_accepts_single_volume_4d_and_partial_nan(tmp_path):
    data = np.arange(1000, dtype=np.float32).reshape(10, 10, 10, 1)
    data[0, 0, 0, 0] = np.nan
    image = images.load_t1w(_save(tmp_path, data, np.diag([2.0, 2.0, 2.0, 1.0])))
    assert image.shape == (10, 10, 10)


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


def test_nibabel_header_fix_messages_are_silenced(tmp_path, caplog):
    """nibabel logs "setting 0 dims to 1" without the file name; the ImageError says it all."""
    caplog.set_level(logging.DEBUG)
    path = _save_raw(tmp_path, pixdim=[0, 0, 0])
    with pytest.raises(images.ImageError, match="voxel sizes in the header are 0"):
        images.load_t1w(path)
    assert not [record for record in caplog.records if record.name.startswith("nibabel")]
    assert logging.getLogger("nibabel.global").level == logging.NOTSET  # restored
