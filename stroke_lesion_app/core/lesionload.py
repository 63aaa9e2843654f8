"""Lesion-load measures: volume, components, hemisphere, tissue and atlas overlap.

Conventions
-----------
* A voxel is lesion when the mask value is > 0.5 (masks) — probability maps are thresholded by
  the caller.
* Volumes are in mL (1 mL = 1000 mm³) from the image's own voxel size, and in voxels.
* Connected components use **26-connectivity** by default (face, edge and corner neighbours;
  ``connectivity=6`` for faces only, as the ATLAS challenge scoring does).
* Hemisphere is decided in MNI152NLin2009aSym space: x < 0 mm is left, x > 0 right (RAS). For
  native-space measures the caller provides a function that maps native world points (mm) to
  template mm, so native volumes are split by the template midline, not by the scanner's axes.
* Tissue and atlas overlap are computed in template space, both ways: the % of the lesion that
  lies in a region, and the % of the region that is lesioned.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pandas as pd

from stroke_lesion_app.core.components import check_connectivity, label_components

PointMap = Callable[[np.ndarray], np.ndarray]


def voxel_volume_ml(image: nib.Nifti1Image) -> float:
    """Volume of one voxel in mL, from the affine (|det| of the 3×3 part, mm³ / 1000).

    >>> round(voxel_volume_ml(nib.Nifti1Image(np.zeros((2, 2, 2)), np.diag([2.0, 2, 2, 1]))), 9)
    0.008
    """
    return abs(float(np.linalg.det(image.affine[:3, :3]))) / 1000.0


def lesion_voxels(image: nib.Nifti1Image) -> np.ndarray:
    """Boolean lesion array (value > 0.5) of a 3D mask image."""
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"lesion mask of shape {data.shape}: expected one 3D volume")
    return np.nan_to_num(data.astype(np.float32)) > 0.5


def hemisphere_of(x_mm: float, tolerance_mm: float = 0.5) -> str:
    """``left`` (x < 0), ``right`` (x > 0) or ``midline`` (|x| ≤ tolerance) in template mm.

    >>> hemisphere_of(-20.0), hemisphere_of(12.0), hemisphere_of(0.2)
    ('left', 'right', 'midline')
    """
    if x_mm < -tolerance_mm:
        return "left"
    if x_mm > tolerance_mm:
        return "right"
    return "midline"


@dataclass
class Component:
    """One connected lesion component.

    Attributes
    ----------
    label : int
        1-based index, components sorted by decreasing volume.
    voxels : int
        Size in voxels of the image it was measured on.
    volume_ml : float
        Size in mL.
    centroid_mm : tuple of float
        Centre of mass in template mm (MNI152NLin2009aSym, RAS).
    hemisphere : str
        Hemisphere of the centroid (``left``/``right``/``midline``).
    """

    label: int
    voxels: int
    volume_ml: float
    centroid_mm: tuple[float, float, float]
    hemisphere: str


@dataclass
class LesionLoad:
    """Measures of one lesion mask in one space (see :func:`measure_lesion`)."""

    space: str
    connectivity: int
    voxels: int
    volume_ml: float
    left_ml: float
    right_ml: float
    midline_ml: float
    components: list[Component] = field(default_factory=list)

    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def largest_component_ml(self) -> float:
        return self.components[0].volume_ml if self.components else 0.0


def measure_lesion(mask: nib.Nifti1Image, space: str, to_template: PointMap | None = None,
                   connectivity: int = 26) -> LesionLoad:
    """Volume, connected components and left/right split of a lesion mask.

    Parameters
    ----------
    mask : nibabel.Nifti1Image
        3D lesion mask (> 0.5 = lesion), any grid.
    space : str
        Name of the mask's space (``"T1w"`` or ``"MNI152NLin2009aSym"``), reported as is.
    to_template : callable, optional
        Maps world points of ``mask`` (N×3, RAS mm) to template mm. ``None`` when the mask is
        already in template space.
    connectivity : {6, 18, 26}
        Neighbourhood of the connected components.

    Returns
    -------
    LesionLoad
    """
    check_connectivity(connectivity)
    lesion = lesion_voxels(mask)
    unit = voxel_volume_ml(mask)
    index = np.argwhere(lesion)
    world = nib.affines.apply_affine(mask.affine, index) if len(index) else np.zeros((0, 3))
    template = to_template(world) if (to_template is not None and len(world)) else world
    labels, count = label_components(lesion, connectivity)
    components = []
    if count:
        voxel_labels = labels[tuple(index.T)]
        sizes = np.bincount(voxel_labels, minlength=count + 1)[1:]
        for rank, label in enumerate(np.argsort(-sizes, kind="stable") + 1, start=1):
            centroid = template[voxel_labels == label].mean(axis=0)
            components.append(Component(rank, int(sizes[label - 1]),
                                        round(float(sizes[label - 1]) * unit, 6),
                                        tuple(round(float(c), 2) for c in centroid),
                                        hemisphere_of(float(centroid[0]))))
    x = template[:, 0] if len(template) else np.zeros(0)
    return LesionLoad(
        space=space, connectivity=connectivity, voxels=int(lesion.sum()),
        volume_ml=round(float(lesion.sum()) * unit, 6),
        left_ml=round(float((x < -0.5).sum()) * unit, 6),
        right_ml=round(float((x > 0.5).sum()) * unit, 6),
        midline_ml=round(float((np.abs(x) <= 0.5).sum()) * unit, 6),
        components=components,
    )


def region_overlap(std_mask: nib.Nifti1Image, regions: dict[str, np.ndarray]) -> pd.DataFrame:
    """Overlap of a template-space lesion with regions given as weights (0-1) on its grid.

    Parameters
    ----------
    std_mask : nibabel.Nifti1Image
        Lesion mask on the template grid.
    regions : dict
        ``{name: array}``; arrays of the mask's shape holding a membership weight (tissue
        probability, or 1/0 for atlas labels).

    Returns
    -------
    pandas.DataFrame
        One row per region: ``region``, ``lesion_in_region_ml`` (Σ weight over lesion voxels),
        ``percent_of_lesion`` (share of the lesion volume in the region) and
        ``percent_of_region`` (share of the region's volume that is lesioned).
    """
    lesion = lesion_voxels(std_mask)
    unit = voxel_volume_ml(std_mask)
    total = float(lesion.sum())
    rows = []
    for name, weights in regions.items():
        if weights.shape != lesion.shape:
            raise ValueError(f"region {name!r} has shape {weights.shape}, lesion mask "
                             f"{lesion.shape}; resample the atlas to the template grid")
        inside = float(weights[lesion].sum())
        region_total = float(weights.sum())
        rows.append({
            "region": name,
            "lesion_in_region_ml": round(inside * unit, 6),
            "percent_of_lesion": round(100 * inside / total, 4) if total else 0.0,
            "percent_of_region": round(100 * inside / region_total, 4) if region_total else
            math.nan,
        })
    return pd.DataFrame(rows, columns=["region", "lesion_in_region_ml", "percent_of_lesion",
                                       "percent_of_region"])


def atlas_regions(atlas: nib.Nifti1Image, labels: dict[int, str] | None,
                  reference: nib.Nifti1Image) -> dict[str, np.ndarray]:
    """Binary region arrays of a label atlas, on the grid of ``reference``.

    The atlas is resampled (nearest neighbour) onto the reference grid when the grids differ,
    whatever its storage orientation. Labels without a name are called ``label-<n>``.
    """
    from nibabel.processing import resample_from_to

    if atlas.shape[:3] != reference.shape[:3] or not np.allclose(atlas.affine, reference.affine,
                                                                 atol=1e-3):
        atlas = resample_from_to(atlas, reference, order=0)
    data = np.rint(np.asanyarray(atlas.dataobj)).astype(np.int64)
    present = [int(value) for value in np.unique(data) if value != 0]
    names = labels or {}
    return {names.get(value, f"label-{value}"): (data == value).astype(np.float32)
            for value in present}


def read_atlas_labels(path: Path | str | None) -> dict[int, str] | None:
    """Read a label table: TSV with ``index`` and ``name`` columns, or ``<index> <name> …``
    lines (FSL/MRIcron ``.txt`` style). ``None`` when no table is given."""
    if path is None:
        return None
    path = Path(path)
    text = path.read_text(errors="replace")
    first = text.splitlines()[0].lower().split("\t") if text else []
    if "index" in first and "name" in first:
        table = pd.read_csv(path, sep="\t")
        return {int(row["index"]): str(row["name"]) for _, row in table.iterrows()}
    labels = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].lstrip("-").isdigit():
            labels[int(parts[0])] = parts[1]
    if not labels:
        raise ValueError(f"{path}: no labels found; write a TSV with 'index' and 'name' "
                         "columns")
    return labels


def summary_row(native: LesionLoad, std: LesionLoad,
                overlaps: dict[str, pd.DataFrame]) -> dict[str, float | int | str]:
    """The one-row, wide summary of a subject (the cohort TSV's columns).

    ``overlaps`` maps a prefix (``tissue``, ``atlas-AAL``…) to a :func:`region_overlap` table.
    """
    row: dict[str, float | int | str] = {
        "volume_ml": native.volume_ml,
        "volume_voxels": native.voxels,
        "n_components": native.n_components,
        "largest_component_ml": native.largest_component_ml,
        "left_volume_ml": native.left_ml,
        "right_volume_ml": native.right_ml,
        "midline_volume_ml": native.midline_ml,
        "lesion_side": lesion_side(native),
        "std_volume_ml": std.volume_ml,
        "std_n_components": std.n_components,
        "connectivity": native.connectivity,
    }
    for prefix, table in overlaps.items():
        for _, region in table.iterrows():
            key = f"{prefix}_{region['region']}"
            row[f"{key}_lesion_percent"] = region["percent_of_lesion"]
            row[f"{key}_region_percent"] = region["percent_of_region"]
    return row


def lesion_side(load: LesionLoad, share: float = 0.95) -> str:
    """``left``/``right`` when ≥ 95 % of the volume is on one side, ``bilateral`` otherwise,
    ``none`` without lesion."""
    if load.volume_ml == 0:
        return "none"
    if load.left_ml >= share * load.volume_ml:
        return "left"
    if load.right_ml >= share * load.volume_ml:
        return "right"
    return "bilateral"


def components_table(load: LesionLoad) -> pd.DataFrame:
    """One row per component: label, voxels, volume (mL), centroid (template mm), hemisphere."""
    return pd.DataFrame(
        [{"component": c.label, "voxels": c.voxels, "volume_ml": c.volume_ml,
          "centroid_x_mm": c.centroid_mm[0], "centroid_y_mm": c.centroid_mm[1],
          "centroid_z_mm": c.centroid_mm[2], "hemisphere": c.hemisphere}
         for c in load.components],
        columns=["component", "voxels", "volume_ml", "centroid_x_mm", "centroid_y_mm",
                 "centroid_z_mm", "hemisphere"])


#: Descriptions of the fixed summary columns (JSON sidecar of the TSV, BIDS tabular style).
SUMMARY_COLUMNS = {
    "volume_ml": ("Lesion volume in native space", "mL"),
    "volume_voxels": ("Lesion volume in native voxels", "voxels"),
    "n_components": ("Number of connected components (native space)", "count"),
    "largest_component_ml": ("Volume of the largest component (native space)", "mL"),
    "left_volume_ml": ("Native lesion volume left of the template midline (x < 0)", "mL"),
    "right_volume_ml": ("Native lesion volume right of the template midline (x > 0)", "mL"),
    "midline_volume_ml": ("Native lesion volume within 0.5 mm of the template midline", "mL"),
    "lesion_side": ("left/right when >= 95 % of the volume lies on one side, else bilateral",
                    None),
    "std_volume_ml": ("Lesion volume on the MNI152NLin2009aSym grid (after normalisation)",
                      "mL"),
    "std_n_components": ("Connected components on the template grid", "count"),
    "connectivity": ("Neighbourhood used for connected components (6, 18 or 26)", None),
}


def column_descriptions(row: dict) -> dict[str, dict[str, str]]:
    """BIDS-style sidecar for the summary TSV: ``{column: {Description, Units}}``."""
    described = {}
    for column in row:
        if column in SUMMARY_COLUMNS:
            text, units = SUMMARY_COLUMNS[column]
        elif column.endswith("_lesion_percent"):
            region = column[: -len("_lesion_percent")]
            text, units = f"Share of the lesion volume inside {region} (template space)", "%"
        elif column.endswith("_region_percent"):
            region = column[: -len("_region_percent")]
            text, units = f"Share of {region} that is lesioned (template space)", "%"
        else:
            text, units = column, None
        described[column] = {"Description": text, **({"Units": units} if units else {})}
    return described
