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


def _group_body(output_dir: Path, cohort: Cohort, measured: int, table_path: Path,
                figures: list[tuple[str, Path, str, bool]], maps: list[Path]) -> str:
    """The group page's HTML: counts, warning, figures, the cohort table (participants linked
    to their pages) and links to the files."""
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
    files = "".join(f"<li><a href='{html.escape(path.name)}'>{html.escape(path.name)}</a></li>"
                    for path in [table_path, *maps])
    return (f"<p>{measured} image(s) with lesion measures, {len(table) - measured} without "
            "(listed in the cohort table).</p>"
            + (f"<p class='warning'>{html.escape(DEMO_WARNING)}</p>" if demo else "")
            + "".join(f"<h2>{html.escape(title)}</h2>"
                      + reports.figure_html(f"figures/{path.name}", title, caption,
                                            convention=convention)
                      for title, path, caption, convention in figures)
            + "<h2 id='cohort'>Cohort table</h2>"
            + "<p class='note'>One row per image; participants link to their reports. "
            "Region percentages are in the TSV. Values rounded for display.</p>"
            + reports.table_html(shown, links={"participant_id": pages})
            + f"<h2>Files</h2><ul>{files}</ul>")


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
    figures, maps = [], []
    figure_dir = table_path.parent / "figures"
    if cohort.std_masks:
        count, frequency = frequency_map(cohort.std_masks)
        for kind, image in (("count_map", count), ("frequency_map", frequency)):
            path = bids_core.group_path(output_dir, kind)
            with atomic_path(path) as tmp:
                image.to_filename(tmp)
            written[kind] = path
            maps.append(path)
        n_images = len(cohort.std_masks)
        figures.append((
            "Lesion frequency (template space)",
            _frequency_figure(frequency, n_images, template_t1w,
                              figure_dir / "desc-frequency_figure.png"),
            (f"Share of the N = {n_images} images with lesion measures that have a lesion "
             "at each voxel of MNI152NLin2009aSym (heat, 0-100 %; voxels lesioned in no image "
             "are not coloured)."), True))
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
    body = _group_body(output_dir, cohort, measured, table_path, figures, maps)
    nav = "<a href='#cohort'>Cohort table</a>"
    written["report"] = write_text_atomic(
        bids_core.group_path(output_dir, "report"),
        reports.page("stroke-lesion-app: group report", "Group report", body, nav=nav))
    LOGGER.info("Group level: %d row(s), %d with lesion measures → %s", len(cohort.table),
                measured, table_path)
    return written
