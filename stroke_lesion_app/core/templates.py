"""The MNI152NLin2009aSym template, found offline.

Order of lookup (never a network call):

1. TemplateFlow: ``$TEMPLATEFLOW_HOME/tpl-MNI152NLin2009aSym/`` when it holds real (non-empty)
   ``res-1_T1w`` and ``res-1_desc-brain_mask`` files, as in the container image;
2. the copy of the ICBM 2009a *symmetric* template shipped inside nilearn's wheel
   (``mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz``: skull-stripped, rescaled to uint8,
   the same 197×233×189 grid at 1 mm), with the GM/WM probability maps beside it.

Which one was used is logged once per process. Both are checked against the expected grid.

A second, optional group space: FSL's MNI152 (``MNI152NLin6Asym``, 182×218×182 at 1 mm), read
only from ``$TEMPLATEFLOW_HOME/tpl-MNI152NLin6Asym/`` (TemplateFlow's ``res-01`` T1w and brain
mask; the container prefetches them). :func:`fsl_template` returns ``None`` when they are
absent; nilearn has no copy of it. ``core/template_transforms.py`` maps 2009aSym images onto it.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from .atlases import Atlas

LOGGER = logging.getLogger("stroke_lesion_app.templates")

TEMPLATE = "MNI152NLin2009aSym"
#: Shape of the template grid at 1 mm (the grid of ATLAS v2.0).
TEMPLATE_SHAPE = (197, 233, 189)
#: Affine of that grid (RAS+, origin at the anterior commissure).
TEMPLATE_AFFINE = np.array([[1.0, 0, 0, -98], [0, 1, 0, -134], [0, 0, 1, -72], [0, 0, 0, 1]])

#: TemplateFlow files the app reads from ``$TEMPLATEFLOW_HOME/tpl-MNI152NLin2009aSym/``, as the
#: part of ``tpl-MNI152NLin2009aSym_res-1_<part>.nii.gz`` after the resolution (the container
#: prefetches exactly these with ``scripts/fetch_templates.py``). Required files first.
TEMPLATEFLOW_REQUIRED = ("T1w", "desc-brain_mask")
TEMPLATEFLOW_OPTIONAL = ("label-GM_probseg", "label-WM_probseg", "label-CSF_probseg")
#: Label atlases picked up automatically (see :func:`templateflow_atlases`).
TEMPLATEFLOW_ATLAS_GLOB = f"tpl-{TEMPLATE}_res-1_atlas-*_dseg.nii.gz"


def templateflow_filename(part: str) -> str:
    """File name of a 1 mm TemplateFlow image of the template, e.g. ``"desc-brain_mask"``.

    >>> templateflow_filename("T1w")
    'tpl-MNI152NLin2009aSym_res-1_T1w.nii.gz'
    """
    return f"tpl-{TEMPLATE}_res-1_{part}.nii.gz"


_NILEARN_NAMES = {
    "T1w": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "GM": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "WM": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}


@dataclass(frozen=True)
class TemplateFiles:
    """Paths of the template images (1 mm, MNI152NLin2009aSym grid).

    Attributes
    ----------
    t1w : Path
        T1w template (whole head for TemplateFlow, brain only for the nilearn copy).
    brain_mask : Path or None
        Brain mask, when the source provides one (TemplateFlow).
    gm_probseg, wm_probseg : Path or None
        Tissue probability maps (values 0-1 for TemplateFlow, 0-255 for nilearn).
    source : str
        ``"templateflow"`` or ``"nilearn"``.
    """

    t1w: Path
    brain_mask: Path | None
    gm_probseg: Path | None
    wm_probseg: Path | None
    source: str


def _templateflow_files() -> TemplateFiles | None:
    home = os.environ.get("TEMPLATEFLOW_HOME")
    if not home:
        return None
    folder = Path(home) / f"tpl-{TEMPLATE}"
    paths = {name: folder / templateflow_filename(name)
             for name in TEMPLATEFLOW_REQUIRED + TEMPLATEFLOW_OPTIONAL}
    if not all(paths[name].is_file() and paths[name].stat().st_size > 0
               for name in TEMPLATEFLOW_REQUIRED):
        return None

    def optional(name):
        path = paths[name]
        return path if path.is_file() and path.stat().st_size > 0 else None

    return TemplateFiles(paths["T1w"], paths["desc-brain_mask"], optional("label-GM_probseg"),
                         optional("label-WM_probseg"), "templateflow")


def nilearn_data_dir() -> Path:
    """Folder of the template files shipped inside nilearn's wheel."""
    import nilearn.datasets

    return Path(nilearn.datasets.__file__).parent / "data"


def _nilearn_files() -> TemplateFiles:
    folder = nilearn_data_dir()
    paths = {key: folder / name for key, name in _NILEARN_NAMES.items()}
    missing = [str(path) for path in paths.values() if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{missing[0]}: template missing from the nilearn package and "
                                "TEMPLATEFLOW_HOME has no MNI152NLin2009aSym; reinstall nilearn "
                                "or set TEMPLATEFLOW_HOME to a TemplateFlow copy.")
    return TemplateFiles(paths["T1w"], None, paths["GM"], paths["WM"], "nilearn")


@functools.lru_cache(maxsize=1)
def get_template() -> TemplateFiles:
    """Locate the template files (TemplateFlow first, then nilearn's copy) and check the grid.

    Raises
    ------
    ValueError
        The found T1w is not on the 197×233×189 1 mm MNI152NLin2009aSym grid.
    """
    files = _templateflow_files() or _nilearn_files()
    image = nib.load(str(files.t1w))
    if image.shape[:3] != TEMPLATE_SHAPE or not np.allclose(image.affine, TEMPLATE_AFFINE,
                                                            atol=1e-3):
        raise ValueError(f"{files.t1w}: not the {TEMPLATE} 1 mm grid {TEMPLATE_SHAPE}; point "
                         "TEMPLATEFLOW_HOME at an unmodified TemplateFlow copy.")
    LOGGER.info("Template %s from %s (%s)", TEMPLATE, files.source, files.t1w.parent)
    return files


def template_brain(files: TemplateFiles) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """The template's brain image (float32, 0-1 scaled) and brain mask (uint8), 1 mm grid.

    For the nilearn copy, which is already skull-stripped, the mask is the non-zero region with
    holes filled.
    """
    from scipy import ndimage

    image = nib.load(str(files.t1w))
    data = np.asanyarray(image.dataobj, dtype=np.float32)
    if files.brain_mask is not None:
        mask = np.asanyarray(nib.load(str(files.brain_mask)).dataobj) > 0
    else:
        mask = ndimage.binary_fill_holes(ndimage.binary_closing(data > 0, iterations=2))
    brain = np.where(mask, data, 0).astype(np.float32)
    brain /= max(float(brain.max()), 1e-6)
    return (nib.Nifti1Image(brain, image.affine),
            nib.Nifti1Image(mask.astype(np.uint8), image.affine))


def tissue_probability(files: TemplateFiles, tissue: str) -> nib.Nifti1Image:
    """GM or WM probability map (float32, 0-1) on the template grid."""
    path = {"GM": files.gm_probseg, "WM": files.wm_probseg}[tissue]
    if path is None:
        raise ValueError(f"{files.t1w.parent}: no {tissue} probability map in this template copy")
    image = nib.load(str(path))
    data = np.asanyarray(image.dataobj, dtype=np.float32)
    if data.max() > 1.0:
        data /= 255.0
    return nib.Nifti1Image(data, image.affine)


def tissue_maps(files: TemplateFiles) -> dict[str, np.ndarray]:
    """GM, WM and CSF membership (float32, 0-1) on the 1 mm template grid.

    TemplateFlow provides all three; with nilearn's copy (GM and WM only) CSF is the rest of
    the brain mask, ``clip(brain - GM - WM, 0, 1)``, which is mostly ventricles and sulci.
    """
    maps = {tissue: np.asanyarray(tissue_probability(files, tissue).dataobj)
            for tissue in ("GM", "WM")}
    csf_path = (files.t1w.parent / templateflow_filename("label-CSF_probseg")
                if files.source == "templateflow" else None)
    if csf_path is not None and csf_path.is_file() and csf_path.stat().st_size > 0:
        maps["CSF"] = np.asanyarray(nib.load(str(csf_path)).dataobj, dtype=np.float32)
    else:
        _, mask = template_brain(files)
        brain = np.asanyarray(mask.dataobj).astype(np.float32)
        maps["CSF"] = np.clip(brain - maps["GM"] - maps["WM"], 0.0, 1.0)
    return maps


def templateflow_atlases() -> list[Atlas]:
    """Label atlases of MNI152NLin2009aSym found in ``$TEMPLATEFLOW_HOME``.

    Looks for ``tpl-MNI152NLin2009aSym_res-1_atlas-<name>[_desc-<d>]_dseg.nii.gz`` with its
    label table ``tpl-MNI152NLin2009aSym_atlas-<name>[_desc-<d>]_dseg.tsv`` (TemplateFlow's
    layout); empty files (TemplateFlow's skeleton) are skipped. Never downloads.
    """
    home = os.environ.get("TEMPLATEFLOW_HOME")
    if not home:
        return []
    folder = Path(home) / f"tpl-{TEMPLATE}"
    found = []
    for image in sorted(folder.glob(TEMPLATEFLOW_ATLAS_GLOB)):
        if image.stat().st_size == 0:
            continue
        stem = image.name[: -len("_dseg.nii.gz")]
        entities = dict(part.split("-", 1) for part in stem.split("_")[1:] if "-" in part)
        name = entities["atlas"] + (entities["desc"].capitalize() if "desc" in entities else "")
        table = folder / (image.name.replace("_res-1", "").replace(".nii.gz", ".tsv"))
        found.append(Atlas(name, image, table if table.is_file() else None))
    return found


def template_grid(resolution_mm: float = 1.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """The MNI152NLin2009aSym grid at ``resolution_mm``, covering the 1 mm grid's box.

    The grid keeps the 1 mm grid's origin, (-98, -134, -72) mm, and enough voxels of
    ``resolution_mm`` to reach (or pass) its last voxel centre (98, 98, 116) mm.

    Parameters
    ----------
    resolution_mm : float
        Isotropic voxel size in mm, in [0.5, 8].

    Returns
    -------
    shape : tuple of int
        Grid shape, e.g. (197, 233, 189) at 1 mm and (99, 117, 95) at 2 mm.
    affine : numpy.ndarray
        4×4 voxel-to-world affine (RAS+, mm).

    Examples
    --------
    >>> shape, affine = template_grid(2)
    >>> shape, affine[:3, 3].tolist()
    ((99, 117, 95), [-98.0, -134.0, -72.0])
    """
    if not 0.5 <= float(resolution_mm) <= 8.0:
        raise ValueError(f"template resolution must lie in [0.5, 8] mm, got {resolution_mm!r}")
    resolution_mm = float(resolution_mm)
    shape = tuple(int(math.ceil((n - 1) / resolution_mm - 1e-6)) + 1 for n in TEMPLATE_SHAPE)
    affine = TEMPLATE_AFFINE.copy()
    affine[:3, :3] = np.eye(3) * resolution_mm
    return shape, affine


#: FSL's MNI152 template (the second, optional group space).
FSL_TEMPLATE = "MNI152NLin6Asym"
#: Shape of its 1 mm grid.
FSL_TEMPLATE_SHAPE = (182, 218, 182)
#: Affine of TemplateFlow's ``res-01`` grid (RAS+). FSL's own ``MNI152_T1_1mm`` covers the same
#: box in LAS order (origin (90, -126, -72) mm); :func:`fsl_template` accepts either.
FSL_TEMPLATE_AFFINE = np.array([[1.0, 0, 0, -91], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
#: TemplateFlow files of MNI152NLin6Asym the app reads, as the part of
#: ``tpl-MNI152NLin6Asym_res-01_<part>.nii.gz`` after the resolution (prefetched by
#: ``scripts/fetch_templates.py``). Note TemplateFlow's ``res-01`` here against ``res-1`` for
#: MNI152NLin2009aSym.
FSL_TEMPLATEFLOW_FILES = ("T1w", "desc-brain_mask")

_FSL_LOGGED: set[str] = set()


def fsl_templateflow_filename(part: str) -> str:
    """File name of a 1 mm TemplateFlow image of MNI152NLin6Asym.

    >>> fsl_templateflow_filename("desc-brain_mask")
    'tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz'
    """
    return f"tpl-{FSL_TEMPLATE}_res-01_{part}.nii.gz"


def _log_once(level: int, message: str) -> None:
    if message not in _FSL_LOGGED:
        _FSL_LOGGED.add(message)
        LOGGER.log(level, message)


def _is_fsl_grid(image: nib.Nifti1Image) -> bool:
    """182×218×182 voxels of 1 mm, axis-aligned, covering FSL's MNI152 box (RAS or LAS)."""
    affine = image.affine
    if image.shape[:3] != FSL_TEMPLATE_SHAPE or not np.allclose(np.abs(affine[:3, :3]),
                                                                 np.eye(3), atol=1e-3):
        return False
    corners = nib.affines.apply_affine(affine, [[0, 0, 0], np.subtract(FSL_TEMPLATE_SHAPE, 1)])
    expected = nib.affines.apply_affine(FSL_TEMPLATE_AFFINE,
                                        [[0, 0, 0], np.subtract(FSL_TEMPLATE_SHAPE, 1)])
    return np.allclose(np.sort(corners, axis=0), expected, atol=1e-3)


def fsl_template() -> TemplateFiles | None:
    """The MNI152NLin6Asym 1 mm T1w (+ brain mask) from ``$TEMPLATEFLOW_HOME``, or ``None``.

    Looks only in ``$TEMPLATEFLOW_HOME/tpl-MNI152NLin6Asym/`` for non-empty
    ``tpl-MNI152NLin6Asym_res-01_T1w.nii.gz`` and ``..._res-01_desc-brain_mask.nii.gz`` (never
    downloads). When they are absent, or not on the 182×218×182 1 mm grid, it returns ``None``
    and says so in one log line per process (naming the folder), so callers can skip the space.

    Returns
    -------
    TemplateFiles or None
        ``t1w`` (a whole head) and ``brain_mask``; no tissue maps; ``source="templateflow"``.
    """
    home = os.environ.get("TEMPLATEFLOW_HOME")
    if not home:
        _log_once(logging.INFO, f"Template {FSL_TEMPLATE} not available: TEMPLATEFLOW_HOME is "
                                "unset; skipping that space")
        return None
    folder = Path(home) / f"tpl-{FSL_TEMPLATE}"
    paths = [folder / fsl_templateflow_filename(part) for part in FSL_TEMPLATEFLOW_FILES]
    missing = [p.name for p in paths if not (p.is_file() and p.stat().st_size > 0)]
    if missing:
        _log_once(logging.INFO, f"Template {FSL_TEMPLATE} not available: no {' or '.join(missing)}"
                                f" in {folder}; skipping that space")
        return None
    for path in paths:
        try:
            good = _is_fsl_grid(nib.load(str(path)))
        except (OSError, EOFError, ValueError, nib.filebasedimages.ImageFileError) as error:
            good, reason = False, f"unreadable ({type(error).__name__})"
        else:
            reason = f"not the {FSL_TEMPLATE} 1 mm grid {FSL_TEMPLATE_SHAPE}"
        if not good:
            _log_once(logging.WARNING, f"{path}: {reason}; skipping that space (refetch it with "
                                       "scripts/fetch_templates.py)")
            return None
    _log_once(logging.INFO, f"Template {FSL_TEMPLATE} from templateflow ({folder})")
    return TemplateFiles(paths[0], paths[1], None, None, "templateflow")
