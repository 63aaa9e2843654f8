"""Group level: cohort table, lesion-frequency map and summary page, from OUTPUT_DIR only.

Every participant-level image that has a lesion-load table contributes one row to the cohort
TSV (``participant_id``, ``session_id``, ``run`` and every measure); images processed without
lesion measures, and subject folders without processed images, are listed with a ``status``
instead of failing the group step.
"""

from __future__ import annotations

import html
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from stroke_lesion_app.core import bids as bids_core
from stroke_lesion_app.core import reports
from stroke_lesion_app.core.bundle import DEMO_WARNING
from stroke_lesion_app.core.fileio import atomic_path, write_text_atomic

LOGGER = logging.getLogger("stroke_lesion_app.group")

_ENTITY_COLUMNS = (("sub", "participant_id"), ("ses", "session_id"), ("run", "run"))


def _identity(name: str) -> dict[str, str]:
    """``participant_id``/``session_id``/``run`` of a derivative file name."""
    parts = dict(part.split("-", 1) for part in name.split("_") if "-" in part)
    return {column: (f"{key}-{parts[key]}" if key != "run" else parts[key])
            for key, column in _ENTITY_COLUMNS if key in parts}


@dataclass
class Cohort:
    """Result of :func:`collect_cohort`.

    Attributes
    ----------
    table : pandas.DataFrame
        One row per processed image (sorted), measures as columns, plus ``status``.
    std_masks : list of Path
        Template-space lesion masks, one per image with lesion measures.
    """

    table: pd.DataFrame
    std_masks: list[Path]


def collect_cohort(output_dir: Path | str) -> Cohort:
    """Read every image's lesion-load table and template-space lesion mask in ``output_dir``."""
    output_dir = Path(output_dir)
    rows, masks = [], []
    for preproc in sorted(output_dir.glob("sub-*/**/anat/*_desc-preproc_T1w.nii.gz")):
        if "space-" in preproc.name:
            continue
        stem = preproc.name[: -len("_desc-preproc_T1w.nii.gz")]
        identity = _identity(stem)
        table = preproc.with_name(f"{stem}_label-L_desc-lesionload_stats.tsv")
        if table.is_file():
            measures = pd.read_csv(table, sep="\t").iloc[0].to_dict()
            rows.append({**identity, "status": "measured",
                         **_lesion_provenance(preproc.parent, stem), **measures})
            mask = _std_mask(preproc.parent, stem)
            if mask is not None:
                masks.append(mask)
        else:
            rows.append({**identity, "status": "no lesion mask"})
    processed = {row["participant_id"] for row in rows}
    for folder in sorted(output_dir.glob("sub-*")):
        if folder.is_dir() and folder.name not in processed:
            rows.append({"participant_id": folder.name, "status": "not processed (see its log)"})
    table = pd.DataFrame(rows)
    if not table.empty:
        leading = [column for _, column in _ENTITY_COLUMNS if column in table] + ["status"]
        table = table[leading + [c for c in table.columns if c not in leading]]
        table = table.sort_values(leading[:-1], na_position="first").reset_index(drop=True)
    return Cohort(table, masks)


def _lesion_provenance(folder: Path, stem: str) -> dict:
    """Where an image's measured mask came from: the model bundle (its mask's sidecar) or a
    manual mask."""
    sidecar = folder / f"{stem}_label-L_mask.json"
    if not sidecar.is_file():
        return {"lesion_source": "manual", "model": "n/a", "demo_model": False}
    meta = json.loads(sidecar.read_text())
    model = meta.get("Model", {})
    return {"lesion_source": "model",
            "model": f"{model.get('name', '?')} {model.get('version', '?')}",
            "demo_model": bool(meta.get("Demo", False))}


def _std_mask(folder: Path, stem: str) -> Path | None:
    """The template-space lesion mask of one image: the model's, else the manual one."""
    for desc in ("", "_desc-manual"):
        path = folder / f"{stem}_space-{bids_core.TEMPLATE_SPACE}_label-L{desc}_mask.nii.gz"
        if path.is_file():
            return path
    return None


def frequency_map(masks: list[Path]) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Count and frequency (count / number of masks, 0-1) of lesions per template voxel.

    Raises
    ------
    ValueError
        Masks on different grids (they must all be on the MNI152NLin2009aSym 1 mm grid).
    """
    if not masks:
        raise ValueError("no template-space lesion masks to combine")
    first = nib.load(str(masks[0]))
    count = np.zeros(first.shape[:3], np.int32)
    for path in masks:
        image = nib.load(str(path))
        if image.shape[:3] != first.shape[:3] or not np.allclose(image.affine, first.affine,
                                                                 atol=1e-3):
            raise ValueError(f"{path}: not on the grid of {masks[0]}; re-run the participant "
                             "level with this version")
        count += np.asanyarray(image.dataobj) > 0.5
    frequency = (count / len(masks)).astype(np.float32)
    return (nib.Nifti1Image(count.astype(np.int16), first.affine),
            nib.Nifti1Image(frequency, first.affine))


def _volume_histogram(table: pd.DataFrame, out_file: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 3.2))
    volumes = table.loc[table["status"] == "measured", "volume_ml"].astype(float)
    axis.hist(volumes, bins=min(30, max(5, len(volumes))), color="#c0392b")
    axis.set_xlabel("lesion volume (mL, native space)")
    axis.set_ylabel("images")
    figure.tight_layout()
    with atomic_path(out_file) as tmp:
        figure.savefig(tmp, dpi=90, format="png")
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
    figure, axis = plt.subplots(figsize=(6, 0.3 * len(involvement) + 1))
    axis.barh([c[: -len("_region_percent")] for c in involvement.index], involvement.values,
              color="#2874a6")
    axis.set_xlabel("mean % of the region lesioned")
    figure.tight_layout()
    with atomic_path(out_file) as tmp:
        figure.savefig(tmp, dpi=90, format="png")
    plt.close(figure)
    return out_file


def run_group(output_dir: Path | str, template_t1w: nib.Nifti1Image | None = None) -> dict:
    """Write the cohort TSV, the frequency/count maps and ``group/group.html``.

    Returns a dictionary with the written paths and counts.
    """
    output_dir = Path(output_dir)
    cohort = collect_cohort(output_dir)
    table_path = bids_core.group_path(output_dir, "cohort_table")
    table_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(table_path) as tmp:
        cohort.table.to_csv(tmp, sep="\t", index=False, na_rep="n/a")
    measured = int((cohort.table.get("status") == "measured").sum()) if not cohort.table.empty \
        else 0
    written = {"cohort_table": table_path, "measured": measured, "rows": len(cohort.table)}
    figures = []
    if cohort.std_masks:
        count, frequency = frequency_map(cohort.std_masks)
        for kind, image in (("count_map", count), ("frequency_map", frequency)):
            path = bids_core.group_path(output_dir, kind)
            with atomic_path(path) as tmp:
                image.to_filename(tmp)
            written[kind] = path
        background = template_t1w if template_t1w is not None else frequency
        frequency_png = reports.mosaic(
            background, [(nib.Nifti1Image((frequency.get_fdata() > 0).astype(np.uint8),
                                          frequency.affine), "#ffd000")],
            table_path.parent / "figures" / "desc-frequency_mosaic.png",
            title=f"Voxels lesioned in at least one of {len(cohort.std_masks)} images")
        figures.append(("Lesion frequency (template space)", frequency_png))
    if measured:
        figures.append(("Lesion volume distribution", _volume_histogram(
            cohort.table, table_path.parent / "figures" / "desc-volumes_histogram.png")))
        chart = _region_chart(cohort.table, table_path.parent / "figures" /
                              "desc-regions_barplot.png")
        if chart:
            figures.append(("Region involvement", chart))
    demo = bool(measured) and bool(cohort.table.get("demo_model", pd.Series(dtype=bool))
                                   .fillna(False).astype(bool).any())
    body = (f"<h1>Group report</h1><p>{measured} image(s) with lesion measures, "
            f"{len(cohort.table) - measured} without (listed below).</p>"
            + (f"<p class='warning'>{html.escape(DEMO_WARNING)}</p>" if demo else "")
            + "".join(f"<h2>{html.escape(title)}</h2><img src='figures/{path.name}' "
                      f"alt='{html.escape(title)}'>" for title, path in figures)
            + "<h2>Cohort table</h2>" + reports.table_html(
                cohort.table[[c for c in cohort.table.columns
                              if not c.endswith("_percent")]] if not cohort.table.empty
                else cohort.table)
            + f"<p class='note'>All measures: {html.escape(table_path.name)}</p>")
    written["report"] = write_text_atomic(
        bids_core.group_path(output_dir, "report"),
        reports.page("stroke-lesion-app: group report", body))
    LOGGER.info("Group level: %d row(s), %d with lesion measures → %s", len(cohort.table),
                measured, table_path)
    return written
