"""Lesion-aware normalisation of one T1w for the group-space lesion maps (second pass).

Segmentation keeps the registration the model was trained with (affine, as ATLAS v2.0). The
maps that go into group analyses are then re-normalised with the lesion known, so that a large
lesion does not pull healthy tissue into it:

* **enantiomorphic** (Nachev et al. 2008): the lesion, grown by :data:`FILL_MARGIN_MM`, is
  replaced by the mirror image of the other hemisphere (mirrored about x = 0 of the symmetric
  template through a first, cost-function-masked SyN), intensity-matched and feathered into
  its surroundings; the filled brain is then registered with SyN. Used for unilateral lesions;
  two SyN stages, so about twice the time of the other branches.
* **cost-function** masking (Brett et al. 2001): the lesion, grown by
  :data:`FILL_MARGIN_MM`, is removed from the moving image's metric mask of the SyN stage.
  Used for bilateral lesions (nothing healthy to mirror) and very large ones (the mirror would
  replace most of a hemisphere).
* **syn**: plain SyN (no lesion, or chosen by the user).

Every branch starts from the first pass's affine (``anat2std``: rigid → affine, unmasked,
which stayed robust on synthetic heads with large lesions where masked linear stages did not)
and runs one SyN stage (:data:`SYN_PARAMETERS`); the result is a composite transform that
includes that affine. :func:`choose_branch` decides between the branches from the lesion's
shape on the template grid (:data:`BILATERAL_SHARE`, :data:`LARGE_HEMISPHERE_SHARE`).
"""

from __future__ import annotations

import functools
import logging
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage as ndi

from stroke_lesion_app.core import registration
from stroke_lesion_app.core.group_stacks import is_exact_mirror, mirror_axis

LOGGER = logging.getLogger("stroke_lesion_app.lesion_normalisation")

#: Branches of :func:`normalise_with_lesion`; ``auto`` lets :func:`choose_branch` decide.
BRANCHES = ("enantiomorphic", "cost-function", "syn")
#: Choices of the ``--group-normalisation`` option: the branches, ``auto``, and ``affine``
#: (no second pass: the group maps are those of the segmentation's registration).
CHOICES = ("auto", *BRANCHES, "affine")
#: A lesion is bilateral when the smaller hemisphere holds at least this share of it.
BILATERAL_SHARE = 0.10
#: A lesion is very large when it covers more than this share of its hemisphere's brain.
LARGE_HEMISPHERE_SHARE = 0.40
#: Margin (mm) by which the lesion is grown before it is filled or masked: the hypointense
#: rim (partial volume, oedema) a segmentation leaves outside the mask.
FILL_MARGIN_MM = 2.0
#: Width (mm, Gaussian sigma) of the blend between filled and original intensities.
FEATHER_MM = 1.0
#: The SyN stage of every branch (antspyx ``SyNOnly`` on top of the first pass's affine):
#: cross-correlation (radius 2 voxels), three levels at shrink 4-2-1 (smoothing 2-1-0 voxels),
#: the finest level not iterated (the field is estimated at 2 mm), a smoother field than
#: ANTsPy's default (flow sigma 6, total sigma 1). On synthetic heads with a known deformation
#: ANTsPy's default (Mattes metric, flow sigma 3, total sigma 0) made healthy tissue worse than
#: the affine alone (1.21 against 0.60 mm); these settings brought it to 0.23 mm, in about
#: 80 s on 2 cores (``benchmarks/lesion_normalisation.py``).
SYN_PARAMETERS = {"transform": "SyN", "grad_step": 0.25, "flow_sigma": 6.0, "total_sigma": 1.0,
                  "metric": "CC", "metric_radius_voxels": 2, "reg_iterations": (30, 15, 0),
                  "shrink_factors": (4, 2, 1), "smoothing_sigmas_voxels": (2, 1, 0)}


@dataclass
class LesionGeometry:
    """Where a lesion lies on the symmetric template grid (after the first-pass affine).

    Attributes
    ----------
    volume_ml : float
        Lesion volume on the template grid (mL).
    left_ml, right_ml : float
        Volume with x < 0 and x > 0 mm (the midline plane x = 0 counted half to each).
    minor_share : float
        Share of the lesion in its smaller hemisphere (0-0.5).
    hemisphere_share : float
        Lesion volume / brain volume of the hemisphere that holds most of it (0-1).
    mirror_overlap : float
        Share of the lesion whose mirror image (x → −x) is also lesion (0-1).
    """

    volume_ml: float
    left_ml: float
    right_ml: float
    minor_share: float
    hemisphere_share: float
    mirror_overlap: float


def mirror_index(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray | None:
    """Voxel index, along the grid's x axis, of the mirror (world x → −x) of each index, or
    None when the voxel centres are not exactly symmetric about x = 0 (or the axes are not
    aligned with the world).

    >>> from stroke_lesion_app.core.templates import TEMPLATE_AFFINE, TEMPLATE_SHAPE
    >>> index = mirror_index(TEMPLATE_AFFINE, TEMPLATE_SHAPE)
    >>> int(index[0]), int(index[98]), int(index[196])
    (196, 98, 0)
    """
    try:
        axis, source, inside = mirror_axis(affine, shape)
    except ValueError:
        return None
    x = affine[0, axis] * np.arange(shape[axis]) + affine[0, 3]
    mirrored_x = affine[0, axis] * np.clip(source, 0, shape[axis] - 1) + affine[0, 3]
    if not is_exact_mirror(source, inside) or not np.allclose(mirrored_x, -x, atol=1e-3):
        return None
    return source


def mirror_image(data: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``data`` mirrored about world x = 0 on its own grid (voxel-exact on a symmetric grid).

    Raises
    ------
    ValueError
        The grid is not symmetric about x = 0 (the MNI152NLin2009aSym grid is).
    """
    index = mirror_index(affine, data.shape)
    if index is None:
        raise ValueError("grid is not symmetric about x = 0 mm; mirror on the "
                         "MNI152NLin2009aSym grid")
    return np.take(data, index, axis=mirror_axis(affine, data.shape)[0])


def lesion_geometry(std_lesion: np.ndarray, std_brain: np.ndarray,
                    affine: np.ndarray) -> LesionGeometry:
    """Measure a template-grid lesion (bool, shape of the symmetric template grid) against the
    template brain mask (bool, same grid)."""
    lesion = np.asarray(std_lesion) > 0
    brain = np.asarray(std_brain) > 0
    unit = float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0
    x = affine[0, 0] * np.arange(lesion.shape[0]) + affine[0, 3]
    weight_left = np.clip(0.5 - x, 0.0, 1.0)[:, None, None]  # x = 0 counts half
    weight_right = 1.0 - weight_left
    left = float((lesion * weight_left).sum())
    right = float((lesion * weight_right).sum())
    total = left + right
    if total == 0:
        return LesionGeometry(0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    hemisphere = weight_left if left >= right else weight_right
    hemisphere_brain = float((brain * hemisphere).sum())
    mirrored = mirror_image(lesion, affine)
    return LesionGeometry(
        volume_ml=round(total * unit, 4), left_ml=round(left * unit, 4),
        right_ml=round(right * unit, 4), minor_share=round(min(left, right) / total, 4),
        hemisphere_share=round(max(left, right) / max(hemisphere_brain, 1.0), 4),
        mirror_overlap=round(float((lesion & mirrored).sum()) / float(lesion.sum()), 4))


def choose_branch(geometry: LesionGeometry) -> tuple[str, str]:
    """The branch for a lesion, and why, in a phrase.

    >>> choose_branch(LesionGeometry(0, 0, 0, 0, 0, 0))
    ('syn', 'no lesion')
    >>> choose_branch(LesionGeometry(80, 80, 0, 0.0, 0.2, 0.0))[0]
    'enantiomorphic'
    >>> choose_branch(LesionGeometry(80, 40, 40, 0.5, 0.1, 0.3))[0]
    'cost-function'
    """
    if geometry.volume_ml == 0:
        return "syn", "no lesion"
    if geometry.minor_share >= BILATERAL_SHARE:
        return "cost-function", (f"bilateral lesion ({100 * geometry.minor_share:.0f} % in the "
                                 f"smaller hemisphere, ≥ {100 * BILATERAL_SHARE:.0f} %)")
    if geometry.hemisphere_share > LARGE_HEMISPHERE_SHARE:
        return "cost-function", (f"very large lesion ({100 * geometry.hemisphere_share:.0f} % "
                                 f"of its hemisphere, > {100 * LARGE_HEMISPHERE_SHARE:.0f} %)")
    return "enantiomorphic", (f"unilateral lesion ({100 * geometry.minor_share:.0f} % in the "
                              "other hemisphere)")


def _grown(mask: np.ndarray, zooms, margin_mm: float) -> np.ndarray:
    """``mask`` grown by ``margin_mm`` (Euclidean, anisotropic voxels respected)."""
    if margin_mm <= 0 or not mask.any():
        return mask.copy()
    distance = ndi.distance_transform_edt(~mask, sampling=zooms)
    return distance <= margin_mm


def enantiomorphic_fill(brain: nib.Nifti1Image, lesion: np.ndarray, mirrored: np.ndarray,
                        margin_mm: float = FILL_MARGIN_MM,
                        feather_mm: float = FEATHER_MM) -> tuple[nib.Nifti1Image, dict]:
    """Replace the lesion of a native brain by its mirror image.

    Parameters
    ----------
    brain : nibabel image
        Skull-stripped T1w, native space (any grid).
    lesion : numpy.ndarray of bool
        Lesion on ``brain``'s grid.
    mirrored : numpy.ndarray of float
        ``brain`` mirrored about the template's midline, on ``brain``'s grid (see
        :func:`mirrored_brain`); 0 where the mirror falls outside the image.
    margin_mm, feather_mm : float
        Growth of the lesion before filling, and the blend width (mm).

    Returns
    -------
    filled : nibabel image
        float32, ``brain``'s grid and affine.
    details : dict
        ``filled_ml`` (native mL filled), ``intensity_scale`` (mirror → native, median ratio
        over the healthy brain).
    """
    data = np.asarray(brain.dataobj, dtype=np.float32)
    zooms = brain.header.get_zooms()[:3]
    grown = _grown(np.asarray(lesion, bool), zooms, margin_mm)
    healthy = (data > 0) & (mirrored > 0) & ~_grown(grown, zooms, 2 * margin_mm)
    scale = 1.0
    if healthy.sum() > 100:
        scale = float(np.median(data[healthy]) / max(np.median(mirrored[healthy]), 1e-6))
    sigma = [feather_mm / z for z in zooms]
    weight = np.clip(ndi.gaussian_filter(grown.astype(np.float32), sigma) * 2.0, 0.0, 1.0)
    weight[grown] = 1.0
    weight[mirrored <= 0] = 0.0  # nothing to fill with: keep the image
    filled = (1.0 - weight) * data + weight * scale * mirrored
    unit = float(np.prod(zooms)) / 1000.0
    return (nib.Nifti1Image(filled.astype(np.float32), brain.affine, brain.header),
            {"filled_ml": round(float(grown.sum()) * unit, 3),
             "intensity_scale": round(scale, 4)})


def mirrored_brain(brain: Path | str, anat2std_xfm: Path | str, std2anat_xfm: Path | str,
                   template: Path | str, out_dir: Path) -> np.ndarray:
    """The native brain mirrored about the template's x = 0 plane, on the native grid.

    The brain goes to the template grid through the first pass (``anat2std_xfm``, linear),
    is mirrored there (voxel-exact on the symmetric MNI152NLin2009aSym grid) and comes back
    through ``std2anat_xfm`` (linear). Shape: that of ``brain``.
    """
    std = registration.apply_transform(brain, template, anat2std_xfm, out_dir / "std_brain.nii.gz")
    std_image = nib.load(str(std))
    flipped = nib.Nifti1Image(mirror_image(np.asarray(std_image.dataobj, np.float32),
                                           std_image.affine), std_image.affine)
    flipped_path = out_dir / "std_brain_mirrored.nii.gz"
    flipped.to_filename(flipped_path)
    back = registration.apply_transform(flipped_path, brain, std2anat_xfm,
                                        out_dir / "brain_mirrored.nii.gz")
    return np.asarray(nib.load(str(back)).dataobj, dtype=np.float32)


@dataclass
class NormalisationResult:
    """Files and record of :func:`normalise_with_lesion`.

    Attributes
    ----------
    anat2group_xfm : Path
        Composite ``.h5``: T1w → MNI152NLin2009aSym (first-pass affine + SyN); as an image
        transform it maps template points to native points.
    group2anat_xfm : Path
        Its inverse, same format.
    branch : str
        ``enantiomorphic``, ``cost-function`` or ``syn``.
    record : dict
        What the sidecars say: branch, why, lesion geometry, parameters.
    filled : Path or None
        The filled native brain (enantiomorphic only), for QC.
    """

    anat2group_xfm: Path
    group2anat_xfm: Path
    branch: str
    record: dict = field(default_factory=dict)
    filled: Path | None = None


def _native_lesion(lesion_mask: Path | str, brain: nib.Nifti1Image) -> np.ndarray:
    """The lesion (bool) on ``brain``'s grid (nearest neighbour when the grids differ)."""
    image = nib.load(str(lesion_mask))
    data = np.asarray(image.dataobj) > 0.5
    if image.shape[:3] == brain.shape[:3] and np.allclose(image.affine, brain.affine,
                                                         atol=1e-3):
        return data
    from nibabel.processing import resample_from_to

    moved = resample_from_to(nib.Nifti1Image(data.astype(np.uint8), image.affine),
                             (brain.shape[:3], brain.affine), order=0)
    return np.asarray(moved.dataobj) > 0


def normalise_with_lesion(
    brain: Path | str,
    brain_mask: Path | str,
    lesion_mask: Path | str,
    anat2std_xfm: Path | str,
    std2anat_xfm: Path | str,
    template: Path | str,
    template_mask: Path | str,
    out_dir: Path | str,
    branch: str = "auto",
    num_threads: int = 1,
    seed: int = 1,
) -> NormalisationResult:
    """Second-pass, lesion-aware normalisation of a native brain to MNI152NLin2009aSym.

    Parameters
    ----------
    brain : path
        Skull-stripped T1w, native space.
    brain_mask : path
        Its brain mask (moving metric mask of the SyN stage).
    lesion_mask : path
        Native lesion mask (model, manual or edited; any grid in the same world space).
    anat2std_xfm, std2anat_xfm : path
        The first pass (the segmentation's registration), forward and inverse.
    template, template_mask : path
        Template brain and brain mask, 1 mm MNI152NLin2009aSym grid (fixed image and mask).
    out_dir : path
        Folder for the transforms (``anat2group_xfm.h5``, ``group2anat_xfm.h5``).
    branch : {"auto", "enantiomorphic", "cost-function", "syn"}
        ``auto``: :func:`choose_branch` decides from the lesion's geometry.
    num_threads : int
        ITK threads.
    seed : int
        Seed of ANTs' metric sampling.

    Returns
    -------
    NormalisationResult
    """
    if branch not in ("auto", *BRANCHES):
        raise ValueError(f"normalisation branch {branch!r} unknown; choose auto or one of "
                         f"{BRANCHES}")
    registration.set_ants_threads(num_threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    brain_image = nib.load(str(brain))
    lesion = _native_lesion(lesion_mask, brain_image)
    lesion_path = out_dir / "lesion_native.nii.gz"
    nib.Nifti1Image(lesion.astype(np.uint8), brain_image.affine).to_filename(lesion_path)
    std_lesion = registration.apply_transform(lesion_path, template, anat2std_xfm,
                                              out_dir / "lesion_std.nii.gz",
                                              interpolator="genericLabel")
    template_image = nib.load(str(template_mask))
    geometry = lesion_geometry(np.asarray(nib.load(str(std_lesion)).dataobj) > 0,
                               np.asarray(template_image.dataobj) > 0, template_image.affine)
    reason = "chosen by the user"
    if branch == "auto":
        branch, reason = choose_branch(geometry)
    elif geometry.volume_ml == 0 and branch != "syn":
        branch, reason = "syn", "no lesion"
    record: dict = {"Branch": branch, "Reason": reason, "LesionGeometry": asdict(geometry),
                    "FillMarginMM": FILL_MARGIN_MM,
                    "SyN": {key: list(value) if isinstance(value, tuple) else value
                            for key, value in SYN_PARAMETERS.items()},
                    "InitialTransform": "first-pass affine (the segmentation's registration)",
                    "Seed": seed}
    moving_path, filled_path = Path(brain), None
    brain_mask_data = np.asarray(nib.load(str(brain_mask)).dataobj) > 0
    if brain_mask_data.shape != brain_image.shape[:3]:
        raise ValueError(f"{brain_mask}: grid differs from the brain {brain}")
    zooms = brain_image.header.get_zooms()[:3]
    grown = _grown(lesion, zooms, FILL_MARGIN_MM)
    moving_mask = brain_mask_data
    syn = functools.partial(_syn_from_affine, anat2std_xfm=anat2std_xfm, template=template,
                            template_mask=template_mask, seed=seed)
    if branch == "enantiomorphic":
        # The mirror goes through a lesion-masked SyN, not the affine: where the brain differs
        # non-linearly from the template, the affine's mirror lands beside the homologous
        # tissue (measured: worse than plain SyN next to the lesion with a ×2.5 deformation)
        mirror_fwd, mirror_inv = syn(brain, brain_mask_data & ~grown, out_dir / "mirror")
        mirrored = mirrored_brain(brain, mirror_fwd, mirror_inv, template, out_dir)
        filled, details = enantiomorphic_fill(brain_image, lesion, mirrored)
        filled_path = out_dir / "brain_filled.nii.gz"
        filled.to_filename(filled_path)
        moving_path = filled_path
        record["Filling"] = {**details, "FeatherMM": FEATHER_MM,
                             "MirrorPlane": "x = 0 mm of MNI152NLin2009aSym",
                             "MirrorTransform": "cost-function-masked SyN from the first-pass "
                                                f"affine (lesion + {FILL_MARGIN_MM:g} mm out)"}
    elif branch == "cost-function":
        moving_mask = brain_mask_data & ~grown
        record["MaskedOutML"] = round(float(grown.sum()) * float(np.prod(zooms)) / 1000, 3)
    anat2group, group2anat = syn(moving_path, moving_mask, out_dir / "final")
    shutil.copyfile(anat2group, out_dir / "anat2group_xfm.h5")
    shutil.copyfile(group2anat, out_dir / "group2anat_xfm.h5")
    anat2group, group2anat = out_dir / "anat2group_xfm.h5", out_dir / "group2anat_xfm.h5"
    LOGGER.info("Lesion-aware normalisation: %s (%s)", branch, reason)
    return NormalisationResult(anat2group, group2anat, branch, record, filled_path)


def _syn_from_affine(moving: Path | str, moving_mask: np.ndarray, folder: Path, *,
                     anat2std_xfm: Path | str, template: Path | str, template_mask: Path | str,
                     seed: int) -> tuple[Path, Path]:
    """One SyN stage (:data:`SYN_PARAMETERS`) of ``moving`` (native) onto the template,
    started from the first-pass affine, with ``moving_mask`` (bool, ``moving``'s grid) as the
    moving metric mask. Returns the composite forward (T1w → template) and inverse ``.h5``
    files in ``folder``; both include the affine."""
    import ants

    folder.mkdir(parents=True, exist_ok=True)
    moving_image = ants.image_read(str(moving))
    scratch = Path(tempfile.mkdtemp(prefix="syn_", dir=folder))
    try:
        with registration.ants_seed(seed):
            result = ants.registration(
                fixed=ants.image_read(str(template)), moving=moving_image,
                type_of_transform="SyNOnly", initial_transform=[str(anat2std_xfm)],
                outprefix=str(scratch / "syn_"), mask=ants.image_read(str(template_mask)),
                moving_mask=moving_image.new_image_like(moving_mask.astype(np.float32)),
                grad_step=SYN_PARAMETERS["grad_step"], flow_sigma=SYN_PARAMETERS["flow_sigma"],
                total_sigma=SYN_PARAMETERS["total_sigma"],
                syn_metric=SYN_PARAMETERS["metric"],
                syn_sampling=SYN_PARAMETERS["metric_radius_voxels"],
                reg_iterations=SYN_PARAMETERS["reg_iterations"], write_composite_transform=True)
        forward, inverse = folder / "forward_xfm.h5", folder / "inverse_xfm.h5"
        shutil.copyfile(result["fwdtransforms"], forward)
        shutil.copyfile(result["invtransforms"], inverse)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return forward, inverse
