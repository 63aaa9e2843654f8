"""MNI152NLin2009aSym → MNI152NLin6Asym (FSL MNI152): one transform, computed once, then cached.

The app works in MNI152NLin2009aSym (the space of ATLAS v2.0). Group outputs can also be
given in FSL's MNI152 (MNI152NLin6Asym, 182×218×182 at 1 mm) when TemplateFlow's copy of that
template is present (:func:`~stroke_lesion_app.core.templates.fsl_template`). TemplateFlow has
no MNI152NLin2009aSym ↔ MNI152NLin6Asym transform, so the app computes one, brain to brain, with
antspyx:

1. both templates' brains (T1w × brain mask; TemplateFlow's NLin6Asym T1w is a whole head);
2. rigid → affine (:func:`~stroke_lesion_app.core.registration.rigid_then` with the
   schedules of :data:`SCHEDULES`) → SyN (Mattes mutual information), seeded
   (:func:`~stroke_lesion_app.core.registration.ants_seed`), written as one composite ``.h5``;
3. quality numbers (Dice of the two brain masks after the affine and after the full mapping,
   mean/95th centile/max displacement of the non-linear part at brain points) go into the
   sidecar JSON with the method, parameters and both templates' file hashes.

Where the file is looked for, first hit wins (nothing is ever downloaded):

1. the shipped folder, :func:`shipped_dir`: ``$STROKE_LESION_APP_TRANSFORMS`` when set, else
   ``$TEMPLATEFLOW_HOME/.stroke-lesion-app/`` (a dot folder, which TemplateFlow's index
   skips). The container image computes the transform there at build time
   (``python -m stroke_lesion_app.core.template_transforms --out-dir
   /opt/templateflow/.stroke-lesion-app``), beside the templates it was computed from;
   read-only;
2. the cache: the ``cache_dir`` argument, else ``$STROKE_LESION_APP_CACHE``, else
   ``${XDG_CACHE_HOME:-~/.cache}/stroke-lesion-app``; computed there on first use, under a
   file lock (concurrent participant jobs compute it once; the others wait), and written
   atomically.

The file name carries a key, the sha256 of the method version, schedule, seed and the sha256
of each template file used (T1w and brain mask of both templates), so a changed template or
schedule never reuses a stale transform::

    tpl-MNI152NLin6Asym_from-MNI152NLin2009aSym_mode-image_desc-<key16>_xfm.h5  (+ .json)

It follows TemplateFlow's ``mode-image`` convention (ITK's for images): it maps
MNI152NLin6Asym points to MNI152NLin2009aSym points, i.e. it resamples a 2009aSym image onto
the NLin6Asym grid::

    ants.apply_transforms(fixed=<NLin6Asym T1w>, moving=<2009aSym image>,
                          transformlist=[str(path)])
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import nibabel as nib
import numpy as np

from . import templates
from .bundle import file_sha256
from .fileio import atomic_path, write_json_atomic
from .registration import LinearSchedule, ants_seed, from_nibabel, rigid_then, set_ants_threads

__all__ = ["SCHEDULES", "SHIPPED_SUBDIR", "TransformSchedule", "cache_root", "main",
           "shipped_dir", "template_to_fsl_transform", "transform_filename"]

LOGGER = logging.getLogger("stroke_lesion_app.templates")

#: Bumped whenever the computation changes in a way the schedule does not record.
METHOD_VERSION = 1
#: Folder in ``$TEMPLATEFLOW_HOME`` where a container image keeps the transform it computed at
#: build time (dot folders are outside TemplateFlow's index).
SHIPPED_SUBDIR = ".stroke-lesion-app"


@dataclass(frozen=True)
class TransformSchedule:
    """Parameters of the template-to-template registration.

    Attributes
    ----------
    name : str
        ``"full"`` (the one to use) or ``"test"`` (coarse, for CI only).
    working_mm : float
        Both brains are smoothed and resampled to this isotropic voxel size before
        registering; 1.0 registers the 1 mm grids as they are. The transform is in
        millimetres either way.
    rigid, affine : LinearSchedule
        Linear stages (Mattes mutual information).
    syn_iterations : tuple of int
        SyN iterations per level, coarse to fine; level ``k`` of ``n`` shrinks the images by
        ``2 ** (n - 1 - k)`` and smooths them by ``n - 1 - k`` voxels (ANTsPy's ``SyNOnly``).
    syn_metric : {"CC", "mattes"}
        Similarity metric of the SyN stage: neighbourhood cross-correlation or Mattes mutual
        information.
    syn_sampling : int
        Its parameter: the CC radius in voxels, or the number of MI histogram bins.
    grad_step, flow_sigma, total_sigma : float
        ``SyN[grad_step, flow_sigma, total_sigma]``.
    """

    name: str
    working_mm: float
    rigid: LinearSchedule
    affine: LinearSchedule
    syn_iterations: tuple[int, ...]
    syn_metric: str
    syn_sampling: int
    grad_step: float
    flow_sigma: float
    total_sigma: float


#: ``full``: the brains on 2 mm copies; rigid to 4 mm, affine to 2 mm, SyN (Mattes MI, as in
#: ``antsRegistrationSyNQuick``) at 8, 4 and 2 mm; the warp is stored on a 2 mm grid (≈ 9 MB).
#: Two MNI templates differ smoothly, by a few mm: a finer SyN fits sulcal noise, not anatomy.
#: One-time step: 35 s on 2 busy cores for the test stand-in (an affine copy of 2009aSym),
#: 105 s for Colin27 in its place (real anatomical differences). ``test``: the same steps on
#: 3 mm copies with fewer iterations (about 15 s), for tests of the code path, not for use.
SCHEDULES = {
    "full": TransformSchedule(
        name="full", working_mm=2.0,
        rigid=LinearSchedule(levels_mm=(8.0, 4.0), smoothing_mm=(3.0, 2.0),
                             iterations=(1000, 500), sampling=0.2),
        affine=LinearSchedule(levels_mm=(4.0, 2.0), smoothing_mm=(2.0, 1.0),
                              iterations=(1000, 500), sampling=0.2),
        syn_iterations=(100, 70, 50), syn_metric="mattes", syn_sampling=32, grad_step=0.1,
        flow_sigma=3.0, total_sigma=0.0),
    "test": TransformSchedule(
        name="test", working_mm=3.0,
        rigid=LinearSchedule(levels_mm=(6.0, 3.0), smoothing_mm=(3.0, 1.5),
                             iterations=(200, 100), sampling=0.25),
        affine=LinearSchedule(levels_mm=(6.0, 3.0), smoothing_mm=(3.0, 1.5),
                              iterations=(200, 100), sampling=0.25),
        syn_iterations=(40, 20), syn_metric="mattes", syn_sampling=32, grad_step=0.2,
        flow_sigma=3.0, total_sigma=0.0),
}


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """Cache folder: ``cache_dir``, else ``$STROKE_LESION_APP_CACHE``, else
    ``${XDG_CACHE_HOME:-~/.cache}/stroke-lesion-app``."""
    if cache_dir is not None:
        return Path(cache_dir)
    if os.environ.get("STROKE_LESION_APP_CACHE"):
        return Path(os.environ["STROKE_LESION_APP_CACHE"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "stroke-lesion-app"


def shipped_dir() -> Path | None:
    """Folder of a precomputed, read-only transform: ``$STROKE_LESION_APP_TRANSFORMS``, else
    ``$TEMPLATEFLOW_HOME/.stroke-lesion-app``; ``None`` when neither variable is set."""
    if os.environ.get("STROKE_LESION_APP_TRANSFORMS"):
        return Path(os.environ["STROKE_LESION_APP_TRANSFORMS"])
    if os.environ.get("TEMPLATEFLOW_HOME"):
        return Path(os.environ["TEMPLATEFLOW_HOME"]) / SHIPPED_SUBDIR
    return None


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    """sha256 of a file, computed once per process for a given modification time and size."""
    return file_sha256(path)


def _hash(path: Path) -> str:
    stat = path.stat()
    return _sha256(str(path), stat.st_mtime_ns, stat.st_size)


def _template_record(files: templates.TemplateFiles) -> dict:
    return {"source": files.source,
            "T1w": {"path": str(files.t1w), "sha256": _hash(files.t1w)},
            "brain_mask": (None if files.brain_mask is None else
                           {"path": str(files.brain_mask), "sha256": _hash(files.brain_mask)})}


def _key(schedule: TransformSchedule, seed: int, source: dict, target: dict) -> str:
    def hashes(record):
        return [record["T1w"]["sha256"],
                record["brain_mask"]["sha256"] if record["brain_mask"] else None]

    text = json.dumps({"method": METHOD_VERSION, "schedule": asdict(schedule), "seed": seed,
                       "from": hashes(source), "to": hashes(target)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def transform_filename(key: str) -> str:
    """File name of the transform with cache ``key`` (its sidecar: same stem + ``.json``).

    >>> transform_filename("0123456789abcdef" * 4)
    'tpl-MNI152NLin6Asym_from-MNI152NLin2009aSym_mode-image_desc-0123456789abcdef_xfm.h5'
    """
    return (f"tpl-{templates.FSL_TEMPLATE}_from-{templates.TEMPLATE}_mode-image_"
            f"desc-{key[:16]}_xfm.h5")


def template_to_fsl_transform(cache_dir: Path | None = None, num_threads: int = 1, *,
                              quality: str = "full", seed: int = 1) -> Path | None:
    """ITK transform file (composite ``.h5``) that resamples an MNI152NLin2009aSym image onto
    the MNI152NLin6Asym grid.

    Use it as ``ants.apply_transforms(fixed=<NLin6 T1w>, moving=<2009aSym image>,
    transformlist=[str(path)])`` (or :func:`~stroke_lesion_app.core.registration.
    apply_transform` with the NLin6Asym T1w as reference). It maps NLin6Asym points to
    MNI152NLin2009aSym points (ITK image convention).

    Parameters
    ----------
    cache_dir : path, optional
        Where to cache a computed transform (default :func:`cache_root`). A precomputed file
        in :func:`shipped_dir` (the container's) is used first whatever this is.
    num_threads : int
        ITK threads for a computation (ITK takes the thread count of a process's first ANTs
        step; see :func:`~stroke_lesion_app.core.registration.set_ants_threads`).
    quality : {"full", "test"}
        Schedule from :data:`SCHEDULES`; ``"test"`` is coarse, for tests only.
    seed : int
        Seed of ANTs' random metric sampling.

    Returns
    -------
    Path or None
        The ``.h5`` file (its sidecar ``.json`` beside it); ``None`` when
        :func:`~stroke_lesion_app.core.templates.fsl_template` finds no MNI152NLin6Asym (it
        logs why, once).
    """
    return _find_or_compute(cache_dir, num_threads, quality, seed, use_shipped=True)


def _find_or_compute(cache_dir: Path | None, num_threads: int, quality: str, seed: int,
                     use_shipped: bool) -> Path | None:
    if quality not in SCHEDULES:
        raise ValueError(f"transform quality {quality!r} unknown; choose one of "
                         f"{sorted(SCHEDULES)}")
    target = templates.fsl_template()
    if target is None:
        return None
    source = templates.get_template()
    schedule = SCHEDULES[quality]
    source_record, target_record = _template_record(source), _template_record(target)
    name = transform_filename(_key(schedule, seed, source_record, target_record))
    shipped = shipped_dir()
    if use_shipped and shipped is not None and (shipped / name).is_file():
        LOGGER.debug("%s → %s transform: %s (shipped)", templates.TEMPLATE,
                     templates.FSL_TEMPLATE, shipped / name)
        return shipped / name
    folder = cache_root(cache_dir)
    path = folder / name
    if path.is_file():
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"{folder}: cannot create the cache folder for the {templates.TEMPLATE} → "
                      f"{templates.FSL_TEMPLATE} transform ({error.strerror}); set "
                      "STROKE_LESION_APP_CACHE to a writable folder") from error
    with _file_lock(folder / f".{name}.lock"):
        if path.is_file():  # another process computed it while we waited
            return path
        LOGGER.info("Computing the %s → %s transform once (%s quality, %d thread(s)) into %s",
                    templates.TEMPLATE, templates.FSL_TEMPLATE, quality, num_threads, folder)
        _compute(source, target, schedule, seed, num_threads, path,
                 {"from": source_record, "to": target_record})
    return path


@contextlib.contextmanager
def _file_lock(lock_path: Path) -> Iterator[None]:
    with open(lock_path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            LOGGER.info("Waiting for another process computing %s", lock_path.name[1:-5])
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _working_image(image: nib.Nifti1Image, working_mm: float):
    import ants

    ants_image = from_nibabel(image)
    if working_mm == 1.0:
        return ants_image
    smoothed = ants.smooth_image(ants_image, working_mm / 2.0, sigma_in_physical_coordinates=True)
    return ants.resample_image(smoothed, (working_mm,) * 3, use_voxels=False, interp_type=0)


def _compute(source: templates.TemplateFiles, target: templates.TemplateFiles,
             schedule: TransformSchedule, seed: int, num_threads: int, path: Path,
             records: dict) -> None:
    """Register the 2009aSym brain (moving) to the NLin6Asym brain (fixed); write ``path``
    and its sidecar atomically."""
    import ants

    set_ants_threads(num_threads)
    start = time.perf_counter()
    fixed_brain, fixed_mask = templates.template_brain(target)
    moving_brain, moving_mask = templates.template_brain(source)
    fixed = _working_image(fixed_brain, schedule.working_mm)
    moving = _working_image(moving_brain, schedule.working_mm)
    with tempfile.TemporaryDirectory(prefix=".xfm_", dir=path.parent) as scratch:
        with ants_seed(seed):
            linear = rigid_then(fixed, moving, "Affine", outprefix=f"{scratch}/affine_",
                                rigid_schedule=schedule.rigid, final_schedule=schedule.affine)
            affine = linear["fwdtransforms"][0]
            # SyN starts from the affine; the composite file holds both (affine, then warp)
            syn = ants.registration(
                fixed=fixed, moving=moving, type_of_transform="SyNOnly",
                initial_transform=affine, outprefix=f"{scratch}/syn_",
                write_composite_transform=True, reg_iterations=schedule.syn_iterations,
                syn_metric=schedule.syn_metric, syn_sampling=schedule.syn_sampling,
                grad_step=schedule.grad_step, flow_sigma=schedule.flow_sigma,
                total_sigma=schedule.total_sigma)
        composite = syn["fwdtransforms"]
        elapsed = time.perf_counter() - start
        quality = _quality(fixed_brain, fixed_mask, moving_mask, affine, composite)
        sidecar = {
            "Description": f"{templates.TEMPLATE} → {templates.FSL_TEMPLATE} (FSL MNI152), "
                           "brain to brain; computed by stroke-lesion-app",
            "Convention": f"ITK image transform (TemplateFlow mode-image): maps "
                          f"{templates.FSL_TEMPLATE} points to {templates.TEMPLATE} points; "
                          f"resamples a {templates.TEMPLATE} image onto the "
                          f"{templates.FSL_TEMPLATE} grid",
            "Method": "antsRegistration (antspyx): rigid and affine (Mattes MI) from the "
                      f"centres of mass, then SyN ({schedule.syn_metric}), on brain-masked "
                      f"T1w templates resampled to {schedule.working_mm:g} mm; one "
                      "composite transform",
            "MethodVersion": METHOD_VERSION,
            "Quality": schedule.name,
            "Parameters": asdict(schedule),
            "Seed": seed,
            "Threads": num_threads,
            "Software": _versions(),
            "Templates": {templates.TEMPLATE: records["from"],
                          templates.FSL_TEMPLATE: records["to"]},
            "QC": quality,
            "ElapsedSeconds": round(elapsed, 1),
            "Created": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        write_json_atomic(path.with_suffix(".json"), sidecar)
        with atomic_path(path) as tmp:  # last: the .h5 appearing means "done"
            shutil.copyfile(composite, tmp)
    LOGGER.info("%s → %s transform computed in %.0f s: brain-mask Dice %.3f (affine only "
                "%.3f), non-linear displacement mean %.2f mm, max %.2f mm; %s",
                templates.TEMPLATE, templates.FSL_TEMPLATE, elapsed, quality["DiceBrainMask"],
                quality["DiceBrainMaskAffine"], quality["NonlinearDisplacementMeanMm"],
                quality["NonlinearDisplacementMaxMm"], path)


def _quality(fixed_brain, fixed_mask, moving_mask, affine: str, composite: str) -> dict:
    """Dice of the brain masks (moving mapped onto the fixed grid) after the affine and after
    the full transform; displacement of the non-linear part at fixed brain points."""
    import ants

    from .registration import transform_points

    reference = from_nibabel(fixed_brain)
    moving = from_nibabel(moving_mask)
    target = np.asanyarray(fixed_mask.dataobj) > 0
    dice = {}
    for label, transform in (("DiceBrainMaskAffine", affine), ("DiceBrainMask", composite)):
        mapped = ants.apply_transforms(fixed=reference, moving=moving, transformlist=[transform],
                                       interpolator="genericLabel")
        mapped = mapped.numpy() > 0.5
        dice[label] = round(float(2 * (mapped & target).sum()
                                  / max(mapped.sum() + target.sum(), 1)), 4)
    voxels = np.argwhere(target)[::8]  # every 8th brain voxel: ~200 k points
    points = nib.affines.apply_affine(fixed_mask.affine, voxels)
    moved = transform_points(points, composite)
    linear = transform_points(points, affine)
    distance = np.linalg.norm(moved - linear, axis=1)
    return {**dice,
            "NonlinearDisplacementMeanMm": round(float(distance.mean()), 3),
            "NonlinearDisplacementP95Mm": round(float(np.percentile(distance, 95)), 3),
            "NonlinearDisplacementMaxMm": round(float(distance.max()), 3),
            "Points": len(points)}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for package in ("antspyx", "nibabel", "stroke-lesion-app"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def main(argv: list[str] | None = None) -> int:
    """Compute (or find) the MNI152NLin2009aSym → MNI152NLin6Asym transform.

    Run once when a container image is built, after the TemplateFlow prefetch::

        python -m stroke_lesion_app.core.template_transforms \\
            --out-dir /opt/templateflow/.stroke-lesion-app --num-threads 4 --require

    Exit status: 0 done (or MNI152NLin6Asym absent without ``--require``), 1 absent with
    ``--require``.
    """
    parser = argparse.ArgumentParser(
        prog="python -m stroke_lesion_app.core.template_transforms",
        description=f"Compute the {templates.TEMPLATE} → {templates.FSL_TEMPLATE} (FSL MNI152) "
                    "transform once and store it (the container image does this at build "
                    "time). Needs TemplateFlow's MNI152NLin6Asym in $TEMPLATEFLOW_HOME; "
                    "downloads nothing.")
    parser.add_argument("--out-dir", type=Path, default=None,
                        help="folder to store it in (default: $STROKE_LESION_APP_CACHE, else "
                             "${XDG_CACHE_HOME:-~/.cache}/stroke-lesion-app)")
    parser.add_argument("--num-threads", type=int, default=1, help="ITK threads (default 1)")
    parser.add_argument("--quality", choices=sorted(SCHEDULES), default="full",
                        help="registration schedule (default full; test is for CI only)")
    parser.add_argument("--require", action="store_true",
                        help=f"exit 1 when {templates.FSL_TEMPLATE} is not in $TEMPLATEFLOW_HOME")
    args = parser.parse_args(argv)
    if args.num_threads < 1:
        parser.error(f"--num-threads must be at least 1, got {args.num_threads}")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    # the file must land in --out-dir (or the cache), even when a shipped one exists
    path = _find_or_compute(args.out_dir, args.num_threads, args.quality, seed=1,
                            use_shipped=False)
    if path is None:
        return 1 if args.require else 0
    LOGGER.info("%s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
