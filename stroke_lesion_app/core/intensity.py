"""Intensity corrections of the native T1w."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from stroke_lesion_app.core.registration import from_nibabel, set_ants_threads, to_nibabel


def n4_bias_correct(in_file: Path | str, out_file: Path | str, num_threads: int = 1,
                    shrink_factor: int = 4) -> Path:
    """N4 bias-field correction (antspyx) of a T1w head; output float32 on the same grid.

    Parameters
    ----------
    in_file : path
        Conformed T1w (native space).
    out_file : path
        Corrected image (same shape and affine).
    num_threads : int
        ITK threads.
    shrink_factor : int
        Subsampling of the bias-field fit (4: fast, enough for a smooth field).

    Returns
    -------
    Path
        ``out_file``; negative input values are clipped to 0 first (N4 needs positive data).
    """
    import ants

    set_ants_threads(num_threads)
    image = nib.load(str(in_file))
    data = np.clip(np.asanyarray(image.dataobj, dtype=np.float32), 0, None)
    positive = data > 0
    if positive.any():
        data[positive] += 1e-3 * float(data[positive].mean())
    corrected = ants.n4_bias_field_correction(from_nibabel(nib.Nifti1Image(data, image.affine)),
                                              shrink_factor=shrink_factor)
    result = np.asanyarray(to_nibabel(corrected).dataobj, dtype=np.float32)
    result[~positive] = 0
    nib.Nifti1Image(result, image.affine).to_filename(str(out_file))
    return Path(out_file)
