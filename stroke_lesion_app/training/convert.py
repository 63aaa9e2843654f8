"""Conversion of lesion datasets to nnU-Net v2 raw datasets on the MNI152NLin2009aSym grid.

Three sources (``docs/mscsa-spec.md`` §5 "Data"):

* :func:`convert_atlas` - an ATLAS v2.0 tree. Like the paper's ``convert.py``, the T1w images are
  copied unchanged (they are on the 1 mm template grid already) and the masks are binarised
  (:func:`binarise_mask`);
* :func:`convert_template_space_bids` - a BIDS dataset whose T1w images are already in
  MNI152NLin2009aSym, with template-space lesion masks in a separate (derivatives) folder;
* :func:`convert_synthetic` - a dataset of :mod:`stroke_lesion_app.synthetic`: each native T1w is
  resampled into template space with the generator's known affine and paired with the
  template-space truth mask. This is what the demo model trains on.

The output is ``<out_raw_dir>/Dataset<NNN>_<Name>/`` with ``imagesTr/<case>_0000.nii.gz``,
``labelsTr/<case>.nii.gz`` (uint8, {0: background, 1: lesion}), ``imagesTs/<case>_0000.nii.gz``
(images without a mask) and ``dataset.json`` (``channel_names`` ``{"0": "T1w"}``, ``labels``,
``numTraining``, ``file_ending``). Case identifiers are ``sub-<label>[_ses-<label>]``.

The whole dataset is written to a hidden folder beside its final name and renamed at the end, so
a half-written dataset is never visible to nnU-Net; an existing dataset is only replaced with
``overwrite=True``. NIfTI files written here are gzip'ed with mtime 0: the same input gives the
same bytes.

The template grid (:data:`TEMPLATE_SHAPE`, :data:`TEMPLATE_AFFINE`) is the app's own, from
``stroke_lesion_app.core.templates``, so training data and inference share one definition.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
from scipy import ndimage

from stroke_lesion_app import __version__
from stroke_lesion_app.core.bids import replace_directory
from stroke_lesion_app.core.fileio import write_bytes_atomic as _write_bytes
from stroke_lesion_app.core.templates import TEMPLATE as TEMPLATE_SPACE
from stroke_lesion_app.core.templates import TEMPLATE_AFFINE, TEMPLATE_SHAPE, template_grid

__all__ = [
    "DEFAULT_DATASET_ID",
    "DEFAULT_DATASET_NAME",
    "TEMPLATE_AFFINE",
    "TEMPLATE_SHAPE",
    "TEMPLATE_SPACE",
    "binarise_mask",
    "convert_atlas",
    "convert_synthetic",
    "convert_template_space_bids",
    "dataset_folder_name",
    "template_grid",
]

LOGGER = logging.getLogger(__name__)


DEFAULT_DATASET_ID = 501
DEFAULT_DATASET_NAME = "StrokeLesion"
#: Tolerance (mm) when checking that two images share a grid.
GRID_TOLERANCE_MM = 1e-3
#: Spec §5: a mask whose maximum is below 1 - SOFT_EPSILON is thresholded at SOFT_EPSILON.
SOFT_EPSILON = 1e-5

_GZIP_LEVEL = 1
_MNI_CODE = 4  # NIfTI xform code "MNI 152": every output of this module is in template space
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
_ATLAS_T1W = f"_space-{TEMPLATE_SPACE}_T1w.nii.gz"
_ATLAS_MASK = f"_space-{TEMPLATE_SPACE}_label-L_desc-T1lesion_mask.nii.gz"
_TRUTH_PIPELINE = "synthetic-truth"


@dataclass(frozen=True)
class _Case:
    """One case to write: where its image and (optional) mask come from and how."""

    case: str
    image: Path
    mask: Path | None
    #: 4×4 map from template world (mm) to the image's world (mm) when resampling; None: the
    #: image's world is template space already (identity).
    template_to_image: np.ndarray | None = None
    #: Run the app's N4 bias correction on the image before resampling.
    bias_correct: bool = False


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def binarise_mask(data: np.ndarray) -> tuple[np.ndarray, bool]:
    """Binarise a lesion mask with the rule of the paper's ``convert.py`` (spec §5).

    If the mask's maximum is below ``1 - 1e-5`` (a "soft" mask, e.g. one stored as 0.999), its
    voxels at or above ``1e-5`` are lesion (``BinaryThreshold(1e-5, 1 - 1e-5)``; the upper
    bound cannot be reached then). Otherwise voxels at or above 0.5 are lesion: exact {0, 1}
    masks are unchanged (the paper copied them as they were; 0.5 is our choice for any other
    values). NaN is background.

    Parameters
    ----------
    data : numpy.ndarray
        Mask values.

    Returns
    -------
    mask : numpy.ndarray
        uint8 array of 0 and 1, the shape of ``data``.
    soft : bool
        Whether the soft-mask rule was applied (never for an empty mask: all values 0).

    Examples
    --------
    >>> mask, soft = binarise_mask(np.array([0.0, 0.5, 0.999]))
    >>> mask.tolist(), soft
    ([0, 1, 1], True)
    >>> binarise_mask(np.array([0.0, 0.4, 1.0]))[0].tolist()
    [0, 0, 1]
    >>> binarise_mask(np.zeros(3))[1]
    False
    """
    data = np.asarray(data, dtype=np.float64)
    finite = np.where(np.isfinite(data), data, 0.0)
    top = float(finite.max()) if finite.size else 0.0
    soft = 0.0 < top < 1.0 - SOFT_EPSILON
    threshold = SOFT_EPSILON if soft else 0.5
    return (finite >= threshold).astype(np.uint8), soft


def dataset_folder_name(dataset_id: int, name: str) -> str:
    """nnU-Net v2's folder name ``Dataset<NNN>_<name>``, after checking both parts.

    Examples
    --------
    >>> dataset_folder_name(501, "StrokeLesion")
    'Dataset501_StrokeLesion'
    """
    if (not isinstance(dataset_id, int) or isinstance(dataset_id, bool)
            or not 1 <= dataset_id <= 999):
        raise ValueError(f"dataset id {dataset_id!r} is not in 1..999; nnU-Net numbers datasets "
                         "with three digits (use 500 or more for your own).")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(f"dataset name {name!r} is invalid; use letters, digits, '_' and '-', "
                         "e.g. StrokeLesion.")
    return f"Dataset{dataset_id:03d}_{name}"


def convert_atlas(atlas_root: Path | str, out_raw_dir: Path | str, *,
                  dataset_id: int = DEFAULT_DATASET_ID, name: str = DEFAULT_DATASET_NAME,
                  resolution_mm: float | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Convert an ATLAS v2.0 tree into an nnU-Net v2 raw dataset.

    Every ``*_space-MNI152NLin2009aSym_T1w.nii.gz`` under ``atlas_root`` (any depth) is a case;
    its mask is the ``*_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz`` beside it.
    Cases with a mask go to ``imagesTr``/``labelsTr``, the others (ATLAS's test images) to
    ``imagesTs``. Images are copied byte for byte, masks binarised (:func:`binarise_mask`) and
    written as uint8 with the image's affine (they must share its grid). A case is named
    ``sub-<label>_ses-<label>`` (``sub-r001s004_ses-1``); the paper's ``splits_final.pkl`` names
    the same case by its file stem (``sub-r001s004_ses-1_space-MNI152NLin2009aSym_T1w``), which
    :func:`stroke_lesion_app.training.splits.case_id` maps back (``train --splits`` does).

    Parameters
    ----------
    atlas_root : path
        ATLAS v2.0 folder (e.g. ``ATLAS_2/Training`` or the whole ``ATLAS_2``).
    out_raw_dir : path
        nnU-Net's ``nnUNet_raw`` folder; the dataset goes to ``Dataset<NNN>_<name>/`` in it.
    dataset_id : int
        nnU-Net dataset number, 1..999.
    name : str
        Dataset name (letters, digits, ``_``, ``-``).
    resolution_mm : float, optional
        Resample images (linear) and binarised masks (nearest) to :func:`template_grid` at this
        voxel size. Default: copy ATLAS's 1 mm grid unchanged, as the paper did.
    overwrite : bool
        Replace an existing dataset folder of the same name made by this module.

    Returns
    -------
    dict
        ``dataset_dir`` (Path), ``training`` and ``test`` (case identifiers), ``soft_masks``
        (cases whose mask needed the soft-mask rule) and ``resolution_mm``.

    Raises
    ------
    ValueError
        Missing folder, no T1w image, two images of one case, or a mask off its image's grid.
    FileExistsError
        The dataset folder exists (and ``overwrite`` is false), or another folder has the id.
    """
    atlas_root = Path(atlas_root)
    if not atlas_root.is_dir():
        raise ValueError(f"ATLAS folder {atlas_root} does not exist; pass the unpacked ATLAS "
                         "v2.0 folder (e.g. ATLAS_2/Training).")
    cases = []
    for image in sorted(atlas_root.rglob(f"*{_ATLAS_T1W}")):
        if any(part.startswith(".") for part in image.relative_to(atlas_root).parts):
            continue
        mask = image.with_name(image.name[: -len(_ATLAS_T1W)] + _ATLAS_MASK)
        cases.append(_Case(_case_id(image), image, mask if mask.is_file() else None))
    if not cases:
        raise ValueError(f"no *{_ATLAS_T1W} file under {atlas_root}; pass the ATLAS v2.0 "
                         "folder that holds the sub-*/ses-*/anat folders.")
    return _convert(cases, out_raw_dir, dataset_id=dataset_id, name=name,
                    resolution_mm=resolution_mm, overwrite=overwrite,
                    provenance={"conversion": "atlas"})


def convert_template_space_bids(bids_root: Path | str, mask_root: Path | str,
                                out_raw_dir: Path | str, *,
                                dataset_id: int = DEFAULT_DATASET_ID,
                                name: str = DEFAULT_DATASET_NAME,
                                resolution_mm: float | None = None,
                                overwrite: bool = False) -> dict[str, Any]:
    """Convert a BIDS dataset whose T1w images are already in MNI152NLin2009aSym.

    Cases are the ``sub-*/[ses-*/]anat/*_T1w.nii.gz`` files of ``bids_root`` (their ``space``
    entity, if any, must be ``MNI152NLin2009aSym``; one T1w per subject and session). A case's
    mask is the one ``*_space-MNI152NLin2009aSym_*label-L*_mask.nii.gz`` file under
    ``mask_root`` (any depth) with the same ``sub`` and ``ses`` entities; cases without one go
    to ``imagesTs``. The images' world coordinates are taken to be template millimetres: no
    registration happens here.

    Parameters
    ----------
    bids_root : path
        BIDS dataset (raw or derivatives) of template-space T1w images.
    mask_root : path
        Folder of template-space lesion masks (e.g. a derivatives dataset).
    out_raw_dir : path
        nnU-Net's ``nnUNet_raw`` folder.
    dataset_id : int
        nnU-Net dataset number, 1..999.
    name : str
        Dataset name.
    resolution_mm : float, optional
        Resample images (linear) and masks (nearest, after binarising) to :func:`template_grid`
        at this voxel size. Default: keep each image's grid (its mask must share it).
    overwrite : bool
        Replace an existing dataset folder of the same name made by this module.

    Returns
    -------
    dict
        As :func:`convert_atlas`.
    """
    bids_root, mask_root = Path(bids_root), Path(mask_root)
    for folder, what in ((bids_root, "BIDS folder"), (mask_root, "mask folder")):
        if not folder.is_dir():
            raise ValueError(f"{what} {folder} does not exist; check the path.")
    masks: dict[str, list[Path]] = {}
    for path in sorted(mask_root.rglob("*_mask.nii.gz")):
        entities = _entities(path.name)
        if entities.get("space") == TEMPLATE_SPACE and entities.get("label") == "L":
            masks.setdefault(_case_id(path), []).append(path)
    cases = []
    for image in _bids_t1w(bids_root):
        space = _entities(image.name).get("space", TEMPLATE_SPACE)
        if space != TEMPLATE_SPACE:
            raise ValueError(f"{image} is in space {space!r}, not {TEMPLATE_SPACE}; register it "
                             "to the template first.")
        case = _case_id(image)
        found = masks.get(case, [])
        if len(found) > 1:
            raise ValueError(f"{len(found)} template-space lesion masks for {case} under "
                             f"{mask_root} ({found[0].name}, {found[1].name}); keep one.")
        cases.append(_Case(case, image, found[0] if found else None))
    if not cases:
        raise ValueError(f"no sub-*/[ses-*/]anat/*_T1w.nii.gz under {bids_root}; pass a BIDS "
                         "dataset of template-space T1w images.")
    return _convert(cases, out_raw_dir, dataset_id=dataset_id, name=name,
                    resolution_mm=resolution_mm, overwrite=overwrite,
                    provenance={"conversion": "template-space-bids"})


def convert_synthetic(bids_root: Path | str, out_raw_dir: Path | str, *,
                      dataset_id: int = DEFAULT_DATASET_ID, name: str = DEFAULT_DATASET_NAME,
                      resolution_mm: float = 2.0, bias_correct: bool = True,
                      overwrite: bool = False) -> dict[str, Any]:
    """Convert a synthetic dataset (``stroke-lesion-model synthesize``) for training.

    Each native T1w is bias-corrected with the app's own N4 step
    (:func:`stroke_lesion_app.core.intensity.n4_bias_correct`, as the participant workflow does
    before registration) and resampled (linear) onto :func:`template_grid` at ``resolution_mm`` with
    the generator's known affine (``NativeToTemplate`` of
    ``derivatives/synthetic-truth/.../*_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.json``),
    and the 1 mm template-space truth mask (``*_space-MNI152NLin2009aSym_label-L_mask.nii.gz``)
    is resampled (nearest) to the same grid. The generator's smooth non-linear displacement
    (at most ``MaxDisplacementMm``, about 2 mm) is not in that affine, so image and label can be
    off by up to that much.

    The known affine stands in for the app's estimated registration (on synthetic heads the two
    agree to about 0.5 mm), so the model trains on images like the app's ``std_t1w``: a
    bias-corrected head (skull kept, as in ATLAS v2.0) on the template grid.

    Parameters
    ----------
    bids_root : path
        Root of a dataset written by :func:`stroke_lesion_app.synthetic.synthesize_dataset`.
    out_raw_dir : path
        nnU-Net's ``nnUNet_raw`` folder.
    dataset_id : int
        nnU-Net dataset number, 1..999.
    name : str
        Dataset name.
    resolution_mm : float
        Voxel size (mm) of the output grid (2 mm: 99×117×95).
    bias_correct : bool
        Apply N4 first (the app does; turn off only to save time in tests).
    overwrite : bool
        Replace an existing dataset folder of the same name made by this module.

    Returns
    -------
    dict
        As :func:`convert_atlas` (every case is a training case).
    """
    bids_root = Path(bids_root)
    truth_root = bids_root / "derivatives" / _TRUTH_PIPELINE
    if not bids_root.is_dir():
        raise ValueError(f"synthetic dataset {bids_root} does not exist; make one with "
                         "`stroke-lesion-model synthesize`.")
    if not truth_root.is_dir():
        raise ValueError(f"{truth_root} does not exist; {bids_root} is not a synthetic dataset "
                         "(make one with `stroke-lesion-model synthesize`).")
    cases = []
    for image in _bids_t1w(bids_root):
        prefix = image.name[: -len("_T1w.nii.gz")]
        truth = truth_root / image.parent.relative_to(bids_root)
        xfm = truth / f"{prefix}_from-T1w_to-{TEMPLATE_SPACE}_mode-image_xfm.json"
        mask = truth / f"{prefix}_space-{TEMPLATE_SPACE}_label-L_mask.nii.gz"
        for path in (xfm, mask):
            if not path.is_file():
                raise ValueError(f"{path} is missing; regenerate {bids_root} with "
                                 "`stroke-lesion-model synthesize`.")
        cases.append(_Case(_case_id(image), image, mask, _template_to_native(xfm),
                           bias_correct=bias_correct))
    if not cases:
        raise ValueError(f"no sub-*/[ses-*/]anat/*_T1w.nii.gz under {bids_root}; make a dataset "
                         "with `stroke-lesion-model synthesize`.")
    return _convert(cases, out_raw_dir, dataset_id=dataset_id, name=name,
                    resolution_mm=_check_resolution(resolution_mm), overwrite=overwrite,
                    provenance={"conversion": "synthetic", "bias_corrected": bias_correct,
                                "note": "synthetic data, resampled with the generator's known "
                                        "affine; not real scans"})


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _convert(cases: Sequence[_Case], out_raw_dir: Path | str, *, dataset_id: int, name: str,
             resolution_mm: float | None, overwrite: bool,
             provenance: dict[str, Any]) -> dict[str, Any]:
    folder = dataset_folder_name(dataset_id, name)
    if resolution_mm is not None:
        resolution_mm = _check_resolution(resolution_mm)
    seen: dict[str, Path] = {}
    for case in cases:
        if case.case in seen:
            raise ValueError(f"case {case.case} has two T1w images ({seen[case.case]} and "
                             f"{case.image}); keep one per subject and session.")
        seen[case.case] = case.image
    if not any(case.mask is not None for case in cases):
        first = min(cases, key=lambda item: item.case).image
        raise ValueError(f"none of the {len(cases)} image(s) has a lesion mask (first: {first}); "
                         "point at the folder that holds the training cases and their masks.")
    out_raw_dir = Path(out_raw_dir).absolute()
    target = _check_target(out_raw_dir, folder, dataset_id, overwrite)
    grid = None if resolution_mm is None else template_grid(resolution_mm)
    out_raw_dir.mkdir(parents=True, exist_ok=True)
    partial = out_raw_dir / f".{folder}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    training, test, soft = [], [], []
    try:
        for case in sorted(cases, key=lambda item: item.case):
            is_soft = _write_case(case, partial, grid)
            (training if case.mask is not None else test).append(case.case)
            if is_soft:
                soft.append(case.case)
        description = {
            "channel_names": {"0": "T1w"},
            "labels": {"background": 0, "lesion": 1},
            "numTraining": len(training),
            "file_ending": ".nii.gz",
            "name": folder,
            "description": f"Stroke lesions on T1w in {TEMPLATE_SPACE} "
                           f"({provenance['conversion']} conversion)",
            "stroke_lesion_app": {
                "version": __version__, **provenance, "space": TEMPLATE_SPACE,
                "resolution_mm": resolution_mm, "numTest": len(test),
                "soft_masks_binarised": soft,
            },
        }
        _write_bytes(partial / "dataset.json",
                     (json.dumps(description, indent=4) + "\n").encode())
        replace_directory(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    LOGGER.info("Wrote %s: %d training and %d test case(s); %d soft mask(s) binarised", target,
                len(training), len(test), len(soft))
    return {"dataset_dir": target, "training": training, "test": test, "soft_masks": soft,
            "resolution_mm": resolution_mm}


def _check_target(out_raw_dir: Path, folder: str, dataset_id: int, overwrite: bool) -> Path:
    target = out_raw_dir / folder
    if out_raw_dir.exists() and not out_raw_dir.is_dir():
        raise ValueError(f"{out_raw_dir} is a file; pass the nnUNet_raw folder.")
    if out_raw_dir.is_dir():
        clash = sorted(path.name for path in out_raw_dir.glob(f"Dataset{dataset_id:03d}_*")
                       if path.name != folder)
        if clash:
            raise FileExistsError(f"{out_raw_dir / clash[0]} already uses dataset id "
                                  f"{dataset_id}; choose another id or remove that folder.")
    if target.exists():
        if not overwrite:
            raise FileExistsError(f"{target} already exists; choose another name or id, or "
                                  "pass overwrite=True (--force).")
        try:
            ours = "stroke_lesion_app" in json.loads((target / "dataset.json").read_text())
        except (OSError, ValueError):
            ours = False
        if not ours:
            raise FileExistsError(f"{target} exists and was not written by this converter; "
                                  "remove it yourself or choose another name or id.")
    return target


def _write_case(case: _Case, root: Path, grid) -> bool:
    """Write one case's image (and label); returns whether its mask was soft."""
    image_dir = root / ("imagesTr" if case.mask is not None else "imagesTs")
    image_out = image_dir / f"{case.case}_0000.nii.gz"
    image = _load(case.image, "T1w image")
    if grid is None:
        image_out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(case.image, image_out)
        ref_shape, ref_affine = image.shape[:3], image.affine
    else:
        if case.bias_correct:
            image = _bias_corrected(case.image, root)
        data = _squeeze(image.get_fdata(dtype=np.float32), case.image, "T1w image")
        to_image = np.eye(4) if case.template_to_image is None else case.template_to_image
        resampled = _resample(data, image.affine, grid, to_image, order=1)
        _write_nifti(image_out, resampled.astype(np.float32), grid[1])
        ref_shape, ref_affine = grid
    if case.mask is None:
        return False
    mask_image = _load(case.mask, "lesion mask")
    mask_data = _squeeze(np.asanyarray(mask_image.dataobj), case.mask, "lesion mask")
    binary, soft = binarise_mask(mask_data)
    if soft:
        LOGGER.info("%s: soft mask (max %.6g) binarised at %g", case.mask,
                    float(np.nanmax(mask_data)) if mask_data.size else 0.0, SOFT_EPSILON)
    if grid is None:
        if (binary.shape != tuple(ref_shape)
                or not np.allclose(mask_image.affine, ref_affine, rtol=0,
                                   atol=GRID_TOLERANCE_MM)):
            raise ValueError(f"lesion mask {case.mask} (shape {binary.shape}) is not on the grid "
                             f"of {case.image} (shape {tuple(ref_shape)}); fix the mask or pass "
                             "a resolution to resample both.")
    else:
        # the mask is in template space: template world = mask world
        binary = _resample(binary, mask_image.affine, grid, np.eye(4), order=0)
    _write_nifti(root / "labelsTr" / f"{case.case}.nii.gz", binary.astype(np.uint8), ref_affine)
    return soft


def _bias_corrected(path: Path, root: Path) -> nib.Nifti1Image:
    """The app's N4 correction of ``path``, loaded into memory (the temporary file is removed)."""
    from stroke_lesion_app.core.intensity import n4_bias_correct

    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".n4-{os.getpid()}.nii.gz"
    try:
        n4_bias_correct(path, tmp)
        image = nib.load(str(tmp))
        return nib.Nifti1Image(image.get_fdata(dtype=np.float32), image.affine)
    finally:
        tmp.unlink(missing_ok=True)


def _resample(data: np.ndarray, source_affine: np.ndarray, grid, template_to_source: np.ndarray,
              order: int) -> np.ndarray:
    """Sample ``data`` at the grid's voxels mapped through ``template_to_source`` (world mm)."""
    shape, affine = grid
    vox = np.linalg.inv(source_affine) @ template_to_source @ affine
    return ndimage.affine_transform(data, vox[:3, :3], offset=vox[:3, 3], output_shape=shape,
                                    order=order, mode="constant", cval=0.0)


def _write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Write ``.nii.gz`` byte-reproducibly (gzip mtime 0) via a temporary name + rename."""
    image = nib.Nifti1Image(data, affine)
    image.set_qform(affine, code=_MNI_CODE)
    image.set_sform(affine, code=_MNI_CODE)
    image.header.set_xyzt_units("mm")
    _write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=_GZIP_LEVEL, mtime=0))




# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def _load(path: Path, role: str) -> nib.spatialimages.SpatialImage:
    try:
        return nib.load(str(path))
    except Exception as error:  # nibabel raises many types for missing/corrupt files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{role} {path}: unreadable NIfTI ({reason}); check the file.") from None


def _squeeze(data: np.ndarray, path: Path, role: str) -> np.ndarray:
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{role} {path} has shape {data.shape}, not one 3D volume; pass a 3D "
                         "image.")
    return data


def _entities(filename: str) -> dict[str, str]:
    """BIDS entities of a file name (``sub-01_ses-2_T1w.nii.gz`` → {sub: 01, ses: 2})."""
    stem = filename.split(".")[0]
    return dict(part.split("-", 1) for part in stem.split("_") if "-" in part)


def _case_id(path: Path) -> str:
    entities = _entities(path.name)
    if "sub" not in entities:
        raise ValueError(f"{path} has no sub-<label> entity in its name; name files "
                         "sub-<label>[_ses-<label>]_..._T1w.nii.gz.")
    return f"sub-{entities['sub']}" + (f"_ses-{entities['ses']}" if "ses" in entities else "")


def _bids_t1w(root: Path) -> list[Path]:
    return sorted({*root.glob("sub-*/anat/*_T1w.nii.gz"),
                   *root.glob("sub-*/ses-*/anat/*_T1w.nii.gz")})


def _template_to_native(xfm: Path) -> np.ndarray:
    try:
        matrix = np.array(json.loads(xfm.read_text())["NativeToTemplate"], dtype=float)
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{xfm}: no readable NativeToTemplate matrix ({error}); regenerate the "
                         "dataset with `stroke-lesion-model synthesize`.") from None
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise ValueError(f"{xfm}: NativeToTemplate is not a finite 4x4 matrix; regenerate the "
                         "dataset with `stroke-lesion-model synthesize`.")
    return np.linalg.inv(matrix)


def _check_resolution(resolution_mm: float) -> float:
    try:
        value = float(resolution_mm)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.5 <= value <= 8.0:
        raise ValueError(f"resolution {resolution_mm!r} mm is outside [0.5, 8]; pass a voxel "
                         "size in mm, e.g. 2.")
    return value
