"""Loading, checking and conforming input images.

Every check raises :class:`ImageError` with one line that names the file and says what to do.
"""

from __future__ import annotations

import logging
from pathlib import Path

import nibabel as nib
import numpy as np

LOGGER = logging.getLogger("stroke_lesion_app.images")

#: Smallest and largest plausible voxel size of a structural MRI, in mm.
VOXEL_SIZE_RANGE_MM = (0.1, 10.0)


class ImageError(ValueError):
    """An input image that cannot be processed; the message is one line with file and fix."""


def load_t1w(path: Path | str) -> nib.Nifti1Image:
    """Load and check a T1w image; return it as a 3D NIfTI image (data not yet conformed).

    Checks: the file is a readable NIfTI; it is 3D (a 4D image with a single volume is
    accepted and squeezed); the affine is finite and invertible with voxel sizes between 0.1 and
    10 mm; the data are finite somewhere and not constant.

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
    if not finite.all():
        LOGGER.warning("%s: %d NaN/Inf voxels set to 0", path, int((~finite).sum()))
    header = image.header.copy()
    header.set_data_shape(data.shape)
    return nib.Nifti1Image(data, affine, header)


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
