"""Group level: cohort table, lesion stacks, exports and summary page, from OUTPUT_DIR only.

Every participant-level image that has a lesion-load table contributes one row to the cohort
TSV (``participant_id``, ``session_id``, ``run`` and every measure); images processed without
lesion measures, and subject folders without processed images, are listed with a ``status``
instead of failing the group step.

For each template space in which the images have group-space lesion masks
(:data:`~stroke_lesion_app.core.group_stacks.GROUP_GRIDS`) the group level writes the inputs
of lesion-symptom mapping (:mod:`.group_stacks`, :mod:`.group_exports`): a 4D stack of the
masks with its volume order (TSV) and metadata (JSON), a stack of the model's probabilities,
optionally a stack flipped so that lesions lie on the left, the count, frequency and
minimum-overlap maps, a NiiStat/NPM design sheet and a LESYMAP file list. Images that cannot
be stacked (no mask, another grid, unreadable) are listed with the reason.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from stroke_lesion_app.core import bids as bids_core
from stroke_lesion_app.core import group_exports, reports
from stroke_lesion_app.core.bundle import DEMO_WARNING
from stroke_lesion_app.core.fileio import atomic_path, write_json_atomic, write_text_atomic
from stroke_lesion_app.core.group_stacks import (
    GROUP_GRIDS,
    StackVolume,
    TemplateGrid,
    check_volumes,
    effective_min_overlap,
    image_label,
    min_overlap_mask,
    read_on_grid,
    write_map,
    write_mask_stacks,
    write_probability_stack,
)

LOGGER = logging.getLogger("stroke_lesion_app.group")

_ENTITY_COLUMNS = (("sub", "participant_id"), ("ses", "session_id"), ("run", "run"))

#: Conventional minimum number of lesioned images per tested voxel in VLSM.
DEFAULT_MIN_OVERLAP = 5

#: The convention of the flipped stacks (their JSON says it).
FLIP_CONVENTION = ("flipped so that lesions lie in the left hemisphere, x < 0; mirror plane "
                   "x = 0 mm")

_FALLBACK_MASKS = (("_desc-edited", "edited"), ("", "model"), ("_desc-manual", "manual"))


def _identity(name: str) -> dict[str, str]:
    """``participant_id``/``session_id``/``run`` of a derivative file name."""
    parts = dict(part.split("-", 1) for part in name.split("_") if "-" in part)
    return {column: (f"{key}-{parts[key]}" if key != "run" else parts[key])
            for key, column in _ENTITY_COLUMNS if key in parts}


def _read_json(path: Path) -> dict:
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


@dataclass
class GroupImage:
    """One measured image and its group-space lesion maps.

    Attributes
    ----------
    label : str
        ``sub-01``, ``sub-01 ses-2 run-1``.
    masks : dict
        Space → :class:`~.group_stacks.StackVolume` of its binary lesion mask.
    probsegs : dict
        Space → volume of its lesion probability (model lesions only).
    """

    label: str
    masks: dict[str, StackVolume] = field(default_factory=dict)
    probsegs: dict[str, StackVolume] = field(default_factory=dict)


@dataclass
class Cohort:
    """Result of :func:`collect_cohort`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per processed image (sorted), measures as columns, plus ``status``.
    images : list of GroupImage
        The images with lesion measures, in the table's order.
    skipped : list of (str, str)
        Images (and subject folders) without lesion measures, with their status.
    """

    table: pd.DataFrame
    images: list[GroupImage]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def std_masks(self) -> list[Path]:
        """Template-space (MNI152NLin2009aSym) lesion masks, one per image that has one."""
        return [image.masks[bids_core.TEMPLATE_SPACE].path for image in self.images
                if bids_core.TEMPLATE_SPACE in image.masks]


def collect_cohort(output_dir: Path | str) -> Cohort:
    """Read every image's lesion-load table and group-space lesion maps in ``output_dir``.

    Group-space masks: the lesion-aware normalisation's
    ``<stem>_space-<SPACE>_label-L_desc-lesionaware_mask.nii.gz`` (its sidecar gives the
    lesion source, branch, transforms and interpolation), else, in MNI152NLin2009aSym only,
    the segmentation's template-space mask (edited, else the model's, else the manual one;
    branch ``affine``). A probability map joins only a mask whose source is the model.
    """
    output_dir = Path(output_dir)
    rows, images = [], {}
    for preproc in sorted(output_dir.glob("sub-*/**/anat/*_desc-preproc_T1w.nii.gz")):
        if "space-" in preproc.name:
            continue
        stem = preproc.name[: -len("_desc-preproc_T1w.nii.gz")]
        identity = _identity(stem)
        table = preproc.with_name(f"{stem}_label-L_desc-lesionload_stats.tsv")
        if table.is_file():
            measures = pd.read_csv(table, sep="\t").iloc[0].to_dict()
            image = _group_image(output_dir, preproc.parent, stem, identity)
            provenance = _lesion_provenance(preproc.parent, stem, image)
            rows.append({**identity, "status": "measured", **provenance, **measures,
                         "_stem": str(preproc.parent / stem)})
            images[str(preproc.parent / stem)] = image
        else:
            rows.append({**identity, "status": "no lesion mask", "_stem": ""})
    processed = {row["participant_id"] for row in rows}
    for folder in sorted(output_dir.glob("sub-*")):
        if folder.is_dir() and folder.name not in processed:
            rows.append({"participant_id": folder.name, "status": "not processed (see its log)",
                         "_stem": ""})
    table = pd.DataFrame(rows)
    ordered, skipped = [], []
    if not table.empty:
        leading = [column for _, column in _ENTITY_COLUMNS if column in table] + ["status"]
        table = table[leading + [c for c in table.columns if c not in leading]]
        table = table.sort_values(leading[:-1], na_position="first").reset_index(drop=True)
        for _, row in table.iterrows():
            if row["_stem"]:
                ordered.append(images[row["_stem"]])
            else:
                skipped.append((_row_label(row), str(row["status"])))
        table = table.drop(columns="_stem")
    return Cohort(table, ordered, skipped)


def _row_label(row: pd.Series) -> str:
    values = [row.get(column) for column in ("session_id", "run")]
    return image_label(str(row["participant_id"]),
                       *(value if isinstance(value, str) and value else "n/a"
                         for value in values))


def _group_image(output_dir: Path, folder: Path, stem: str, identity: dict) -> GroupImage:
    """The group-space maps of one image (see :func:`collect_cohort`)."""
    ids = {"participant_id": identity["participant_id"],
           "session_id": identity.get("session_id", "n/a"), "run": identity.get("run", "n/a")}
    image = GroupImage(image_label(**ids))
    for space in GROUP_GRIDS:
        base = f"{stem}_space-{space}_label-L"
        mask = folder / f"{base}_desc-lesionaware_mask.nii.gz"
        if mask.is_file():
            meta = _read_json(mask.with_name(mask.name.replace(".nii.gz", ".json")))
            source = str(meta.get("LesionSource") or _tsv_lesion_source(folder, stem)
                         or "model")
            normalisation = meta.get("Normalisation")
            branch = (normalisation.get("Branch") if isinstance(normalisation, dict)
                      else None) or "n/a"
            chain = meta.get("TransformChain", [])
            chain = [chain] if isinstance(chain, str) else list(chain or [])
            common = {**ids, "lesion_source": source, "branch": str(branch),
                      "transforms": [str(item) for item in chain],
                      "reference": meta.get("SpatialReference")}
            image.masks[space] = StackVolume(
                path=mask.absolute(), interpolation=str(meta.get("Interpolation", "n/a")),
                **common)
            probseg = folder / f"{base}_desc-lesionaware_probseg.nii.gz"
            if source == "model" and probseg.is_file():
                probseg_meta = _read_json(probseg.with_name(
                    probseg.name.replace(".nii.gz", ".json")))
                image.probsegs[space] = StackVolume(
                    path=probseg.absolute(),
                    interpolation=str(probseg_meta.get("Interpolation", "linear")), **common)
            continue
        if space != bids_core.TEMPLATE_SPACE:
            continue
        for desc, source in _FALLBACK_MASKS:  # the segmentation's own registration
            mask = folder / f"{base}{desc}_mask.nii.gz"
            if not mask.is_file():
                continue
            meta = _read_json(mask.with_name(mask.name.replace(".nii.gz", ".json")))
            transforms = [f"bids::{path.relative_to(output_dir).as_posix()}" for path in
                          sorted(folder.glob(f"{stem}_from-T1w_to-{space}_mode-image_xfm.*"))]
            common = {**ids, "lesion_source": source, "branch": "affine",
                      "transforms": transforms, "reference": meta.get("SpatialReference")}
            interpolation = meta.get("Interpolation") or (
                "none (segmented on the template grid)" if source == "model" else "n/a")
            image.masks[space] = StackVolume(path=mask.absolute(),
                                             interpolation=str(interpolation), **common)
            probseg = folder / f"{base}_probseg.nii.gz"
            if source == "model" and probseg.is_file():
                image.probsegs[space] = StackVolume(path=probseg.absolute(),
                                                    interpolation="none", **common)
            break
    return image


def _tsv_lesion_source(folder: Path, stem: str) -> str | None:
    """``LesionSource`` of an image's lesion-load table sidecar, if it says."""
    meta = _read_json(folder / f"{stem}_label-L_desc-lesionload_stats.json")
    source = meta.get("LesionSource")
    return str(source) if source else None


def _lesion_provenance(folder: Path, stem: str, image: GroupImage | None = None) -> dict:
    """Where an image's measured mask came from (``model``, ``edited``, ``manual``): the
    lesion-load table's sidecar, else its template-space mask, else whether the model's mask
    exists; and the model bundle (the model mask's sidecar)."""
    sidecar = folder / f"{stem}_label-L_mask.json"
    meta = _read_json(sidecar) if sidecar.is_file() else None
    source = _tsv_lesion_source(folder, stem)
    if source is None and image is not None and bids_core.TEMPLATE_SPACE in image.masks:
        source = image.masks[bids_core.TEMPLATE_SPACE].lesion_source
    if source is None:
        source = "model" if meta is not None else "manual"
    if meta is None:
        return {"lesion_source": source, "model": "n/a", "demo_model": False}
    model = meta.get("Model", {})
    return {"lesion_source": source,
            "model": f"{model.get('name', '?')} {model.get('version', '?')}",
            "demo_model": bool(meta.get("Demo", False))}


def frequency_map(masks: list[Path], grid: TemplateGrid | None = None
                  ) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Count and frequency (count / number of masks, 0-1) of lesions per template voxel.

    Parameters
    ----------
    masks : list of Path
        Binary masks (values > 0.5 are lesion), all on one grid.
    grid : TemplateGrid, optional
        The grid they must be on (default: MNI152NLin2009aSym, 197×233×189, 1 mm).

    Returns
    -------
    (count, frequency)
        int16 and float32 images of shape ``grid.shape`` on the grid's affine.

    Raises
    ------
    ValueError
        No masks, or a mask on another grid.
    """
    grid = grid or GROUP_GRIDS[bids_core.TEMPLATE_SPACE]
    if not masks:
        raise ValueError("no template-space lesion masks to combine")
    volumes = [StackVolume("", "n/a", "n/a", Path(path), "n/a", "n/a") for path in masks]
    accepted, excluded = check_volumes(volumes, grid)
    if excluded:
        volume, reason = excluded[0]
        raise ValueError(f"{volume.path}: {reason}")
    count = np.zeros(grid.shape, np.int32)
    for volume, ornt in accepted:
        count += np.nan_to_num(np.asarray(read_on_grid(volume.path, grid, ornt),
                                          dtype=np.float32)) > 0.5
    frequency = (count / len(masks)).astype(np.float32)
    return (nib.Nifti1Image(count.astype(np.int16), grid.affine),
            nib.Nifti1Image(frequency, grid.affine))


# --------------------------------------------------------------------------------------------
# Per-space outputs
# --------------------------------------------------------------------------------------------
@dataclass
class SpaceOutputs:
    """What the group level wrote for one template space.

    Attributes
    ----------
    grid : TemplateGrid
    stacked : list of StackVolume
        Images in the mask stack, in order.
    probabilities : list of StackVolume
        Images in the probability stack, in order.
    files : dict
        Kind (a key of :data:`~stroke_lesion_app.core.bids.GROUP_SPACE_OUTPUTS`, or
        ``<kind>_table``/``<kind>_json`` for sidecars) → path.
    min_overlap, requested_overlap : int
        Minimum overlap used (never above the number of images) and asked for.
    excluded : list of (str, str, str)
        ``(image, output, reason)`` of images left out of this space's outputs.
    count : numpy.ndarray or None
        Lesioned images per voxel (int32, ``grid.shape``).
    """

    grid: TemplateGrid
    stacked: list[StackVolume] = field(default_factory=list)
    probabilities: list[StackVolume] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    min_overlap: int = 0
    requested_overlap: int = 0
    excluded: list[tuple[str, str, str]] = field(default_factory=list)
    count: np.ndarray | None = None


def _volume_table(volumes: list[StackVolume], output_dir: Path,
                  flipped: list[bool] | None = None) -> pd.DataFrame:
    """The volume order of a stack (``volume`` counts from 1)."""
    rows = [{"volume": index, "participant_id": volume.participant_id,
             "session_id": volume.session_id, "run": volume.run,
             "source_file": _relative(volume.path, output_dir),
             "lesion_source": volume.lesion_source, "normalisation_branch": volume.branch}
            for index, volume in enumerate(volumes, start=1)]
    table = pd.DataFrame(rows, columns=["volume", "participant_id", "session_id", "run",
                                        "source_file", "lesion_source",
                                        "normalisation_branch"])
    if flipped is not None:
        table["flipped"] = ["true" if value else "false" for value in flipped]
    return table


def _relative(path: Path, output_dir: Path) -> str:
    try:
        return Path(path).absolute().relative_to(output_dir.absolute()).as_posix()
    except ValueError:
        return str(path)


def _common(values: list):
    """The value every volume shares, else the per-volume list."""
    return values[0] if values and all(value == values[0] for value in values) else values


def _stack_sidecar(grid: TemplateGrid, volumes: list[StackVolume], output_dir: Path,
                   table_name: str, description: str,
                   excluded: list[tuple[str, str]]) -> dict:
    references = [volume.reference or grid.reference for volume in volumes]
    return {
        "Description": description,
        "SpatialReference": _common(references) if volumes else grid.reference,
        "Space": grid.space,
        "Volumes": len(volumes),
        "VolumeOrder": f"{table_name}: one row per volume, in order (column 'volume' from 1)",
        "Header": (f"The {grid.space} 1 mm grid {list(grid.shape)}: its affine as qform and "
                   "sform (code 4, MNI152), 1 mm voxels, mm units; the same header bytes in "
                   "every group image of this space apart from the data type and the number "
                   "of volumes."),
        "Interpolation": _common([volume.interpolation for volume in volumes]),
        "TransformChain": [volume.transforms for volume in volumes],
        "TransformChainOrder": "per volume, in volume order; ANTs order (the last transform "
                               "is applied first to group-space points)",
        "NormalisationBranch": _common([volume.branch for volume in volumes]),
        "Sources": [f"bids::{_relative(volume.path, output_dir)}" for volume in volumes],
        "Excluded": [{"image": label, "reason": reason} for label, reason in excluded],
    }


def _write_table(path: Path, table: pd.DataFrame) -> Path:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, sep="\t", index=False, na_rep="n/a", lineterminator="\n")
    return path


def _write_space(output_dir: Path, cohort: Cohort, grid: TemplateGrid,
                 participants: pd.DataFrame | None, flip_to_left: bool,
                 min_overlap: int) -> SpaceOutputs:
    """Stacks, maps and exports of one space (nothing when no image has a mask there)."""
    space = grid.space
    result = SpaceOutputs(grid, requested_overlap=min_overlap)
    with_mask = [image.masks[space] for image in cohort.images if space in image.masks]
    if not with_mask:
        return result
    missing = [(image.label, f"no {space} lesion mask") for image in cohort.images
               if space not in image.masks]
    accepted, wrong = check_volumes(with_mask, grid)
    left_out = missing + [(volume.label, reason) for volume, reason in wrong]
    path = bids_core.group_path(output_dir, "mask_stack", space)
    flipped_path = bids_core.group_path(output_dir, "flipped_stack", space) \
        if flip_to_left else None
    stacks = write_mask_stacks(accepted, grid, path, flipped_path) if accepted else None
    if stacks is not None:
        left_out += [(volume.label, reason) for volume, reason in stacks.excluded]
    result.excluded += [(label, "masks", reason) for label, reason in left_out]
    for label, reason in left_out:
        LOGGER.warning("%s: %s; left out of the %s stacks.", label, reason, space)
    if stacks is None or not stacks.volumes:
        return result
    result.stacked, result.count = stacks.volumes, stacks.count
    n_images = len(stacks.volumes)
    files = result.files
    files["mask_stack"] = path
    files["mask_stack_table"] = _write_table(bids_core.group_sidecar(path, ".tsv"),
                                             _volume_table(stacks.volumes, output_dir))
    files["mask_stack_json"] = write_json_atomic(
        bids_core.group_sidecar(path, ".json"),
        {**_stack_sidecar(grid, stacks.volumes, output_dir, files["mask_stack_table"].name,
                          f"Binary lesion masks (uint8, 1 = lesion) of {n_images} images "
                          "stacked along the 4th dimension, one volume per image, for "
                          "lesion-symptom mapping.", left_out),
         "Type": "Lesion"})
    if flipped_path is not None:
        files["flipped_stack"] = flipped_path
        files["flipped_stack_table"] = _write_table(
            bids_core.group_sidecar(flipped_path, ".tsv"),
            _volume_table(stacks.volumes, output_dir, stacks.flipped))
        mirror = ("exact: the grid's voxel centres are symmetric about x = 0 (voxel i <-> "
                  f"{grid.shape[0] - 1} - i)" if grid.symmetric else
                  "nearest voxel of the mirror point (world x -> -x) on the same grid; the "
                  "template is asymmetric, so a mirrored lesion lies on anatomy that is only "
                  "close to homologous")
        files["flipped_stack_json"] = write_json_atomic(
            bids_core.group_sidecar(flipped_path, ".json"),
            {**_stack_sidecar(grid, stacks.volumes, output_dir,
                              files["flipped_stack_table"].name,
                              f"The mask stack of {n_images} images, {FLIP_CONVENTION}.",
                              left_out),
             "Type": "Lesion", "Flipped": FLIP_CONVENTION,
             "FlipRule": "a volume is mirrored when more of its lesion voxels lie at x > 0 mm "
                         "than at x < 0 mm (world coordinates of the mask's voxels); column "
                         "'flipped' of the TSV",
             "MirrorMethod": mirror, "FlippedVolumes": int(sum(stacks.flipped))})
    _write_probabilities(output_dir, cohort, grid, result)
    _write_maps(output_dir, grid, result)
    files["niistat_sheet"] = group_exports.write_niistat_sheet(
        bids_core.group_path(output_dir, "niistat_sheet", space), stacks.volumes, participants)
    files["lesymap_list"] = group_exports.write_lesymap_list(
        bids_core.group_path(output_dir, "lesymap_list", space), stacks.volumes)
    LOGGER.info("%s: %d image(s) stacked, %d left out, minimum overlap %d → %s", space,
                n_images, len(left_out), result.min_overlap, path)
    return result


def _write_probabilities(output_dir: Path, cohort: Cohort, grid: TemplateGrid,
                         result: SpaceOutputs) -> None:
    """The probability stack: the stacked images whose mask is the model's."""
    space = grid.space
    stacked = {volume.path for volume in result.stacked}
    candidates, left_out = [], []
    for image in cohort.images:
        mask = image.masks.get(space)
        if mask is None or mask.path not in stacked:
            continue
        if mask.lesion_source == "manual":
            continue  # a manual mask never had a probability map: nothing left out
        if mask.lesion_source != "model":
            reason = (f"lesion source '{mask.lesion_source}': no model probability matches "
                      "this mask")
            left_out.append((image.label, reason))
        elif space not in image.probsegs:
            left_out.append((image.label, f"no {space} probability map"))
        else:
            candidates.append(image.probsegs[space])
    accepted, wrong = check_volumes(candidates, grid)
    left_out += [(volume.label, reason) for volume, reason in wrong]
    path = bids_core.group_path(output_dir, "probseg_stack", space)
    written, unreadable = write_probability_stack(accepted, grid, path) if accepted \
        else ([], [])
    left_out += [(volume.label, reason) for volume, reason in unreadable]
    result.excluded += [(label, "probabilities", reason) for label, reason in left_out]
    if not written:
        return
    result.probabilities = written
    files = result.files
    files["probseg_stack"] = path
    files["probseg_stack_table"] = _write_table(bids_core.group_sidecar(path, ".tsv"),
                                                _volume_table(written, output_dir))
    files["probseg_stack_json"] = write_json_atomic(
        bids_core.group_sidecar(path, ".json"),
        _stack_sidecar(grid, written, output_dir, files["probseg_stack_table"].name,
                       f"Lesion probabilities (float32, 0-1) of the model's segmentation, "
                       f"{len(written)} images stacked along the 4th dimension. Only images "
                       "whose lesion mask is the model's (LesionSource 'model'): edited and "
                       "manual masks have no matching probability map.", left_out))


def _write_maps(output_dir: Path, grid: TemplateGrid, result: SpaceOutputs) -> None:
    """Count, frequency and minimum-overlap maps of the stacked masks (same header)."""
    space, files, n_images = grid.space, result.files, len(result.stacked)
    count = result.count
    result.min_overlap = effective_min_overlap(result.requested_overlap, n_images)
    reference = {"SpatialReference": grid.reference, "Images": n_images,
                 "Sources": [files["mask_stack"].name]}
    files["count_map"] = write_map(bids_core.group_path(output_dir, "count_map", space),
                                   count, grid, np.int16)
    files["count_map_json"] = write_json_atomic(
        bids_core.group_sidecar(files["count_map"], ".json"),
        {"Description": f"Number of the {n_images} stacked images with a lesion at each voxel "
                        "(int16).", **reference})
    files["frequency_map"] = write_map(
        bids_core.group_path(output_dir, "frequency_map", space),
        (count / n_images).astype(np.float32), grid, np.float32)
    files["frequency_map_json"] = write_json_atomic(
        bids_core.group_sidecar(files["frequency_map"], ".json"),
        {"Description": f"Share (0-1) of the {n_images} stacked images with a lesion at each "
                        "voxel.", **reference})
    overlap = min_overlap_mask(count, result.min_overlap)
    files["overlap_mask"] = write_map(bids_core.group_path(output_dir, "overlap_mask", space),
                                      overlap, grid, np.uint8)
    files["overlap_mask_json"] = write_json_atomic(
        bids_core.group_sidecar(files["overlap_mask"], ".json"),
        {"Description": f"Voxels lesioned in at least N = {result.min_overlap} of the "
                        f"{n_images} stacked images (uint8, 1 = in): the voxels a "
                        "lesion-symptom mapping usually tests.",
         "Type": "ROI", "MinimumOverlap": result.min_overlap,
         "RequestedMinimumOverlap": result.requested_overlap,
         "MinimumOverlapRule": "--min-overlap N (default 5), never more than the number of "
                               "images", "Voxels": int(overlap.sum()),
         "VolumeML": round(float(overlap.sum()) * float(np.prod(grid.zooms)) / 1000, 3),
         **reference})


def _remove_stale(output_dir: Path, spaces: dict[str, SpaceOutputs]) -> None:
    """Delete per-space group files of an earlier run that this run did not write (a flipped
    stack without ``--flip-to-left``, a space without images now): their volume order would
    no longer match the cohort."""
    for space, result in spaces.items():
        current = set(result.files.values())
        for kind in bids_core.GROUP_SPACE_OUTPUTS:
            path = bids_core.group_path(output_dir, kind, space)
            sidecars = (".tsv", ".json") if kind.endswith("_stack") else (
                (".json",) if path.name.endswith(".nii.gz") else ())
            for candidate in (path, *(bids_core.group_sidecar(path, extension)
                                      for extension in sidecars)):
                if candidate not in current and candidate.is_file():
                    candidate.unlink()
                    LOGGER.info("Removed %s of an earlier group run (not written this time).",
                                candidate)


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def _volume_histogram(table: pd.DataFrame, out_file: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    figure, axis = plt.subplots(figsize=(8, 3.6))
    volumes = table.loc[table["status"] == "measured", "volume_ml"].astype(float)
    axis.hist(volumes, bins=min(30, max(5, len(volumes))), color="#c0392b")
    axis.set_xlabel("lesion volume (mL, native space)")
    axis.set_ylabel("images")
    axis.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.set_title(f"Lesion volume, N = {len(volumes)} images", fontsize=11)
    figure.tight_layout()
    with atomic_path(out_file) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    return out_file


def _region_chart(table: pd.DataFrame, out_file: Path, top: int = 20) -> Path | None:
    columns = [c for c in table.columns if c.endswith("_region_percent")]
    if not columns:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    involvement = table[columns].apply(pd.to_numeric, errors="coerce").mean().sort_values()
    involvement = involvement.tail(top)
    figure, axis = plt.subplots(figsize=(8, 0.3 * len(involvement) + 1.4))
    axis.barh([reports.region_label(c[: -len("_region_percent")]) for c in involvement.index],
              involvement.values, color="#2874a6")
    axis.set_xlabel("mean % of the region lesioned (template space)")
    measured = int((table["status"] == "measured").sum())
    axis.set_title(f"Region involvement, mean over N = {measured} images", fontsize=11)
    figure.tight_layout()
    with atomic_path(out_file) as tmp:
        figure.savefig(tmp, dpi=120, format="png")
    plt.close(figure)
    return out_file


def _background(template_t1w: nib.Nifti1Image | None, grid: TemplateGrid) -> nib.Nifti1Image:
    return template_t1w if template_t1w is not None else nib.Nifti1Image(
        np.zeros(grid.shape, np.float32), grid.affine)


def _frequency_figure(frequency: nib.Nifti1Image, n_images: int,
                      template_t1w: nib.Nifti1Image | None, out_file: Path) -> Path:
    """The lesion frequency as a heat map (% of the N images) on the template, colour bar."""
    background = template_t1w if template_t1w is not None else nib.Nifti1Image(
        np.zeros(frequency.shape[:3], np.float32), frequency.affine)
    return reports.heat_mosaic(
        background, frequency, out_file,
        label=f"% of the N = {n_images} images with a lesion at the voxel",
        title=f"Lesion frequency, N = {n_images} images: axial slices of "
              "MNI152NLin2009aSym (positions in MNI mm)")


def _overlap_figure(result: SpaceOutputs, template_t1w: nib.Nifti1Image | None,
                    out_file: Path) -> Path:
    """The minimum-overlap region: the count map where it reaches N, as a heat map."""
    grid, n_images = result.grid, len(result.stacked)
    shown = np.where(result.count >= result.min_overlap, result.count, 0).astype(np.float32)
    return reports.heat_mosaic(
        _background(template_t1w, grid), nib.Nifti1Image(shown, grid.affine), out_file,
        label=f"images with a lesion at the voxel (of N = {n_images})", scale=1.0,
        vmax=float(n_images),
        title=f"Minimum overlap: voxels lesioned in at least {result.min_overlap} of the "
              f"N = {n_images} images ({grid.space}, positions in MNI mm)")


# --------------------------------------------------------------------------------------------
# Page
# --------------------------------------------------------------------------------------------
def _space_line(result: SpaceOutputs) -> str:
    space = result.grid.space
    if not result.stacked and not result.excluded:
        if space == bids_core.TEMPLATE_SPACE:
            return f"{space}: no maps (no image has a template-space lesion mask yet)"
        return f"{space}: no maps (the template was not available at the participant level)"
    if not result.stacked:
        return f"{space}: no maps (no image could be stacked; see the excluded images)"
    flipped = " and flipped to the left" if "flipped_stack" in result.files else ""
    return (f"{space}: {len(result.stacked)} image(s) stacked{flipped}, "
            f"{len(result.probabilities)} with model probabilities; minimum overlap "
            f"N = {result.min_overlap} (asked {result.requested_overlap})"
            + ("" if result.grid.symmetric else "; asymmetric template"))


def _plain_table(frame: pd.DataFrame, numeric: tuple[str, ...] = (),
                 max_rows: int = 40) -> str:
    """A table of display-ready text (no TSV behind it), in the page's table style."""
    head = "".join(f"<th scope='col'>{html.escape(str(column))}</th>" for column in frame)
    number = " class='num'"
    body = "".join(
        "<tr>" + "".join(f"<td{number if column in numeric else ''}>"
                         f"{html.escape(str(value))}</td>" for column, value in row.items())
        + "</tr>" for _, row in frame.head(max_rows).iterrows())
    more = (f"<p class='note'>{len(frame) - max_rows} more rows.</p>"
            if len(frame) > max_rows else "")
    return (f"<div class='table-wrap'><table class='table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{body}</tbody></table></div>{more}")


def _involvement_html(regional: pd.DataFrame) -> str:
    summary = group_exports.region_involvement(regional)
    if summary.empty:
        return "<p><em>No regional measures.</em></p>"
    shown = pd.DataFrame({
        "Atlas": summary["atlas"], "Region": summary["label"],
        "Images involved": [f"{row.images_involved} of {row.images}"
                            for row in summary.itertuples()],
        "Mean % of the region damaged": summary["mean_pct_region_damaged"].map(
            lambda value: reports.format_value(value, 1)),
        "Largest % of the region damaged": summary["max_pct_region_damaged"].map(
            lambda value: reports.format_value(value, 1)),
        "Mean lesion in the region, involved images (mL)":
            summary["mean_lesion_ml_involved"].map(lambda value: reports.format_value(value,
                                                                                    2)),
    })
    return (_plain_table(shown, numeric=tuple(shown.columns[2:]))
            + "<p class='note'>From the images' lesion-load tables (template space "
            "MNI152NLin2009aSym); most involved regions first. Every value per image is in "
            f"<a href='{html.escape(bids_core.GROUP_OUTPUTS['regions_table'])}'>"
            f"{html.escape(bids_core.GROUP_OUTPUTS['regions_table'])}</a>.</p>")


def _excluded_html(excluded: list[tuple[str, str, str, str]]) -> str:
    if not excluded:
        return "<p>None: every image with lesion measures is in the stacks.</p>"
    frame = pd.DataFrame(excluded, columns=["Image", "Space", "Output", "Reason"])
    return _plain_table(frame, max_rows=200)


def _files_html(table_path: Path, regions: list[Path], spaces: dict[str, SpaceOutputs]) -> str:
    def links(paths) -> str:
        return "".join(f"<li><a href='{html.escape(path.name)}'>{html.escape(path.name)}</a>"
                       "</li>" for path in paths)

    text = f"<ul>{links([table_path, *regions])}</ul>"
    for space, result in spaces.items():
        if result.files:
            text += f"<h3>{html.escape(space)}</h3><ul>{links(result.files.values())}</ul>"
    return text


def _group_body(output_dir: Path, cohort: Cohort, measured: int, table_path: Path,
                figures: list[tuple[str, Path, str, bool]], spaces: dict[str, SpaceOutputs],
                regional: pd.DataFrame, regions: list[Path],
                excluded: list[tuple[str, str, str, str]]) -> str:
    """The group page's HTML: counts, warning, figures, spaces, region involvement, excluded
    images, the cohort table (participants linked to their pages) and links to the files."""
    table = cohort.table
    demo = bool(measured) and bool(table.get("demo_model", pd.Series(dtype=bool))
                                   .fillna(False).astype(bool).any())
    pages = {}
    if not table.empty:
        pages = {participant: f"../{participant}.html"
                 for participant in table["participant_id"].dropna().astype(str).unique()
                 if (output_dir / f"{participant}.html").is_file()}
    shown = table[[c for c in table.columns if not c.endswith("_percent")]] if not table.empty \
        else table
    lines = "".join(f"<li>{html.escape(_space_line(result))}</li>"
                    for result in spaces.values())
    return (f"<p>{measured} image(s) with lesion measures, {len(table) - measured} without "
            "(listed in the cohort table).</p>"
            + (f"<p class='warning'>{html.escape(DEMO_WARNING)}</p>" if demo else "")
            + "".join(f"<h2>{html.escape(title)}</h2>"
                      + reports.figure_html(f"figures/{path.name}", title, caption,
                                            convention=convention)
                      for title, path, caption, convention in figures)
            + "<h2 id='regions'>Region involvement table</h2>" + _involvement_html(regional)
            + "<h2 id='spaces'>Template spaces</h2>"
            + f"<ul>{lines}</ul><p class='note'>Per space: a 4D stack of the lesion masks with "
            "its volume order (.tsv) and metadata (.json), the model's probabilities, the "
            "count, frequency and minimum-overlap maps, a NiiStat/NPM design sheet (.tab: "
            "image path, then the columns of participants.tsv) and a LESYMAP file list (.txt, "
            "one path per line), in the order of the stack.</p>"
            + "<h2 id='excluded'>Excluded images</h2>" + _excluded_html(excluded)
            + "<h2 id='cohort'>Cohort table</h2>"
            + "<p class='note'>One row per image; participants link to their reports. "
            "Region percentages are in the TSV. Values rounded for display.</p>"
            + reports.table_html(shown, links={"participant_id": pages})
            + "<h2 id='files'>Files</h2>" + _files_html(table_path, regions, spaces))


def run_group(output_dir: Path | str, template_t1w: nib.Nifti1Image | None = None, *,
              bids_dir: Path | str | None = None, flip_to_left: bool = False,
              min_overlap: int = DEFAULT_MIN_OVERLAP) -> dict:
    """Write the group outputs of ``output_dir`` into ``OUTPUT_DIR/group/``.

    Parameters
    ----------
    output_dir : path
        The participant level's output folder (read; ``group/`` is written).
    template_t1w : nibabel.Nifti1Image, optional
        MNI152NLin2009aSym T1w drawn under the group figures.
    bids_dir : path, optional
        The input dataset; its ``participants.tsv`` (read only) fills the NiiStat sheets.
    flip_to_left : bool
        Also write, per space, the mask stack with right-sided lesions mirrored to the left.
    min_overlap : int
        Minimum number of lesioned images of the minimum-overlap masks (at most the number
        of images of the space).

    Returns
    -------
    dict
        ``cohort_table``, ``regions_table``, ``report``, ``frequency_map`` and ``count_map``
        (MNI152NLin2009aSym, when written): paths; ``measured``, ``rows``: counts;
        ``spaces``: space → {kind: path}; ``excluded``: ``(image, space, output, reason)``.

    Raises
    ------
    ValueError
        ``min_overlap`` below 1.
    """
    if min_overlap < 1:
        raise ValueError(f"--min-overlap {min_overlap}: give at least 1 image")
    output_dir = Path(output_dir)
    cohort = collect_cohort(output_dir)
    table_path = bids_core.group_path(output_dir, "cohort_table")
    table_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(table_path) as tmp:
        cohort.table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    measured = int((cohort.table.get("status") == "measured").sum()) if not cohort.table.empty \
        else 0
    written = {"cohort_table": table_path, "measured": measured, "rows": len(cohort.table)}
    participants = group_exports.read_participants(bids_dir)
    spaces = {space: _write_space(output_dir, cohort, grid, participants, flip_to_left,
                                  min_overlap) for space, grid in GROUP_GRIDS.items()}
    excluded = [(label, "all", "all", status) for label, status in cohort.skipped]
    excluded += [(label, space, output, reason) for space, result in spaces.items()
                 for label, output, reason in result.excluded]
    written["spaces"] = {space: dict(result.files) for space, result in spaces.items()}
    _remove_stale(output_dir, spaces)
    written["excluded"] = excluded
    regional = group_exports.regional_table(cohort.table)
    regions_path = group_exports.write_regional_table(
        bids_core.group_path(output_dir, "regions_table"), regional)
    regions_json = write_json_atomic(bids_core.group_sidecar(regions_path, ".json"),
                                     group_exports.REGIONAL_SIDECAR)
    written["regions_table"] = regions_path

    figures = []
    figure_dir = table_path.parent / "figures"
    main = spaces[bids_core.TEMPLATE_SPACE]
    if main.stacked:
        for kind in ("count_map", "frequency_map"):
            written[kind] = main.files[kind]
        n_images = len(main.stacked)
        frequency = nib.Nifti1Image((main.count / n_images).astype(np.float32),
                                    main.grid.affine)
        figures.append((
            "Lesion frequency (template space)",
            _frequency_figure(frequency, n_images, template_t1w,
                              figure_dir / "desc-frequency_figure.png"),
            (f"Share of the N = {n_images} images with lesion measures that have a lesion "
             "at each voxel of MNI152NLin2009aSym (heat, 0-100 %; voxels lesioned in no image "
             "are not coloured)."), True))
        figures.append((
            f"Minimum overlap (N = {main.min_overlap})",
            _overlap_figure(main, template_t1w, figure_dir / "desc-minoverlap_figure.png"),
            (f"Voxels lesioned in at least N = {main.min_overlap} of the {n_images} images "
             f"(--min-overlap {main.requested_overlap}, never more than the number of images), "
             "coloured by the number of images; a lesion-symptom mapping usually tests only "
             "these voxels."
             + ("" if (main.count >= main.min_overlap).any() else
                " No voxel reaches N: the lesions do not overlap enough.")), True))
    if measured:
        figures.append(("Lesion volume distribution", _volume_histogram(
            cohort.table, figure_dir / "desc-volumes_figure.png"),
            f"Native-space lesion volumes of the N = {measured} images with lesion measures.",
            False))
        chart = _region_chart(cohort.table, figure_dir / "desc-regions_figure.png")
        if chart:
            figures.append(("Region involvement", chart,
                            "Mean share of each region that is lesioned (the 20 most involved).",
                            False))
    body = _group_body(output_dir, cohort, measured, table_path, figures, spaces, regional,
                       [regions_path, regions_json], excluded)
    nav = ("<a href='#regions'>Regions</a><a href='#spaces'>Spaces</a>"
           "<a href='#excluded'>Excluded</a><a href='#cohort'>Cohort table</a>"
           "<a href='#files'>Files</a>")
    written["report"] = write_text_atomic(
        bids_core.group_path(output_dir, "report"),
        reports.page("stroke-lesion-app: group report", "Group report", body, nav=nav))
    LOGGER.info("Group level: %d row(s), %d with lesion measures → %s", len(cohort.table),
                measured, table_path)
    return written
