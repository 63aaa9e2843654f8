"""The template the synthetic heads are made from, and fixed grids around it.

Source
------
The generator always uses the copy of the ICBM 2009a *symmetric* non-linear template that ships
inside the nilearn wheel (``nilearn/datasets/data/mni_icbm152_{t1,gm,wm}_tal_nlin_sym_09a_
converted.nii.gz``), never TemplateFlow, so that a seed gives the same bytes on every machine and
nothing is downloaded. The T1w image is skull-stripped and stored as uint8; the GM/WM maps are
probabilities stored as uint8 (0-255).

Grid (checked on load)
----------------------
MNI152NLin2009aSym at 1 mm: shape ``(197, 233, 189)``, RAS+ axes, voxel (0, 0, 0) at
(-98, -134, -72) mm -- the grid of ATLAS v2.0 and of TemplateFlow ``tpl-MNI152NLin2009aSym
_res-1``. Fallback: if a nilearn release ships these files on another grid, they are resampled
(trilinear) onto that grid and a warning is logged; the outputs stay on the grid above.

Derived quantities
------------------
- ``brain``: voxels with T1w > 0 (one connected component, no holes in nilearn 0.14; the mask is
  tight and leaves most sulcal CSF outside).
- ``tissue``: brain voxels with GM + WM probability >= 0.5 (excludes ventricles). Lesions are only
  drawn in tissue.
- intensities are divided by the median T1w of WM (WM probability > 0.9) so that WM = 1.0;
  GM ~ 0.75 and ventricular CSF ~ 0.31 in nilearn 0.14.
- a *head grid*, larger than the template grid so that it holds the scalp, the face and the neck:
  template-world box x [-100, 100], y [-140, 120], z [-140, 116] mm at 2 mm, with the distance (mm)
  from the brain plus a synthetic spinal cord that continues the medulla below the template's
  bottom slice (z < -72 mm).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

# one definition of the template grid, shared with the app
from stroke_lesion_app.core.templates import TEMPLATE as TEMPLATE_SPACE
from stroke_lesion_app.core.templates import TEMPLATE_AFFINE, TEMPLATE_SHAPE  # noqa: F401

LOGGER = logging.getLogger("stroke_lesion_app.synthetic")

TEMPLATE_ORIGIN = TEMPLATE_AFFINE[:3, 3].copy()
"""World (template mm) position of template voxel (0, 0, 0)."""

HEAD_ORIGIN = np.array([-100.0, -140.0, -140.0])
"""World (template mm) position of head-grid voxel (0, 0, 0)."""
HEAD_SPACING = 2.0
HEAD_SHAPE = (101, 131, 129)
"""Head grid: covers x [-100, 100], y [-140, 120], z [-140, 116] template mm at 2 mm."""

CORD_CENTRE = (0.0, -45.0)
"""Template (x, y) mm of the medulla in the template's bottom slice (z = -72 mm)."""
CORD_RADIUS = 4.5
"""Radius (mm) of the synthetic spinal cord below z = -72 mm."""
CORD_TOP = -72.0

_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@dataclass(frozen=True)
class Template:
    """Arrays of the 1 mm MNI152NLin2009aSym template (all read-only, shape ``(197, 233, 189)``).

    Attributes
    ----------
    t1 : numpy.ndarray of float32
        Skull-stripped T1w intensity, WM = 1.0, 0 outside the brain.
    brain : numpy.ndarray of bool
        Brain mask (T1w > 0).
    tissue : numpy.ndarray of bool
        Brain voxels with GM + WM probability >= 0.5 (no ventricles).
    gm, wm : numpy.ndarray of float32
        GM and WM probabilities in [0, 1].
    levels : dict
        Median normalised intensity of ``"wm"``, ``"gm"`` and ``"csf"`` (ventricles).
    source : str
        Folder the files were read from.
    """

    t1: np.ndarray
    brain: np.ndarray
    tissue: np.ndarray
    gm: np.ndarray
    wm: np.ndarray
    levels: dict
    source: str

    @property
    def affine(self) -> np.ndarray:
        """Voxel-to-world (template mm, RAS+) affine, shape ``(4, 4)``."""
        return TEMPLATE_AFFINE.copy()


def _nilearn_data_dir() -> Path:
    """Folder of nilearn's bundled template (always nilearn's copy, never TemplateFlow, so the
    generator writes the same bytes on every machine)."""
    from stroke_lesion_app.core.templates import nilearn_data_dir

    return nilearn_data_dir()


def _load_on_grid(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"template file {path} not found; reinstall nilearn>=0.11, whose wheel ships it "
            "('pip install --force-reinstall nilearn')"
        )
    img = nib.load(path)
    data = np.asarray(img.dataobj, dtype=np.float32)
    if img.shape == TEMPLATE_SHAPE and np.allclose(img.affine, TEMPLATE_AFFINE, atol=1e-3):
        return data
    LOGGER.warning(
        "%s is on grid %s with affine %s, not MNI152NLin2009aSym 1 mm %s; resampling (trilinear)",
        path.name, img.shape, np.round(img.affine, 3).tolist(), TEMPLATE_SHAPE,
    )
    vox_to_vox = np.linalg.inv(img.affine) @ TEMPLATE_AFFINE
    return ndi.affine_transform(
        data, vox_to_vox[:3, :3], offset=vox_to_vox[:3, 3], output_shape=TEMPLATE_SHAPE,
        order=1, mode="constant", cval=0.0,
    ).astype(np.float32)


def _readonly(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@functools.lru_cache(maxsize=1)
def load_template() -> Template:
    """Load the 1 mm MNI152NLin2009aSym template shipped with nilearn (cached per process).

    Returns
    -------
    Template
        Read-only arrays of shape ``(197, 233, 189)`` on the MNI152NLin2009aSym 1 mm grid
        (see the module docstring for the grid and the fallback when nilearn's copy differs).

    Raises
    ------
    FileNotFoundError
        When nilearn or its bundled template files are missing.
    """
    folder = _nilearn_data_dir()
    raw = {key: _load_on_grid(folder / name) for key, name in _FILES.items()}
    brain = raw["t1"] > 0.5
    gm = np.clip(raw["gm"] / 255.0, 0.0, 1.0).astype(np.float32)
    wm = np.clip(raw["wm"] / 255.0, 0.0, 1.0).astype(np.float32)
    wm_level = float(np.median(raw["t1"][brain & (wm > 0.9)]))
    t1 = np.where(brain, raw["t1"] / wm_level, 0.0).astype(np.float32)
    tissue = brain & (gm + wm >= 0.5)
    csf = brain & (gm + wm < 0.1)
    levels = {
        "wm": 1.0,
        "gm": float(np.median(t1[brain & (gm > 0.8)])),
        "csf": float(np.median(t1[csf])) if csf.any() else 0.3,
    }
    LOGGER.debug("template loaded from %s, levels %s", folder, levels)
    return Template(
        t1=_readonly(t1), brain=_readonly(brain), tissue=_readonly(tissue), gm=_readonly(gm),
        wm=_readonly(wm), levels=levels, source=str(folder),
    )


def head_points(shape: tuple[int, int, int] = HEAD_SHAPE) -> tuple[np.ndarray, ...]:
    """Template-world coordinates (mm) of the head-grid voxels, each of shape ``HEAD_SHAPE``."""
    axes = [HEAD_ORIGIN[a] + HEAD_SPACING * np.arange(shape[a], dtype=np.float32) for a in range(3)]
    return tuple(np.meshgrid(*axes, indexing="ij"))


def cord_weight(x: np.ndarray, y: np.ndarray, z: np.ndarray, softness: float = 0.7) -> np.ndarray:
    """Soft occupancy (0-1) of the synthetic spinal cord at template-world points (mm).

    The cord continues the medulla below the template's bottom slice: a cylinder of radius
    ``CORD_RADIUS`` mm centred on ``CORD_CENTRE`` that drifts 0.1 mm posterior per mm downwards,
    present only for z < -72 mm (where the template has no data).
    """
    depth = CORD_TOP - z
    radial = np.hypot(x - CORD_CENTRE[0], y - (CORD_CENTRE[1] - 0.1 * np.maximum(depth, 0)))
    inside = (CORD_RADIUS - radial) / softness
    below = (depth + 0.5) / softness
    return _sigmoid(np.minimum(inside, below))


def _sigmoid(value: np.ndarray) -> np.ndarray:
    return (0.5 * (1.0 + np.tanh(0.5 * value))).astype(np.float32)


@functools.lru_cache(maxsize=1)
def head_distance() -> np.ndarray:
    """Distance (mm) from the brain plus spinal cord on the 2 mm head grid (cached, read-only).

    Returns
    -------
    numpy.ndarray of float32, shape ``HEAD_SHAPE``
        0 inside the brain or cord, Euclidean distance in mm outside.
    """
    template = load_template()
    x, y, z = head_points()
    index = np.stack([x - TEMPLATE_ORIGIN[0], y - TEMPLATE_ORIGIN[1], z - TEMPLATE_ORIGIN[2]])
    brain = ndi.map_coordinates(
        template.brain.astype(np.float32), index.reshape(3, -1), order=1, mode="constant", cval=0.0
    ).reshape(HEAD_SHAPE)
    occupied = (brain >= 0.5) | (cord_weight(x, y, z) >= 0.5)
    distance = ndi.distance_transform_edt(~occupied, sampling=HEAD_SPACING).astype(np.float32)
    return _readonly(distance)
