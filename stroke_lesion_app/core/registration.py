"""Registration to MNI152NLin2009aSym and transform application, with antspyx (no ANTs binaries).

Transforms are ITK files as ANTs writes them:

* ``affine`` mode: forward (T1w → template) and inverse (template → T1w) affine ``.mat`` files;
* ``syn`` mode: forward and inverse composite ``.h5`` files (affine + non-linear warp).

Either way, a template-space image goes back to native space with the single ``std2anat``
file and no inversion flags, which keeps back-projection identical for both modes.

Lesion-aware registration: with ``syn``, a lesion mask in native space (the user's raw
``_roi``/``_mask``, or a first-pass segmentation) is removed from the moving image's metric
mask of the non-linear stage (cost-function masking), so SyN does not shrink the lesion into
healthy tissue. The linear stages run unmasked on skull-stripped images (see
:func:`register_to_template` for why).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import nibabel as nib
import numpy as np

LOGGER = logging.getLogger("stroke_lesion_app.registration")

MODES = ("affine", "syn")
INTERPOLATORS = ("linear", "nearestNeighbor", "genericLabel", "bSpline")


def set_ants_threads(num_threads: int) -> None:
    """Threads ITK may use in this process.

    ITK reads ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` once per process, at its first
    multi-threaded call; a later change has no effect in that process (antspyx has no call to
    change it), so a worker keeps the thread count of the first ANTs step it ran.
    """
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(max(1, int(num_threads)))


@contextlib.contextmanager
def ants_seed(seed: int) -> Iterator[None]:
    """Fix ANTs' random metric sampling for the duration of a call (repeatable results).

    antspyx reads its seed from ``ants.config``; ``ants.set_ants_deterministic`` would also
    force a single thread, which we do not want.
    """
    import ants

    previous = ants.config._random_seed
    ants.config._random_seed = int(seed)
    try:
        yield
    finally:
        ants.config._random_seed = previous


def from_nibabel(image: nib.Nifti1Image):
    """nibabel image → ANTsImage (float)."""
    import ants

    image = nib.Nifti1Image(np.asanyarray(image.dataobj, dtype=np.float32), image.affine)
    image.header.set_xyzt_units("mm", "sec")  # antspyx warns about unknown units otherwise
    return ants.from_nibabel_nifti(image)


def to_nibabel(image) -> nib.Nifti1Image:
    """ANTsImage → nibabel image."""
    import ants

    return ants.to_nibabel_nifti(image)


@dataclass
class RegistrationResult:
    """Files written by :func:`register_to_template`.

    Attributes
    ----------
    anat2std_xfm : Path
        T1w → template transform (``.mat`` affine or ``.h5`` composite).
    std2anat_xfm : Path
        Template → T1w transform, same format.
    std_t1w : Path
        The moving image resampled onto the template grid (linear), for QC and segmentation.
    """

    anat2std_xfm: Path
    std2anat_xfm: Path
    std_t1w: Path


def register_to_template(
    moving: Path | str,
    fixed: Path | str,
    out_dir: Path | str,
    mode: str = "affine",
    moving_mask: Path | str | None = None,
    fixed_mask: Path | str | None = None,
    lesion_mask: Path | str | None = None,
    moving_full: Path | str | None = None,
    num_threads: int = 1,
    seed: int = 1,
) -> RegistrationResult:
    """Register a brain T1w (native space) to the template brain.

    Parameters
    ----------
    moving : path
        Skull-stripped T1w, native space.
    fixed : path
        Template brain (MNI152NLin2009aSym, 1 mm).
    out_dir : path
        Folder for the transform files and the resampled image.
    mode : {"affine", "syn"}
        ``affine``: rigid, then affine (the linear normalisation ATLAS v2.0 was built with),
        on the multi-resolution schedules :data:`RIGID_SCHEDULE` and :data:`AFFINE_SCHEDULE`;
        ``syn``: rigid, then affine + symmetric normalisation (antspyx ``SyN``).
    moving_mask, fixed_mask : path, optional
        Brain masks that restrict the similarity metric of the SyN stage.
    lesion_mask : path, optional
        Native-space lesion mask (non-zero = lesion), removed from the moving metric mask of
        the SyN stage (ignored with ``affine``).
    moving_full : path, optional
        Image resampled into ``std_t1w`` (default: ``moving``), e.g. the bias-corrected head.
    num_threads : int
        ITK threads.
    seed : int
        Seed of ANTs' random metric sampling.

    Returns
    -------
    RegistrationResult
    """
    import ants

    if mode not in MODES:
        raise ValueError(f"registration mode {mode!r} unknown; choose one of {MODES}")
    set_ants_threads(num_threads)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    moving_image = ants.image_read(str(moving))
    fixed_image = ants.image_read(str(fixed))
    metric_mask = (_metric_mask(moving_image, moving_mask, lesion_mask) if mode == "syn"
                   else None)
    fixed_metric_mask = ants.image_read(str(fixed_mask)) if fixed_mask else None
    scratch = Path(tempfile.mkdtemp(prefix="ants_", dir=out_dir))
    try:
        # Linear stages run unmasked on the skull-stripped images: with a metric mask (even
        # the brain mask) they fell into wrong optima on synthetic heads with large lesions
        # (mean errors of 20-35 mm, against 0.6 mm unmasked). The masks, and the lesion
        # exclusion, apply to the non-linear SyN stage only (ANTs' mask_all_stages=False).
        final_kwargs = {}
        if mode == "syn":
            final_kwargs = {"mask": fixed_metric_mask, "moving_mask": metric_mask,
                            "mask_all_stages": False}
        with ants_seed(seed):
            result = rigid_then(
                fixed_image, moving_image, "Affine" if mode == "affine" else "SyN",
                outprefix=str(scratch / "reg_"), write_composite_transform=mode == "syn",
                rigid_schedule=RIGID_SCHEDULE, final_schedule=AFFINE_SCHEDULE,
                **final_kwargs)
        if mode == "affine":
            if len(result["fwdtransforms"]) != 1:
                raise RuntimeError(f"expected one affine transform, got {result['fwdtransforms']}")
            anat2std = out_dir / "anat2std_xfm.mat"
            std2anat = out_dir / "std2anat_xfm.mat"
            shutil.copyfile(result["fwdtransforms"][0], anat2std)
            inverse = ants.read_transform(str(anat2std)).invert()
            ants.write_transform(inverse, str(std2anat))
        else:
            anat2std = out_dir / "anat2std_xfm.h5"
            std2anat = out_dir / "std2anat_xfm.h5"
            shutil.copyfile(result["fwdtransforms"], anat2std)
            shutil.copyfile(result["invtransforms"], std2anat)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    std_t1w = out_dir / "std_t1w.nii.gz"
    apply_transform(moving_full or moving, fixed, anat2std, std_t1w, interpolator="linear")
    return RegistrationResult(anat2std, std2anat, std_t1w)


@dataclass(frozen=True)
class LinearSchedule:
    """Multi-resolution schedule of a linear (rigid or affine) ANTs stage, in millimetres.

    Attributes
    ----------
    levels_mm : tuple of float
        Resolution of each level, coarse to fine: the fixed image is shrunk by
        ``round(level / voxel size)`` (at least 1).
    smoothing_mm : tuple of float
        Gaussian smoothing sigma of each level, mm.
    iterations : tuple of int
        Most iterations at each level (ANTs stops a level earlier when it converges).
    sampling : float
        Share of the voxels sampled for the Mattes metric.
    """

    levels_mm: tuple[float, ...]
    smoothing_mm: tuple[float, ...]
    iterations: tuple[int, ...]
    sampling: float

    def ants_arguments(self, voxel_mm: float) -> dict:
        """``ants.registration`` keywords for a fixed image with ``voxel_mm`` voxels; levels
        that shrink to the same factor are merged (the first one's settings kept)."""
        shrinks, sigmas, iterations = [], [], []
        for level, sigma, count in zip(self.levels_mm, self.smoothing_mm, self.iterations):
            shrink = max(1, int(round(level / voxel_mm)))
            if shrinks and shrinks[-1] == shrink:
                continue
            shrinks.append(shrink)
            sigmas.append(sigma)
            iterations.append(count)
        return {"aff_shrink_factors": tuple(shrinks), "aff_smoothing_sigmas": tuple(sigmas),
                "aff_iterations": tuple(iterations), "aff_random_sampling_rate": self.sampling,
                "smoothing_in_mm": True}


#: The template registration's linear stages (``register_to_template``), tuned for 1 mm brains:
#: the rigid stage only initialises the affine one, so it stops at 4 mm; the affine stage stops
#: at 2 mm and samples 10 % of the voxels. On Colin27 in a scanner pose, 1 mm, this took 15 s
#: against 261 s for ANTsPy's defaults (shrink 6-4-2-1, 2100-1200-1200-10 iterations, 20 %
#: sampling, both stages), and moved the brain by 0.33 mm on average (0.73 mm at most).
RIGID_SCHEDULE = LinearSchedule(levels_mm=(8.0, 4.0), smoothing_mm=(3.0, 2.0),
                                iterations=(1000, 500), sampling=0.1)
AFFINE_SCHEDULE = LinearSchedule(levels_mm=(4.0, 2.0), smoothing_mm=(2.0, 1.0),
                                 iterations=(1000, 500), sampling=0.1)


def rigid_then(fixed, moving, type_of_transform: str, outprefix: str,
               rigid_schedule: LinearSchedule | None = None,
               final_schedule: LinearSchedule | None = None, **kwargs) -> dict:
    """``ants.registration`` preceded by a rigid stage that initialises it.

    A single affine stage started from the centres of mass now and then falls into a wrong
    optimum on rotated heads (mean errors of 15-20 mm seen on synthetic heads with 3 mm voxels,
    one run in two); starting from a rigid fit, the same cases land within 1 mm every time.
    ``kwargs`` (masks, composite output…) go to the final stage only; the rigid stage is
    unmasked. ``rigid_schedule`` and ``final_schedule`` replace ANTsPy's default levels of the
    rigid stage and of a final ``Affine`` stage (ANTsPy's ``SyN`` keeps its own affine
    levels); ``None``: ANTsPy's defaults.
    """
    import ants

    voxel_mm = float(min(fixed.spacing))
    rigid_arguments = rigid_schedule.ants_arguments(voxel_mm) if rigid_schedule else {}
    if final_schedule is not None and type_of_transform == "Affine":
        kwargs = {**final_schedule.ants_arguments(voxel_mm), **kwargs}
    # antspyx lists every file that starts with the output prefix: keep the rigid stage's
    # files out of the final stage's prefix, or they would be listed as extra transforms.
    with tempfile.TemporaryDirectory(prefix="rigid_") as rigid_dir:
        rigid = ants.registration(fixed=fixed, moving=moving, type_of_transform="Rigid",
                                  outprefix=f"{rigid_dir}/rigid_", **rigid_arguments)
        # the final transform files include (collapse) the rigid initialisation
        return ants.registration(fixed=fixed, moving=moving,
                                 type_of_transform=type_of_transform,
                                 initial_transform=rigid["fwdtransforms"][0],
                                 outprefix=outprefix, **kwargs)


def _metric_mask(moving_image, moving_mask, lesion_mask):
    import ants

    if moving_mask is None and lesion_mask is None:
        return None
    mask = (ants.image_read(str(moving_mask)).numpy() > 0 if moving_mask
            else moving_image.numpy() > 0)
    if lesion_mask is not None:
        lesion = ants.resample_image_to_target(ants.image_read(str(lesion_mask)), moving_image,
                                               interp_type="nearestNeighbor")
        mask &= ~(lesion.numpy() > 0)
        LOGGER.info("Lesion mask excluded from the registration metric (%d voxels)",
                    int((lesion.numpy() > 0).sum()))
    return moving_image.new_image_like(mask.astype(np.float32))


def apply_transform(
    in_file: Path | str,
    reference: Path | str,
    transform: Path | str | Sequence[Path | str],
    out_file: Path | str,
    interpolator: str = "linear",
) -> Path:
    """Resample ``in_file`` onto the grid of ``reference`` through ITK transform file(s).

    Parameters
    ----------
    in_file : path
        Image to move (e.g. a template-space probability map).
    reference : path
        Image that defines the output grid and affine (e.g. the native T1w).
    transform : path or sequence of paths
        ``.mat`` or ``.h5`` mapping ``reference`` space points into ``in_file`` space, as ANTs
        expects (use ``std2anat`` to bring a template image to native space). A sequence is a
        chain that ``reference`` points travel in list order (antspyx's ``transformlist``:
        ``[anat2group, std2anat]`` takes a group-grid point to native space, then to the
        first-pass template, i.e. brings a first-pass template map onto the group grid).
    interpolator : {"linear", "nearestNeighbor", "genericLabel", "bSpline"}
        ``linear`` for probabilities and intensities; ``genericLabel`` for masks and labels.

    Returns
    -------
    Path
        ``out_file``, with exactly the reference's shape and affine; masks stored as uint8.
    """
    import ants

    if interpolator not in INTERPOLATORS:
        raise ValueError(f"interpolator {interpolator!r} unknown; choose one of {INTERPOLATORS}")
    reference_nifti = nib.load(str(reference))
    chain = [transform] if isinstance(transform, (str, Path)) else list(transform)
    moved = ants.apply_transforms(fixed=ants.image_read(str(reference)),
                                  moving=ants.image_read(str(in_file)),
                                  transformlist=[str(path) for path in chain],
                                  interpolator=interpolator)
    data = moved.numpy()
    if interpolator in ("nearestNeighbor", "genericLabel"):
        data = np.rint(data).astype(np.uint8 if data.max() < 256 else np.int32)
    else:
        data = data.astype(np.float32)
    # ANTs may reorder/reorient nothing here, but write with the reference's own affine so the
    # output is voxel-for-voxel on the reference grid.
    moved_nifti = to_nibabel(moved)
    data = _to_reference_orientation(data, moved_nifti.affine, reference_nifti.affine)
    out = nib.Nifti1Image(data, reference_nifti.affine)
    out.set_qform(reference_nifti.affine, code=1)
    out.set_sform(reference_nifti.affine, code=1)
    out.to_filename(str(out_file))
    return Path(out_file)


def _to_reference_orientation(data: np.ndarray, data_affine: np.ndarray,
                              reference_affine: np.ndarray) -> np.ndarray:
    """Permute/flip ``data`` (grid ``data_affine``) onto the voxel order of ``reference_affine``."""
    source = nib.io_orientation(data_affine)
    target = nib.io_orientation(reference_affine)
    if np.array_equal(source, target):
        return data
    return nib.orientations.apply_orientation(
        data, nib.orientations.ornt_transform(source, target))


def transform_points(points_mm: np.ndarray, transform: Path | str) -> np.ndarray:
    """Map world points (RAS mm, N×3) through an ITK transform file as ANTs applies it to points.

    ANTs transforms points in the opposite direction to images: the ``anat2std`` file maps
    template points into native space.
    """
    import ants
    import pandas as pd

    # ITK works in LPS; flip x and y on the way in and out.
    lps = np.asarray(points_mm, dtype=float) * np.array([-1, -1, 1])
    frame = pd.DataFrame(lps, columns=["x", "y", "z"])
    moved = ants.apply_transforms_to_points(3, frame, [str(transform)])
    return moved[["x", "y", "z"]].to_numpy() * np.array([-1, -1, 1])
