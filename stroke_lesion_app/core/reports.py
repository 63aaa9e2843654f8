"""Figures and HTML of the per-subject and group reports.

Per image, :func:`write_reportlet` draws the QC figures (PNG) into ``sub-<label>/figures/`` and an
HTML fragment beside them; after the run :func:`assemble_subject_report` joins a subject's
fragments into ``OUTPUT_DIR/sub-<label>.html`` (one self-contained page per subject, figures
referenced beside it, as in fMRIPrep).
"""

from __future__ import annotations

import datetime
import html
import re
from pathlib import Path
from typing import Iterable, Sequence

import nibabel as nib
import numpy as np
import pandas as pd

from stroke_lesion_app.core.fileio import atomic_path, write_text_atomic

#: Citations used by the methods text, keyed as in the workflows' ``__desc__`` ([@key]).
REFERENCES = {
    "mscsa": "Shang L, Sethares WA, Adluru A, et al. Stroke lesion segmentation using "
             "multi-stage cross-scale attention. arXiv:2501.15423 (2025).",
    "nnunet": "Isensee F, Jaeger PF, Kohl SAA, Petersen J, Maier-Hein KH. nnU-Net: a "
              "self-configuring method for deep learning-based biomedical image segmentation. "
              "Nature Methods 18:203-211 (2021).",
    "ants": "Avants BB, Epstein CL, Grossman M, Gee JC. Symmetric diffeomorphic image "
            "registration with cross-correlation. Medical Image Analysis 12:26-41 (2008); "
            "antspyx (ANTsPy).",
    "n4": "Tustison NJ, Avants BB, Cook PA, et al. N4ITK: improved N3 bias correction. "
          "IEEE Transactions on Medical Imaging 29:1310-1320 (2010).",
    "deepbet": "Fisch L, Zumdick S, Barkhau C, et al. deepbet: fast brain extraction of T1-weighted "
               "MRI using convolutional neural networks. Computers in Biology and Medicine "
               "179:108845 (2024).",
    "mni2009": "Fonov VS, Evans AC, McKinstry RC, Almli CR, Collins DL. Unbiased nonlinear "
               "average age-appropriate brain templates from birth to adulthood. NeuroImage "
               "47:S102 (2009).",
    "templateflow": "Ciric R, Thompson WHT, Lorenz R, et al. TemplateFlow: FAIR-sharing of "
                    "multi-scale, multi-species brain models. Nature Methods 19:1568-1571 "
                    "(2022).",
    "nipype": "Gorgolewski K, Burns CD, Madison C, et al. Nipype: a flexible, lightweight and "
              "extensible neuroimaging data processing framework in Python. Frontiers in "
              "Neuroinformatics 5:13 (2011).",
    "atlas2": "Liew SL, Lo BP, Donnelly MR, et al. A large, curated, open-source stroke "
              "neuroimaging dataset to improve lesion segmentation algorithms (ATLAS v2.0). "
              "Scientific Data 9:320 (2022).",
}

_CITATION = re.compile(r"\[@([\w-]+)(?:;\s*@([\w-]+))*\]")


def _figure(rows: int, columns: int):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.0 * rows),
                                facecolor="black", squeeze=False)
    for axis in axes.ravel():
        axis.set_axis_off()
    return figure, axes


def _slices(extent: np.ndarray, axis: int, count: int) -> list[int]:
    """``count`` slice indices spread over the non-zero extent of a mask along ``axis``."""
    other = tuple(i for i in range(3) if i != axis)
    present = np.flatnonzero(extent.any(axis=other))
    if present.size == 0:
        present = np.arange(extent.shape[axis])
    low, high = present[0], present[-1]
    margin = (high - low) * 0.08
    return sorted({int(round(v)) for v in np.linspace(low + margin, high - margin, count)})


def mosaic(background: nib.Nifti1Image, overlays: Sequence[tuple[nib.Nifti1Image, str]],
           out_file: Path | str, focus: nib.Nifti1Image | None = None, columns: int = 7,
           title: str = "") -> Path:
    """Sagittal, coronal and axial rows of ``background`` with overlay contours (PNG).

    Parameters
    ----------
    background : nibabel.Nifti1Image
        3D image, any orientation; drawn in RAS+, neurological convention (the subject's
        left on the picture's left).
    overlays : sequence of (image, colour)
        Masks drawn as contours at 0.5, on the background's grid.
    out_file : path
        PNG to write (atomically).
    focus : nibabel.Nifti1Image, optional
        Mask whose extent chooses the slices (default: the first overlay).
    columns : int
        Slices per row.
    """
    background = nib.as_closest_canonical(background)
    data = np.asanyarray(background.dataobj, dtype=np.float32)
    low, high = np.percentile(data[data > 0], [1, 99.5]) if (data > 0).any() else (0, 1)
    masks = [(_on_grid(image, background), colour) for image, colour in overlays]
    extent = (_on_grid(focus, background) if focus is not None
              else masks[0][0] if masks else data > 0)
    figure, axes = _figure(3, columns)
    zooms = background.header.get_zooms()[:3]
    for row, axis in enumerate((0, 1, 2)):
        for column, index in enumerate(_slices(extent, axis, columns)):
            take = [slice(None)] * 3
            take[axis] = index
            image = data[tuple(take)].T
            aspect = {0: zooms[2] / zooms[1], 1: zooms[2] / zooms[0], 2: zooms[1] / zooms[0]}[axis]
            axes[row, column].imshow(image, cmap="gray", vmin=low, vmax=high, origin="lower",
                                     aspect=aspect, interpolation="nearest")
            for mask, colour in masks:
                plane = mask[tuple(take)].T
                if plane.any():
                    axes[row, column].contour(plane.astype(np.float32), levels=[0.5],
                                              colors=[colour], linewidths=0.8)
    if title:
        figure.suptitle(title, color="white", fontsize=10)
    figure.tight_layout()
    out_file = Path(out_file)
    with atomic_path(out_file) as tmp:
        figure.savefig(tmp, dpi=80, facecolor="black", format="png")
    import matplotlib.pyplot as plt

    plt.close(figure)
    return out_file


def _on_grid(mask: nib.Nifti1Image, background: nib.Nifti1Image) -> np.ndarray:
    """Boolean mask (> 0.5) on the RAS+ background grid, resampled (nearest) when needed."""
    from nibabel.processing import resample_from_to

    mask = nib.as_closest_canonical(mask)
    if mask.shape[:3] != background.shape[:3] or not np.allclose(mask.affine, background.affine,
                                                                 atol=1e-3):
        mask = resample_from_to(mask, background, order=0)
    return np.asanyarray(mask.dataobj) > 0.5


def cite(text: str) -> tuple[str, list[str]]:
    """Replace ``[@key; @other]`` by numbered citations; return the text and the keys used."""
    keys: list[str] = []

    def number(match: re.Match) -> str:
        found = re.findall(r"@([\w-]+)", match.group(0))
        for key in found:
            if key not in keys:
                keys.append(key)
        return "[" + ", ".join(str(keys.index(key) + 1) for key in found) + "]"

    return _CITATION.sub(number, text), keys


def methods_html(paragraphs: Iterable[str]) -> str:
    """Methods boilerplate with a numbered reference list (HTML)."""
    text, keys = cite(" ".join(paragraph for paragraph in paragraphs if paragraph))
    references = "".join(f"<li>{html.escape(REFERENCES.get(key, key))}</li>" for key in keys)
    return (f"<p>{html.escape(text)}</p><ol class='references'>{references}</ol>"
            "<p class='note'>Processing used Nipype [workflow engine] "
            f"({html.escape(REFERENCES['nipype'])}).</p>")


def table_html(frame: pd.DataFrame, max_rows: int = 60) -> str:
    """A DataFrame as an HTML table (numbers rounded to 3 decimals)."""
    if frame.empty:
        return "<p><em>none</em></p>"
    shown = frame.head(max_rows).copy()
    for column in shown.select_dtypes("number"):
        shown[column] = shown[column].round(3)
    note = (f"<p class='note'>{len(frame) - max_rows} more rows in the TSV.</p>"
            if len(frame) > max_rows else "")
    return shown.to_html(index=False, border=0, classes="table", na_rep="n/a") + note


STYLE = """
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;color:#222}
h1{font-size:1.6em} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
.warning{background:#fff3cd;border:1px solid #e0a800;padding:.8em;border-radius:4px}
.table{border-collapse:collapse;font-size:.85em} .table td,.table th{padding:2px 8px;
border-bottom:1px solid #eee;text-align:right} img{max-width:100%} .note{color:#666;
font-size:.85em} dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em}
"""


def page(title: str, body: str) -> str:
    """A complete, self-contained HTML page."""
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>"
            f"{html.escape(title)}</title><style>{STYLE}</style></head><body>{body}"
            f"<p class='note'>Generated {datetime.date.today().isoformat()} by "
            "stroke-lesion-app.</p></body></html>\n")



def assemble_subject_report(output_dir: Path | str, subject: str, header: str) -> Path | None:
    """Join the reportlet fragments of one subject into ``OUTPUT_DIR/sub-<label>.html``.

    Fragments are ``sub-<label>/figures/*_report.html``, one per image (session/run), in name
    order. Returns the page's path, or ``None`` when the subject has no fragment.
    """
    output_dir = Path(output_dir)
    fragments = sorted((output_dir / f"sub-{subject}" / "figures").glob("*_report.html"))
    if not fragments:
        return None
    body = f"<h1>sub-{html.escape(subject)}</h1>{header}" + "".join(
        fragment.read_text() for fragment in fragments)
    return write_text_atomic(output_dir / f"sub-{subject}.html",
                             page(f"stroke-lesion-app: sub-{subject}", body))
