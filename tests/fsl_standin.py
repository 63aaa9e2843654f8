"""A stand-in for TemplateFlow's MNI152NLin6Asym (FSL MNI152) 1 mm template, for tests.

TemplateFlow cannot be reached from CI, so tests that need the FSL space build a fake
``$TEMPLATEFLOW_HOME/tpl-MNI152NLin6Asym/`` from the MNI152NLin2009aSym template the app ships
with (nilearn's copy, through :func:`stroke_lesion_app.core.templates.get_template`):

* the exact TemplateFlow file names, ``tpl-MNI152NLin6Asym_res-01_T1w.nii.gz`` (a *head*:
  brain plus a bright scalp-like shell, as TemplateFlow's T1w has a skull) and
  ``tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz``;
* TemplateFlow's grid for ``res-01``: 182×218×182 voxels of 1 mm, RAS+, origin
  (-91, -126, -72) mm (the box of FSL's ``MNI152_T1_1mm``, whose own header is LAS with origin
  (90, -126, -72)); int16 T1w and uint8 mask with sform/qform code 4 (MNI), as TemplateFlow's
  ``sanitize.py`` writes them;
* a known geometric difference from MNI152NLin2009aSym: a stand-in point ``x`` shows the
  2009aSym anatomy at ``STANDIN_SCALE * x + STANDIN_SHIFT_MM`` (:func:`standin_to_template`),
  so a test can check that a computed NLin6 → 2009aSym transform recovers it.

Plain functions, importable from any test module::

    from tests.fsl_standin import make_fsl_standin, standin_to_template
"""

from __future__ import annotations

import functools
from pathlib import Path

import nibabel as nib
import numpy as np

from stroke_lesion_app.core import templates

__all__ = ["STANDIN_AFFINE", "STANDIN_SCALE", "STANDIN_SHIFT_MM", "make_fsl_standin",
           "standin_to_template", "template_to_standin"]

#: Per-axis scaling (x, y, z) of the stand-in's mapping to MNI152NLin2009aSym (mild: ≤ 3 %).
STANDIN_SCALE = np.array([1.03, 0.98, 1.02])
#: Shift (x, y, z) in mm of that mapping.
STANDIN_SHIFT_MM = np.array([2.0, -1.5, 1.0])
#: TemplateFlow's MNI152NLin6Asym ``res-01`` grid (RAS+).
STANDIN_AFFINE = np.array([[1.0, 0, 0, -91], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])


def standin_to_template(points_mm: np.ndarray) -> np.ndarray:
    """Where stand-in points (RAS mm, N×3) lie in MNI152NLin2009aSym: the true transform."""
    return np.asarray(points_mm, dtype=float) * STANDIN_SCALE + STANDIN_SHIFT_MM


def template_to_standin(points_mm: np.ndarray) -> np.ndarray:
    """Inverse of :func:`standin_to_template`."""
    return (np.asarray(points_mm, dtype=float) - STANDIN_SHIFT_MM) / STANDIN_SCALE


@functools.lru_cache(maxsize=1)
def _standin_arrays() -> tuple[np.ndarray, np.ndarray]:
    """T1w (int16 head) and brain mask (uint8) of the stand-in, built once per process."""
    from scipy import ndimage

    brain, mask = templates.template_brain(templates.get_template())
    shape = templates.FSL_TEMPLATE_SHAPE
    grid = np.indices(shape, dtype=np.float32).reshape(3, -1)
    world = STANDIN_AFFINE[:3, :3] @ grid + STANDIN_AFFINE[:3, 3:]
    source = standin_to_template(world.T).T
    voxels = np.linalg.inv(brain.affine)[:3, :3] @ source + np.linalg.inv(brain.affine)[:3, 3:]
    head = ndimage.map_coordinates(np.asanyarray(brain.dataobj), voxels, order=1,
                                   cval=0.0).reshape(shape)
    inside = ndimage.map_coordinates(np.asanyarray(mask.dataobj).astype(np.float32), voxels,
                                     order=1, cval=0.0).reshape(shape) >= 0.5
    # a scalp-like shell 3-8 mm outside the brain, brighter than most of the brain: a brain-to-
    # brain registration must mask it away (TemplateFlow's T1w is a whole head)
    distance = ndimage.distance_transform_edt(~inside)
    shell = (distance >= 3) & (distance <= 8)
    t1w = np.rint(np.where(inside, head * 800.0, 0.0) + shell * 900.0).astype(np.int16)
    return t1w, inside.astype(np.uint8)


def make_fsl_standin(templateflow_home: Path) -> Path:
    """Write the stand-in into ``templateflow_home/tpl-MNI152NLin6Asym/``; return that folder.

    Point ``TEMPLATEFLOW_HOME`` at ``templateflow_home`` to have
    :func:`stroke_lesion_app.core.templates.fsl_template` find it. Costs a few seconds the
    first time in a process (resampling 7 M voxels), about one second afterwards.
    """
    folder = Path(templateflow_home) / f"tpl-{templates.FSL_TEMPLATE}"
    folder.mkdir(parents=True, exist_ok=True)
    t1w, mask = _standin_arrays()
    for part, data in (("T1w", t1w), ("desc-brain_mask", mask)):
        image = nib.Nifti1Image(data, STANDIN_AFFINE)
        image.header.set_sform(STANDIN_AFFINE, 4)
        image.header.set_qform(STANDIN_AFFINE, 4)
        image.header.set_xyzt_units(xyz="mm")
        image.to_filename(str(folder / templates.fsl_templateflow_filename(part)))
    return folder
