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
from .intensity import head_box
from .postprocess import postprocess_probability
from .templates import TEMPLATE, TEMPLATE_AFFINE, TEMPLATE_SHAPE, template_grid

__all__ = ["BRAIN_BOX_CONTEXT_MM", "BRAIN_MARGIN_MM", "InferenceSettings", "brain_region",
           "get_predictor", "region_on_grid", "resample_to_grid", "restrict_to_brain",
           "segment_template_t1w", "segmentation_memory_gb"]

LOGGER = logging.getLogger(__name__)
_GRID_TOLERANCE_MM = 1e-3
#: Lesion probability is kept up to this distance (mm) outside the brain mask.
BRAIN_MARGIN_MM = 2.0
#: The networks see the brain mask's bounding box plus BRAIN_MARGIN_MM plus this context (mm),
#: grown to whole sliding windows (:func:`~.ensemble.window_region`).
BRAIN_BOX_CONTEXT_MM = 2.0


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
    brain_box : bool
        When a brain mask is given, run the sliding window over the brain's bounding box only
        (:func:`brain_region`; the whole image is still z-scored): 8 instead of 18 windows
        per pass at the demo and paper plans. Off by default: the predictions near the box
        move with the window placement (``benchmarks/results/brain_box_cpu.md``); on with
        ``--fast``. ``False``: the whole template grid, as nnU-Net would.
    """

    device: str = "cpu"
    tta: bool = True
    step_size: float = 0.5
    folds_per_member: int | None = None
    num_threads: int | None = None
    window_batch_size: int | None = None
    brain_box: bool = False

    @classmethod
    def from_options(cls, *, device: str = "auto", tta: bool = True, step_size: float = 0.5,
                     fast: bool = False, num_threads: int | None = None,
                     brain_box: bool = False) -> InferenceSettings:
        """The settings of the command-line options; the one definition of ``--fast``.

        ``--fast`` means no mirroring, step 1.0 (half-overlapping windows become abutting),
        the brain box and one fold per member: about 8× (TTA) × 2-4× (step) × folds fewer
        network passes. It overrides ``tta``, ``step_size`` and ``brain_box``.

        Examples
        --------
        >>> InferenceSettings.from_options(fast=True, tta=True, step_size=0.5)
        InferenceSettings(device='auto', tta=False, step_size=1.0, folds_per_member=1, \
num_threads=None, window_batch_size=None, brain_box=True)
        """
        if fast:
            return cls(device=device, tta=False, step_size=1.0, folds_per_member=1,
                       num_threads=num_threads, brain_box=True)
        return cls(device=device, tta=bool(tta), step_size=float(step_size),
                   num_threads=num_threads, brain_box=bool(brain_box))

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
                "FoldsPerMember": self.folds_per_member or "all",
                "BrainBox": self.brain_box}


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


#: Resident memory of a segmentation worker before any network is loaded (GB): Python, torch,
#: nnU-Net, the template-grid images and the brain-mask distance map.
BASE_MEMORY_GB = 1.1
#: Inference activations (fp32, batch 1) per voxel of a window and per feature of the first
#: stage, bytes: the paper plan (128³ windows, 32 first-stage features) peaked at 2.7 GB with
#: 0.24 GB of weights and ~0.5 GB of interpreter (``benchmarks/results/segmentation_cpu.md``).
ACTIVATION_BYTES_PER_VOXEL_FEATURE = 32


def segmentation_memory_gb(bundle: ModelBundle, settings: InferenceSettings) -> float:
    """Peak resident memory of one segmentation node running ``bundle``, in GB (an estimate).

    Every network of the ensemble stays loaded, so the weights of all used folds add up; the
    activations of the largest window batch come on top (networks run one after the other);
    each pass's probability map is kept until the average. Nipype's schedulers read the
    result as the node's ``mem_gb``, so ``--mem-gb`` keeps large ensembles from running side
    by side on a machine they do not fit.

    Parameters
    ----------
    bundle : ModelBundle
        The bundle (its members' ``plans.json`` and checkpoint files are read for sizes;
        missing files count as 0).
    settings : InferenceSettings
        Folds per member and window batch size.

    Returns
    -------
    float
        GB: :data:`BASE_MEMORY_GB` + weights (the checkpoint files' sizes, an upper bound as
        they may also hold optimiser state) + activations
        (window voxels × first-stage features × windows per call ×
        :data:`ACTIVATION_BYTES_PER_VOXEL_FEATURE`) + one ``float32`` probability map per pass
        on the bundle's grid.
    """
    import json

    from .sliding_window import default_window_batch_size

    weights = activations = 0
    passes = 0
    for member in bundle.members:
        folds = member.folds[:settings.folds_per_member] if settings.folds_per_member else \
            member.folds
        passes += len(folds)
        for fold in folds:
            path = member.checkpoint_path(fold)
            weights += path.stat().st_size if path.is_file() else 0
        try:
            plans = json.loads((member.folder / "plans.json").read_text())
            configuration = plans["configurations"][member.configuration]
            patch = [int(n) for n in configuration["patch_size"]]
            arch = configuration.get("architecture", {}).get("arch_kwargs", {})
            features = int((arch.get("features_per_stage") or [32])[0])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        batch = settings.window_batch_size or default_window_batch_size(
            "cuda" if str(settings.device).startswith("cuda") else "cpu", patch)
        activations = max(activations, math.prod(patch) * features * batch
                          * ACTIVATION_BYTES_PER_VOXEL_FEATURE)
    grid_shape, _ = template_grid(float(bundle.resolution_mm))
    maps = passes * math.prod(grid_shape) * 4
    return round(BASE_MEMORY_GB + (weights + activations + maps) / 1024 ** 3, 2)


def brain_region(brain_mask: np.ndarray, margin_voxels: float) -> tuple[slice, ...]:
    """Bounding box of the brain mask plus a margin: where the networks need to look.

    Parameters
    ----------
    brain_mask : numpy.ndarray
        3-D brain mask (non-zero inside), e.g. on the 1 mm template grid.
    margin_voxels : float
        Margin added on every side, voxels (= mm on the 1 mm grid); rounded up.

    Returns
    -------
    tuple of slice
        ``(i, j, k)`` box, clipped to the mask's shape.

    Raises
    ------
    ValueError
        The mask is empty.

    Examples
    --------
    >>> mask = np.zeros((20, 20, 20), bool); mask[5:9, 10:12, 0:3] = True
    >>> brain_region(mask, 2)
    (slice(3, 11, None), slice(8, 14, None), slice(0, 5, None))
    """
    brain = np.asarray(brain_mask) > 0
    if not brain.any():
        raise ValueError("the brain mask is empty; check the skull-stripping output")
    return head_box(brain, (1.0, 1.0, 1.0), margin_mm=margin_voxels)


def region_on_grid(region: tuple[slice, ...], affine: np.ndarray, target_affine: np.ndarray,
                   target_shape) -> tuple[slice, ...]:
    """The voxel box of another grid (same world space) that covers ``region``.

    Parameters
    ----------
    region : tuple of slice
        Box on the grid of ``affine`` (voxel → world mm).
    affine, target_affine : numpy.ndarray
        4×4 voxel → world affines of the two grids.
    target_shape : tuple of int
        Shape of the target grid.

    Returns
    -------
    tuple of slice
        Smallest box of the target grid that contains every corner of ``region``.
    """
    corners = np.array([[c[0], c[1], c[2]] for c in np.ndindex(2, 2, 2)], dtype=float)
    starts = np.array([r.start for r in region], dtype=float)
    stops = np.array([r.stop - 1 for r in region], dtype=float)
    points = starts + corners * (stops - starts)
    voxels = nib.affines.apply_affine(np.linalg.inv(target_affine) @ affine, points)
    low = np.maximum(np.floor(voxels.min(axis=0)).astype(int), 0)
    high = np.minimum(np.ceil(voxels.max(axis=0)).astype(int) + 1, target_shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(low, high))


def _region_text(region: tuple[slice, ...], margin_mm: float) -> str:
    box = ", ".join(f"{axis} {r.start}:{r.stop}" for axis, r in zip("ijk", region))
    return (f"brain box + {margin_mm:g} mm on the 1 mm template grid ({box}), grown to whole "
            "sliding windows; probability 0 outside")


def segment_template_t1w(std_t1w: Path | str, bundle: ModelBundle,
                         settings: InferenceSettings, out_probseg: Path | str,
                         out_mask: Path | str, brain_mask: Path | str | None = None,
                         brain_margin_mm: float = BRAIN_MARGIN_MM,
                         brain_box_context_mm: float = BRAIN_BOX_CONTEXT_MM) -> dict:
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
    brain_box_context_mm : float
        With ``settings.brain_box``: the networks see the brain mask's bounding box plus
        ``brain_margin_mm`` plus this much context on every side (mm), grown to whole windows.

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
    brain = None
    if brain_mask is not None:
        brain = nib.load(str(brain_mask))
        if brain.shape[:3] != TEMPLATE_SHAPE or not np.allclose(
                brain.affine, image.affine, atol=_GRID_TOLERANCE_MM):
            raise ValueError(f"{brain_mask}: brain mask not on the 1 mm {TEMPLATE} grid.")
        brain_data = np.asanyarray(brain.dataobj) > 0
    predictor = get_predictor(bundle, settings)
    resolution = float(bundle.resolution_mm)
    region = region_description = None
    if brain is not None and settings.brain_box:
        box_margin_mm = brain_margin_mm + brain_box_context_mm
        zoom = float(brain.header.get_zooms()[0])
        region = brain_region(brain_data, box_margin_mm / zoom)
        region_description = _region_text(region, box_margin_mm)
    if math.isclose(resolution, 1.0):
        probability = predictor.predict_probability(data, (1.0, 1.0, 1.0), region)
        min_voxels = bundle.min_component_voxels
    else:
        shape, affine = template_grid(resolution)
        coarse = resample_to_grid(data, image.affine, shape, affine, order=1)
        coarse_region = (None if region is None else
                         region_on_grid(region, image.affine, affine, shape))
        coarse_probability = predictor.predict_probability(coarse, (resolution,) * 3,
                                                           coarse_region)
        probability = np.clip(resample_to_grid(coarse_probability, affine, TEMPLATE_SHAPE,
                                               image.affine, order=1), 0.0, 1.0)
        min_voxels = round(bundle.min_component_voxels * resolution ** 3)
    voxel_ml = float(abs(np.linalg.det(image.affine[:3, :3]))) / 1000.0
    restriction = "none"
    if brain is not None:
        unrestricted = probability
        probability = restrict_to_brain(probability, brain_data, brain.header.get_zooms(),
                                        brain_margin_mm)
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
        "SlidingWindowRegion": region_description or "whole image",
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
