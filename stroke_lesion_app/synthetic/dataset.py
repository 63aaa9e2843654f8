"""Synthetic subjects as arrays, and as a BIDS raw dataset with ground-truth derivatives."""

from __future__ import annotations

import gzip
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stroke_lesion_app import __version__
from stroke_lesion_app.core.bids import replace_directory
from stroke_lesion_app.core.fileio import write_bytes_atomic as _write_bytes
from stroke_lesion_app.synthetic.head import (
    ORIENTATIONS,
    VOXEL_SIZES,
    Anatomy,
    SyntheticScan,
    build_anatomy,
    draw_acquisition,
    render_scan,
    to_nifti,
)
from stroke_lesion_app.synthetic.lesions import SMALL_LESION_VOXELS
from stroke_lesion_app.synthetic.template import (
    TEMPLATE_AFFINE,
    TEMPLATE_SHAPE,
    TEMPLATE_SPACE,
    Template,
    load_template,
)

LOGGER = logging.getLogger("stroke_lesion_app.synthetic")

PACKAGE_NAME = "stroke-lesion-app"
TRUTH_PIPELINE = "synthetic-truth"
"""Folder name of the ground-truth derivative dataset under ``derivatives/``."""
BIDS_VERSION = "1.9.0"
_GZIP_LEVEL = 1  # nibabel's default for .nii.gz; fast


@dataclass
class SyntheticSubject:
    """One synthetic subject: its template-space anatomy and one scan per session.

    Attributes
    ----------
    anatomy : Anatomy
        Lesions (1 mm MNI152NLin2009aSym grid), deformation and head model.
    scans : list of SyntheticScan
        Native T1w images and native truth masks, one per session.
    """

    anatomy: Anatomy
    scans: list

    @property
    def lesions(self) -> list:
        """The :class:`~stroke_lesion_app.synthetic.lesions.Lesion` records."""
        return self.anatomy.lesions.lesions

    @property
    def template_mask(self) -> np.ndarray:
        """Lesion mask on the 1 mm MNI152NLin2009aSym grid, uint8 ``(197, 233, 189)``."""
        return self.anatomy.lesions.mask.astype(np.uint8)


def _seed_sequence(seed, spawn: int) -> np.random.SeedSequence:
    entropy = seed.entropy if isinstance(seed, np.random.SeedSequence) else seed
    return np.random.SeedSequence(entropy, spawn_key=(spawn,))


def synthesize_subject(
    seed=0,
    *,
    sessions: int = 1,
    resolution: float | None = None,
    small_lesion_fraction: float = 0.5,
    max_lesions: int = 4,
    n_lesions: int | None = None,
    orientations=None,
    voxel_sizes=VOXEL_SIZES,
    template: Template | None = None,
) -> SyntheticSubject:
    """Make one synthetic subject (arrays only, nothing written).

    Parameters
    ----------
    seed : int, sequence of int or numpy.random.SeedSequence
        Same seed, same subject. Session ``s`` (1-based) uses its own stream, so the first sessions
        do not depend on how many are made.
    sessions : int
        Number of scans (>= 1) of the same anatomy, each with its own pose and acquisition.
    resolution : float, optional
        Multiplies every voxel size (e.g. 3 for tiny test data, ~3 mm voxels).
    small_lesion_fraction : float
        Probability in [0, 1] that a lesion has < 1000 voxels (1 mm template voxels = mm3).
    max_lesions : int
        The lesion count is drawn in 0..max_lesions (0 with probability 0.1).
    n_lesions : int, optional
        Exact lesion count instead.
    orientations : sequence of str, optional
        Storage orientation per session (cycled); default: random among ``ORIENTATIONS``.
    voxel_sizes : sequence of 3-tuples of float
        Voxel sizes (mm per storage axis) drawn from, before ``resolution`` scaling.
    template : Template, optional

    Returns
    -------
    SyntheticSubject

    Raises
    ------
    ValueError
        On a bad count, fraction, resolution or orientation.
    """
    if sessions < 1:
        raise ValueError(f"sessions={sessions} must be >= 1")
    if resolution is not None and not 1.0 <= resolution <= 8.0:
        raise ValueError(
            f"resolution={resolution} is outside [1, 8]; pass e.g. 3 for tiny test data")
    template = template or load_template()
    anatomy = build_anatomy(
        np.random.default_rng(_seed_sequence(seed, 0)), n_lesions=n_lesions,
        max_lesions=max_lesions, small_lesion_fraction=small_lesion_fraction, template=template,
    )
    scans = []
    for session in range(1, sessions + 1):
        rng = np.random.default_rng(_seed_sequence(seed, session))
        if orientations:
            orientation = orientations[(session - 1) % len(orientations)]
        else:
            orientation = ORIENTATIONS[int(rng.integers(len(ORIENTATIONS)))]
        voxel_size = np.asarray(voxel_sizes[int(rng.integers(len(voxel_sizes)))], dtype=float)
        if resolution is not None:
            voxel_size = voxel_size * resolution
        acquisition = draw_acquisition(rng, voxel_size=tuple(voxel_size.round(6)),
                                       orientation=orientation)
        scans.append(render_scan(anatomy, acquisition, rng, template=template))
    return SyntheticSubject(anatomy=anatomy, scans=scans)


# ----------------------------------------------------------------------------------- writing


def _write_nifti(path: Path, array: np.ndarray, affine: np.ndarray, code: int = 1) -> None:
    """Write ``.nii.gz`` byte-reproducibly (gzip mtime 0, no file name in the gzip header)."""
    raw = to_nifti(array, affine, code=code).to_bytes()
    _write_bytes(path, gzip.compress(raw, compresslevel=_GZIP_LEVEL, mtime=0))


def _write_json(path: Path, content: dict) -> None:
    _write_bytes(path, (json.dumps(content, indent=2, sort_keys=True) + "\n").encode())


def _write_tsv(path: Path, columns: list, rows: list) -> None:
    lines = ["\t".join(columns)] + ["\t".join(_tsv_value(row[c]) for c in columns) for row in rows]
    _write_bytes(path, ("\n".join(lines) + "\n").encode())


def _tsv_value(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return "x".join(f"{v:g}" for v in value)
    return str(value)


def _matrix(array: np.ndarray) -> list:
    return [[float(f"{v:.12g}") for v in row] for row in np.asarray(array)]


def itk_affine_text(template_to_native: np.ndarray) -> str:
    """ITK/ANTs text of the affine that resamples a native T1w into template space.

    ITK maps *fixed* (template) points to *moving* (native) points, in LPS mm, so the stored
    matrix is ``F @ template_to_native @ F`` with ``F = diag(-1, -1, 1, 1)`` (RAS <-> LPS).

    Parameters
    ----------
    template_to_native : numpy.ndarray, shape (4, 4)
        Template mm (RAS) to native mm (RAS).

    Returns
    -------
    str
        An ``#Insight Transform File V1.0`` with one ``AffineTransform_double_3_3``.
    """
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ np.asarray(template_to_native, dtype=float) @ flip
    numbers = list(lps[:3, :3].ravel()) + list(lps[:3, 3])
    return (
        "#Insight Transform File V1.0\n#Transform 0\nTransform: AffineTransform_double_3_3\n"
        f"Parameters: {' '.join(f'{v:.17g}' for v in numbers)}\nFixedParameters: 0 0 0\n"
    )


def _dataset_description(name: str, dataset_type: str, parameters: dict) -> dict:
    description = {
        "Name": name,
        "BIDSVersion": BIDS_VERSION,
        "DatasetType": dataset_type,
        "License": "CC0",
        "GeneratedBy": [{
            "Name": PACKAGE_NAME,
            "Version": __version__,
            "Description": "stroke-lesion-model synthesize "
            + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in parameters.items()),
        }],
    }
    if dataset_type == "derivative":
        description["SourceDatasets"] = [{"URL": "bids::"}]
    return description


_README = """\
Synthetic stroke T1w dataset -- NOT real data, not for research or clinical use.

Made by {package} {version} (`stroke-lesion-model synthesize`, seed {seed}) from the ICBM 2009a
symmetric template shipped with nilearn: every head is that template under a random pose
(rotations up to 20 degrees, scaling 0.9-1.1, translation), a smooth non-linear deformation of a
few mm, a synthetic skull, scalp, face and neck, bias field, Rician noise, gamma contrast change,
varied voxel sizes, storage orientations ({orientations}), int16/float32 storage and occasional
field-of-view cuts. Lesions imitate chronic stroke on T1w (hypointense, soft edges) and are placed
by vascular territory (MCA/ACA/PCA/cerebellar wedges, deep lacunes).

Ground truth: derivatives/{truth}/ (native lesion and brain masks, template-space lesion masks
in {space} at 1 mm, the exact native-to-template affine, and every lesion listed in
sub-*_lesions.json and lesions.tsv).
"""


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise FileExistsError(f"{out_dir} exists and is not a folder; choose another output folder")
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return
    if not overwrite:
        raise FileExistsError(
            f"{out_dir} exists and is not empty; choose a new folder or pass --overwrite to "
            "replace it"
        )
    description = out_dir / "dataset_description.json"
    try:
        made_by = json.loads(description.read_text())["GeneratedBy"][0]["Name"]
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        made_by = None
    if made_by != PACKAGE_NAME:
        raise FileExistsError(
            f"{out_dir} is not a synthetic dataset made by {PACKAGE_NAME}; refusing to replace it "
            "even with --overwrite, choose another folder"
        )


def synthesize_dataset(
    out_dir,
    n_subjects: int = 8,
    seed: int = 0,
    *,
    sessions: int = 1,
    resolution: float | None = None,
    small_lesion_fraction: float = 0.5,
    max_lesions: int = 4,
    orientations=ORIENTATIONS,
    overwrite: bool = False,
) -> dict:
    """Write a synthetic BIDS raw dataset of stroke T1w images with ground-truth derivatives.

    Subject ``k`` (1-based) uses seed ``[seed, k]`` (so the first subjects do not depend on
    ``n_subjects``) and session ``s`` the storage orientation ``orientations[(k + s - 2) % n]``.
    The dataset is written to a hidden folder beside ``out_dir`` and renamed at the end, so a
    half-written dataset never sits at ``out_dir``.

    Layout (``_ses-<s>`` and the ``ses-<s>/`` level only when ``sessions > 1``)::

        dataset_description.json  README  participants.tsv  participants.json
        sub-<k>/anat/sub-<k>_T1w.nii.gz, sub-<k>_T1w.json
        derivatives/synthetic-truth/dataset_description.json, lesions.tsv, scans.tsv
        derivatives/synthetic-truth/sub-<k>/anat/
            sub-<k>_label-L_mask.nii.gz                            native lesion mask (uint8)
            sub-<k>_desc-brain_mask.nii.gz                         native brain mask (uint8)
            sub-<k>_space-MNI152NLin2009aSym_label-L_mask.nii.gz   1 mm template grid (uint8)
            sub-<k>_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.txt   ITK affine
            sub-<k>_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.json  4x4 matrices, RAS mm
            sub-<k>_lesions.json                                   lesions, acquisition

    Parameters
    ----------
    out_dir : str or os.PathLike
        BIDS root to create; must be missing or empty unless ``overwrite``.
    n_subjects : int
        Number of subjects (>= 1).
    seed : int
        Non-negative seed; same seed, same bytes.
    sessions : int
        Sessions per subject (same anatomy, new scan).
    resolution : float, optional
        Voxel-size multiplier in [1, 8] (e.g. 3 for tests).
    small_lesion_fraction : float
        Probability in [0, 1] that a lesion has < 1000 template voxels (mm3).
    max_lesions : int
        Lesions per subject are drawn in 0..max_lesions.
    orientations : sequence of str
        Storage orientations cycled over subjects and sessions.
    overwrite : bool
        Replace a non-empty ``out_dir`` -- only one made by this generator.

    Returns
    -------
    dict
        ``out_dir``, ``seconds`` and one entry per scan under ``scans`` (participant, session,
        T1w path relative to ``out_dir``, lesion count and template volumes, voxel size,
        orientation, dtype, field-of-view crop).

    Raises
    ------
    FileExistsError
        When ``out_dir`` is not empty and ``overwrite`` is false (or it is not ours).
    ValueError
        On a bad count, seed, fraction, resolution or orientation.
    """
    start = time.perf_counter()
    if n_subjects < 1 or sessions < 1 or max_lesions < 0 or seed < 0:
        raise ValueError(
            f"need n_subjects >= 1, sessions >= 1, max_lesions >= 0, seed >= 0; got {n_subjects}, "
            f"{sessions}, {max_lesions}, {seed}"
        )
    if not 0.0 <= small_lesion_fraction <= 1.0:
        raise ValueError(f"small_lesion_fraction={small_lesion_fraction} is outside [0, 1]")
    if not orientations:
        raise ValueError("orientations is empty; pass e.g. ('RAS', 'LPS', 'LIA')")
    out_dir = Path(out_dir).absolute()
    _check_target(out_dir, overwrite)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    parameters = {"subjects": n_subjects, "seed": seed, "sessions": sessions,
                  "resolution": resolution, "small_lesion_fraction": small_lesion_fraction,
                  "max_lesions": max_lesions}
    try:
        summary = _write_dataset(partial, parameters, tuple(orientations), load_template())
        replace_directory(partial, out_dir)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    summary["out_dir"] = str(out_dir)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    LOGGER.info("wrote %d synthetic scans to %s in %.1f s", len(summary["scans"]), out_dir,
                summary["seconds"])
    return summary


def _write_dataset(root: Path, parameters: dict, orientations: tuple, template: Template) -> dict:
    n_subjects, seed, sessions = parameters["subjects"], parameters["seed"], parameters["sessions"]
    width = max(2, len(str(n_subjects)))
    truth = root / "derivatives" / TRUTH_PIPELINE
    participants, lesion_rows, scan_rows, scans_summary = [], [], [], []
    for number in range(1, n_subjects + 1):
        label = f"{number:0{width}d}"
        subject = synthesize_subject(
            [seed, number], sessions=sessions, resolution=parameters["resolution"],
            small_lesion_fraction=parameters["small_lesion_fraction"],
            max_lesions=parameters["max_lesions"],
            orientations=[orientations[(number - 1 + s) % len(orientations)]
                          for s in range(sessions)],
            template=template,
        )
        demo = np.random.default_rng(_seed_sequence([seed, number], 1000))
        participants.append({"participant_id": f"sub-{label}", "age": int(demo.integers(35, 90)),
                             "sex": "F" if demo.random() < 0.45 else "M"})
        template_mask = subject.template_mask
        for session, scan in enumerate(subject.scans, start=1):
            ses = f"ses-{session}" if sessions > 1 else None
            prefix = f"sub-{label}" + (f"_{ses}" if ses else "")
            rel = Path(f"sub-{label}") / (ses or "") / "anat"
            _write_scan(root / rel, truth / rel, prefix, scan, subject, template_mask,
                        [seed, number])
            acq = scan.acquisition
            zoom = float(np.prod(acq.voxel_size))
            for lesion in subject.lesions:
                lesion_rows.append({
                    "participant_id": f"sub-{label}", "session_id": ses, **{
                        k: v for k, v in lesion.to_dict().items() if k != "centre_mm"},
                    "centre_x_mm": lesion.centre_mm[0], "centre_y_mm": lesion.centre_mm[1],
                    "centre_z_mm": lesion.centre_mm[2],
                    "native_voxels": scan.lesion_voxels[lesion.id],
                    "native_volume_mm3": round(scan.lesion_voxels[lesion.id] * zoom, 3),
                })
            volumes = [lesion.volume_voxels for lesion in subject.lesions]
            scan_rows.append({
                "participant_id": f"sub-{label}", "session_id": ses,
                "n_lesions": len(volumes), "n_small": sum(v < SMALL_LESION_VOXELS for v in volumes),
                "volume_voxels": int(sum(volumes)), "voxel_size": acq.voxel_size,
                "orientation": acq.orientation, "dtype": acq.dtype, "fov_crop": acq.fov_crop,
                "max_displacement_mm": round(subject.anatomy.max_displacement_mm, 3),
            })
            scans_summary.append({
                "participant_id": f"sub-{label}", "session_id": ses,
                "t1w": str(rel / f"{prefix}_T1w.nii.gz"), "n_lesions": len(volumes),
                "lesion_volumes_voxels": volumes, "voxel_size": list(acq.voxel_size),
                "orientation": acq.orientation, "dtype": acq.dtype, "fov_crop": acq.fov_crop,
            })
        LOGGER.info("sub-%s: %d lesion(s) %s voxels", label, len(subject.lesions),
                    [lesion.volume_voxels for lesion in subject.lesions])

    _write_json(root / "dataset_description.json", _dataset_description(
        f"Synthetic stroke T1w (seed {seed})", "raw", parameters))
    _write_bytes(root / "README", _README.format(
        package=PACKAGE_NAME, version=__version__, seed=seed, orientations=", ".join(orientations),
        truth=TRUTH_PIPELINE, space=TEMPLATE_SPACE).encode())
    _write_tsv(root / "participants.tsv", ["participant_id", "age", "sex"], participants)
    _write_json(root / "participants.json", {
        "age": {"Description": "synthetic age", "Units": "year"},
        "sex": {"Description": "synthetic sex", "Levels": {"F": "female", "M": "male"}},
    })
    _write_json(truth / "dataset_description.json", _dataset_description(
        f"Ground truth of the synthetic stroke T1w dataset (seed {seed})", "derivative",
        parameters))
    _write_tsv(truth / "lesions.tsv", [
        "participant_id", "session_id", "id", "kind", "territory", "hemisphere", "size",
        "volume_voxels", "volume_mm3", "centre_x_mm", "centre_y_mm", "centre_z_mm",
        "native_voxels", "native_volume_mm3"], lesion_rows)
    _write_tsv(truth / "scans.tsv", list(scan_rows[0]), scan_rows)
    return {"scans": scans_summary}


def _write_scan(anat: Path, truth: Path, prefix: str, scan: SyntheticScan,
                subject: SyntheticSubject, template_mask: np.ndarray, seed: list) -> None:
    acq = scan.acquisition
    _write_nifti(anat / f"{prefix}_T1w.nii.gz", scan.t1w, scan.affine)
    _write_json(anat / f"{prefix}_T1w.json", {
        "Manufacturer": "synthetic",
        "ManufacturersModelName": f"{PACKAGE_NAME} {__version__} synthetic",
        "MagneticFieldStrength": 3,
        "MRAcquisitionType": "3D",
        "SeriesDescription": "synthetic T1w, not a real scan",
    })
    _write_nifti(truth / f"{prefix}_label-L_mask.nii.gz", scan.lesion_mask, scan.affine)
    _write_nifti(truth / f"{prefix}_desc-brain_mask.nii.gz", scan.brain_mask, scan.affine)
    _write_nifti(truth / f"{prefix}_space-{TEMPLATE_SPACE}_label-L_mask.nii.gz", template_mask,
                 TEMPLATE_AFFINE, code=4)
    xfm = f"{prefix}_from-T1w_to-{TEMPLATE_SPACE}_mode-image_xfm"
    _write_bytes(truth / f"{xfm}.txt", itk_affine_text(acq.template_to_native).encode())
    transform = {
        "NativeToTemplate": _matrix(acq.native_to_template),
        "TemplateToNative": _matrix(acq.template_to_native),
        "Description": (
            "World-to-world affines in RAS mm. NativeToTemplate maps a point in the T1w image's "
            "world space (its NIfTI affine) to MNI152NLin2009aSym mm: "
            "p_template = NativeToTemplate @ p_native. The exact map adds a smooth displacement "
            "u(p_template) of at most MaxDisplacementMm (mm), which is not in this affine. "
            "The .txt file is the same affine in ITK/ANTs form (LPS, maps template points to "
            "native points), usable as the transform that resamples the T1w into template space."
        ),
        "MaxDisplacementMm": round(subject.anatomy.max_displacement_mm, 4),
        "FromSpace": "T1w",
        "ToSpace": TEMPLATE_SPACE,
    }
    _write_json(truth / f"{xfm}.json", transform)
    zoom = float(np.prod(acq.voxel_size))
    lesions = []
    for lesion in subject.lesions:
        entry = lesion.to_dict()
        entry["native_voxels"] = scan.lesion_voxels[lesion.id]
        entry["native_volume_mm3"] = round(scan.lesion_voxels[lesion.id] * zoom, 3)
        lesions.append(entry)
    _write_json(truth / f"{prefix}_lesions.json", {
        "Description": (
            "Synthetic lesions. centre_mm: centroid in MNI152NLin2009aSym mm; volume_voxels: "
            "1 mm template voxels (= volume_mm3); native_voxels: voxels of the native "
            "label-L mask nearest to this lesion."
        ),
        "Lesions": lesions,
        "LesionCount": len(lesions),
        "TotalVolumeVoxels": int(template_mask.sum()),
        "TemplateSpace": TEMPLATE_SPACE,
        "TemplateShape": list(TEMPLATE_SHAPE),
        "Seed": seed,
        "Acquisition": {
            "Shape": list(acq.shape), "VoxelSizeMm": list(acq.voxel_size),
            "Orientation": acq.orientation, "Dtype": acq.dtype, "FovCrop": acq.fov_crop,
            **{key: value for key, value in acq.params.items()},
        },
        "Transform": transform,
        "Anatomy": {
            "MaxDisplacementMm": round(subject.anatomy.max_displacement_mm, 4),
            **_rounded(subject.anatomy.params),
        },
    })


def _rounded(value):
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_rounded(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.6g}") if math.isfinite(value) else None
    return value
