"""Lesion segmentation of a T1w on the MNI152NLin2009aSym grid with a model bundle.

:func:`segment_template_t1w` takes the app's ``std_t1w`` (the bias-corrected head resampled
onto the 1 mm template grid, 197×233×189), brings it to the bundle's grid when the bundle was
trained at another resolution (linear; the demo bundle: 2 mm, 99×117×95), runs the ensemble
(:class:`~stroke_lesion_app.core.ensemble.EnsemblePredictor`), brings the probability back to
the 1 mm grid (linear) and applies the bundle's threshold and small-component rule there. The
rule's minimum size counts voxels of the bundle's grid, so at 1 mm it is scaled by
``resolution_mm ** 3``.

:func:`get_predictor` keeps one predictor per (bundle, settings) in each process, so a worker
that segments several images loads the networks once. The bundle arrives as a parsed, validated
:class:`~.bundle.ModelBundle` (the CLI checked its checksums once per run): nothing here reads
its manifest again or hashes a checkpoint.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .bundle import ModelBundle
from .device import resolve_device
from .fileio import write_nifti_atomic
from .postprocess import postprocess_probability
from .templates import TEMPLATE, TEMPLATE_AFFINE, TEMPLATE_SHAPE, template_grid

__all__ = ["BRAIN_MARGIN_MM", "InferenceSettings", "get_predictor", "resample_to_grid",
           "restrict_to_brain", "segment_template_t1w"]

LOGGER = logging.getLogger(__name__)
_GRID_TOLERANCE_MM = 1e-3
#: Lesion probability is kept up to this distance (mm) outside the brain mask.
BRAIN_MARGIN_MM = 2.0


@dataclass(frozen=True)
class InferenceSettings:
    """How the ensemble runs.

    Attributes
    ----------
    device : {"auto", "cpu", "cuda"}
        Where the networks run: the user's ``--device``, resolved by :meth:`resolved` on the
        machine that runs them (``auto``: a GPU when one is visible there).
    tta : bool
        Mirroring test-time augmentation.
    step_size : float
        Sliding-window step, fraction of the patch size (0.5: nnU-Net's default).
    folds_per_member : int or None
        Use only the first N folds of each member (``--fast``: 1); ``None``: all.
    num_threads : int or None
        torch CPU threads.
    window_batch_size : int or None
        Sliding windows per network call; ``None``: chosen from the device and each member's
        patch size (:func:`~.sliding_window.default_window_batch_size`).
    """

    device: str = "cpu"
    tta: bool = True
    step_size: float = 0.5
    folds_per_member: int | None = None
    num_threads: int | None = None
    window_batch_size: int | None = None

    @classmethod
    def from_options(cls, *, device: str = "auto", tta: bool = True, step_size: float = 0.5,
                     fast: bool = False, num_threads: int | None = None) -> InferenceSettings:
        """The settings of the command-line options; the one definition of ``--fast``.

        ``--fast`` means no mirroring, step 1.0 (half-overlapping windows become abutting) and
        one fold per member: about 8× (TTA) × 2-4× (step) × folds fewer network passes. It
        overrides ``tta`` and ``step_size``.

        Examples
        --------
        >>> InferenceSettings.from_options(fast=True, tta=True, step_size=0.5)
        InferenceSettings(device='auto', tta=False, step_size=1.0, folds_per_member=1, \
num_threads=None, window_batch_size=None)
        """
        if fast:
            return cls(device=device, tta=False, step_size=1.0, folds_per_member=1,
                       num_threads=num_threads)
        return cls(device=device, tta=bool(tta), step_size=float(step_size),
                   num_threads=num_threads)

    def resolved(self, num_threads: int | None = None) -> InferenceSettings:
        """These settings with :attr:`device` decided here (:func:`~.device.resolve_device`).

        Call it where the networks will run. ``num_threads``, when given, replaces
        :attr:`num_threads`.

        Raises
        ------
        DeviceError
            ``cuda`` and no CUDA device is visible on this machine.
        """
        return dataclasses.replace(
            self, device=resolve_device(self.device),
            num_threads=self.num_threads if num_threads is None else num_threads)

    def describe(self) -> dict:
        """Settings as recorded in the outputs' sidecars."""
        return {"Device": self.device, "TestTimeAugmentation": "mirroring" if self.tta else "none",
                "SlidingWindowStep": self.step_size,
                "FoldsPerMember": self.folds_per_member or "all"}


#: Predictors kept loaded in this process, by (bundle folder, manifest sha256, settings).
_PREDICTORS: dict = {}
_MAX_PREDICTORS = 2


def get_predictor(bundle: ModelBundle, settings: InferenceSettings):
    """An :class:`~.ensemble.EnsemblePredictor` of ``bundle``, built once per process and
    settings (the two most recent are kept).

    Parameters
    ----------
    bundle : ModelBundle
        A bundle already validated (:func:`~.bundle.validate_bundle`) by the caller: its
        checksums are not computed again here.
    settings : InferenceSettings
        With a resolved device (``cpu`` or ``cuda``, see :meth:`InferenceSettings.resolved`).
    """
    from .ensemble import EnsemblePredictor

    key = (str(bundle.root), bundle.manifest_sha256, settings)
    if key not in _PREDICTORS:
        while len(_PREDICTORS) >= _MAX_PREDICTORS:
            _PREDICTORS.pop(next(iter(_PREDICTORS)))
        _PREDICTORS[key] = EnsemblePredictor(
            bundle, device=settings.device, tta=settings.tta, step_size=settings.step_size,
            num_threads=settings.num_threads, folds_per_member=settings.folds_per_member,
            window_batch_size=settings.window_batch_size, verify=False)
    return _PREDICTORS[key]


def resample_to_grid(data: np.ndarray, affine: np.ndarray, shape, target_affine: np.ndarray,
                     order: int = 1) -> np.ndarray:
    """Sample ``data`` (voxel→world ``affine``) at the voxel centres of another grid.

    Parameters
    ----------
    data : numpy.ndarray
        3-D array.
    affine : numpy.ndarray
        4×4 voxel-to-world (mm) affine of ``data``.
    shape : tuple of int
        Target grid shape.
    target_affine : numpy.ndarray
        4×4 voxel-to-world affine of the target grid (same world space).
    order : int
        Spline order: 1 linear, 0 nearest.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of ``shape``; 0 outside ``data``'s field of view.
    """
    vox = np.linalg.inv(affine) @ target_affine
    return ndimage.affine_transform(np.asarray(data, dtype=np.float32), vox[:3, :3],
                                    offset=vox[:3, 3], output_shape=tuple(shape), order=order,
                                    mode="constant", cval=0.0)


def restrict_to_brain(probability: np.ndarray, brain_mask: np.ndarray, zooms,
                      margin_mm: float = BRAIN_MARGIN_MM) -> np.ndarray:
    """Zero the lesion probability farther than ``margin_mm`` outside the brain mask.

    A stroke lesion lies in the brain; a model that has not seen some extracerebral structure
    (the mastoid air cells of a real head, for the synthetic demo bundle) can call it lesion.
    The margin keeps lesion borders and CSF-filled cavities that a skull-stripper trimmed.

    Parameters
    ----------
    probability : numpy.ndarray
        Lesion probability, 3-D, on the grid of ``brain_mask``.
    brain_mask : numpy.ndarray
        Brain mask on the same grid (non-zero inside).
    zooms : sequence of float
        Voxel sizes in mm.
    margin_mm : float
        Distance from the brain mask (mm, Euclidean) within which the probability is kept.

    Returns
    -------
    numpy.ndarray
        ``float32`` copy of ``probability``, 0 where the distance exceeds ``margin_mm``.

    Raises
    ------
    ValueError
        The shapes differ or the brain mask is empty.
    """
    brain = np.asarray(brain_mask) > 0
    if brain.shape != probability.shape:
        raise ValueError(f"brain mask shape {brain.shape} differs from the probability's "
                         f"{probability.shape}")
    if not brain.any():
        raise ValueError("the brain mask is empty; check the skull-stripping output")
    restricted = np.array(probability, dtype=np.float32)
    distance = ndimage.distance_transform_edt(~brain, sampling=[float(z) for z in zooms[:3]])
    restricted[distance > margin_mm] = 0.0
    return restricted


def segment_template_t1w(std_t1w: Path | str, bundle: ModelBundle,
                         settings: InferenceSettings, out_probseg: Path | str,
                         out_mask: Path | str, brain_mask: Path | str | None = None,
                         brain_margin_mm: float = BRAIN_MARGIN_MM) -> dict:
    """Segment a T1w on the 1 mm template grid; write the lesion probability and mask there.

    Parameters
    ----------
    std_t1w : path
        T1w on the 1 mm MNI152NLin2009aSym grid (197×233×189).
    bundle : ModelBundle
        The validated model bundle (:func:`~.bundle.validate_bundle`).
    settings : InferenceSettings
        Device (resolved: ``cpu`` or ``cuda``), TTA, step, folds.
    out_probseg : path
        Output lesion probability, ``float32`` in [0, 1], 1 mm template grid.
    out_mask : path
        Output lesion mask, ``uint8`` {0, 1}, same grid.
    brain_mask : path, optional
        Brain mask on the same grid (the native mask projected to the template). When given,
        the probability is set to 0 farther than ``brain_margin_mm`` outside it
        (:func:`restrict_to_brain`) before thresholding, in both outputs.
    brain_margin_mm : float
        Margin around the brain mask, mm.

    Returns
    -------
    dict
        Sidecar metadata: the bundle's identity, the settings, the network passes, the grids,
        the threshold and small-component rule, and the lesion volume in template mL.

    Raises
    ------
    ValueError
        ``std_t1w`` is not on the 1 mm template grid.
    """
    image = nib.load(str(std_t1w))
    data = np.asanyarray(image.dataobj, dtype=np.float32)
    data = data[..., 0] if data.ndim == 4 and data.shape[3] == 1 else data
    if data.shape != TEMPLATE_SHAPE or not np.allclose(image.affine, TEMPLATE_AFFINE,
                                                       atol=_GRID_TOLERANCE_MM):
        raise ValueError(f"{std_t1w}: not on the 1 mm {TEMPLATE} grid {TEMPLATE_SHAPE}; "
                         "segment the std_t1w output of the registration step.")
    predictor = get_predictor(bundle, settings)
    resolution = float(bundle.resolution_mm)
    if math.isclose(resolution, 1.0):
        probability = predictor.predict_probability(data, (1.0, 1.0, 1.0))
        min_voxels = bundle.min_component_voxels
    else:
        shape, affine = template_grid(resolution)
        coarse = resample_to_grid(data, image.affine, shape, affine, order=1)
        coarse_probability = predictor.predict_probability(coarse, (resolution,) * 3)
        probability = np.clip(resample_to_grid(coarse_probability, affine, TEMPLATE_SHAPE,
                                               image.affine, order=1), 0.0, 1.0)
        min_voxels = round(bundle.min_component_voxels * resolution ** 3)
    voxel_ml = float(abs(np.linalg.det(image.affine[:3, :3]))) / 1000.0
    restriction = "none"
    if brain_mask is not None:
        brain = nib.load(str(brain_mask))
        if brain.shape[:3] != TEMPLATE_SHAPE or not np.allclose(
                brain.affine, image.affine, atol=_GRID_TOLERANCE_MM):
            raise ValueError(f"{brain_mask}: brain mask not on the 1 mm {TEMPLATE} grid.")
        unrestricted = probability
        probability = restrict_to_brain(probability, np.asanyarray(brain.dataobj),
                                        brain.header.get_zooms(), brain_margin_mm)
        removed = int(((unrestricted >= predictor.threshold)
                       & (probability < predictor.threshold)).sum())
        restriction = {"MarginMm": brain_margin_mm,
                       "RemovedAboveThresholdMl": round(removed * voxel_ml, 4)}
        if removed:
            LOGGER.info("%s: %.2f mL above threshold lay more than %g mm outside the brain "
                        "mask and was removed.", std_t1w, removed * voxel_ml, brain_margin_mm)
    mask = postprocess_probability(probability, predictor.threshold, min_voxels,
                                   bundle.connectivity)
    _write(probability.astype(np.float32), image.affine, out_probseg, np.float32)
    _write(mask.astype(np.uint8), image.affine, out_mask, np.uint8)
    LOGGER.info("%s: %d lesion voxel(s) (%.2f mL in template space).", std_t1w,
                int(mask.sum()), mask.sum() * voxel_ml)
    return {
        "Model": bundle.identity(),
        "ModelDescription": bundle.description,
        "Demo": bundle.demo,
        "Inference": settings.describe(),
        "NetworkPasses": [one.label for one in predictor.passes],
        "SlidingWindowsPerCall": {one.label: one.predictor.window_batch_size
                                  for one in predictor.passes},
        "Ensemble": "weighted mean of the members' softmax lesion probabilities",
        "ModelResolution": f"{resolution:g} mm",
        "Resampling": ("none" if math.isclose(resolution, 1.0) else
                       f"T1w linearly resampled to the {resolution:g} mm grid; probability "
                       "linearly resampled back to 1 mm before thresholding"),
        "BrainMaskRestriction": restriction,
        "Threshold": predictor.threshold,
        "MinComponentVoxels": min_voxels,
        "Connectivity": bundle.connectivity,
        "TemplateLesionVolumeMl": round(float(mask.sum()) * voxel_ml, 4),
        "Versions": _versions(),
    }


def _write(data: np.ndarray, affine: np.ndarray, path: Path | str, dtype) -> None:
    out = nib.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    out.header.set_data_dtype(dtype)
    out.set_qform(affine, code=4)  # MNI
    out.set_sform(affine, code=4)
    write_nifti_atomic(out, path)


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("stroke-lesion-app", "nnunetv2", "torch"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = "unknown"
    return found
