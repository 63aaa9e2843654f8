"""Figures and HTML of the per-subject and group reports.

Per image, the ``ImageReport`` interface (:mod:`stroke_lesion_app.interfaces.reports`) draws the
QC figures (PNG) into ``sub-<label>/figures/`` with a small stand-alone page of the image's
section beside them (its links relative to that folder, so it opens on its own); after the run
:func:`assemble_subject_report` joins a subject's sections into ``OUTPUT_DIR/sub-<label>.html``,
re-rooting their links at ``OUTPUT_DIR`` (one page per subject, figures beside it, as in
fMRIPrep).

Display convention
------------------
Every slice is drawn in the **radiological convention** (:data:`DISPLAY_CONVENTION`): the
patient's right on the left of axial and coronal images, anterior on the left of sagittal images
(seen from the patient's left), superior/anterior up. Images are brought to RAS+ first
(:func:`nibabel.as_closest_canonical`), so the drawing follows the header, not the voxel order,
and letters (R/L, A/P, S/I) on every panel mark the sides. Slice positions are world
coordinates in mm: scanner mm for native-space figures, MNI mm for template-space ones.
"""

from __future__ import annotations

import datetime
import html
import posixpath
import re
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from stroke_lesion_app.core.components import label_components
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
    "nachev2008": "Nachev P, Coulthard E, Jäger HR, Kennard C, Husain M. Enantiomorphic "
                  "normalization of focally lesioned brains. NeuroImage 39:1215-1226 (2008).",
    "brett2001": "Brett M, Leff AP, Rorden C, Ashburner J. Spatial normalization of brain "
                 "images with focal lesions using cost function masking. NeuroImage 14:486-500 "
                 "(2001).",
    "atlas2": "Liew SL, Lo BP, Donnelly MR, et al. A large, curated, open-source stroke "
              "neuroimaging dataset to improve lesion segmentation algorithms (ATLAS v2.0). "
              "Scientific Data 9:320 (2022).",
}

_CITATION = re.compile(r"\[@([\w-]+)(?:;\s*@([\w-]+))*\]")

#: The display convention of every figure, stated under every figure and on every page.
DISPLAY_CONVENTION = ("Radiological convention: the patient's right (R) is on the left of axial "
                      "and coronal images; sagittal images show anterior (A) on the left. Letters "
                      "on every panel mark the sides.")

#: What the models are for, stated at the top of every subject page and of the group page.
SCOPE_STATEMENT = ("Scope: the lesion models are for chronic stroke lesions on T1-weighted MRI. "
                   "They are not for acute stroke, not for DWI or FLAIR images and not for "
                   "tumours. Research software: not for clinical use.")

#: Views of a RAS+ volume: the array axis a view cuts along, its name and coordinate.
VIEWS = {"sagittal": 0, "coronal": 1, "axial": 2}
_COORDINATE = {0: "x", 1: "y", 2: "z"}
#: Array axes shown horizontally and vertically in each view (before the display flips).
_PLANE_AXES = {0: (1, 2), 1: (0, 2), 2: (0, 1)}
#: Letters at the (left, right, top, bottom) edges of a panel, radiological convention.
MARKERS = {0: ("A", "P", "S", "I"), 1: ("R", "L", "S", "I"), 2: ("R", "L", "A", "P")}

_FIGURE_WIDTH = 12.0      # inches; saved at _DPI: 1200 px wide, shown at most 1:1 in the page
_DPI = 100
_LESION_COLOUR = "#ffd000"
_OUTLINE_ON_HEAT = "#00e5ff"
_HEAT_CMAP = "autumn"     # red (low) to yellow (high), readable over a grey T1w
_HEAT_FLOOR = 0.05


def display_plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """One slice of a RAS+ ``volume`` as drawn: rows top→bottom, columns left→right.

    Radiological convention: the left column of an axial or coronal plane is the patient's
    right (largest x), the left column of a sagittal plane is anterior (largest y); the top row
    is superior (coronal, sagittal) or anterior (axial). :data:`MARKERS` names the four edges.

    >>> v = np.zeros((3, 4, 5)); v[2, 3, 0] = 1   # most right, most anterior, most inferior
    >>> p = display_plane(v, 2, 0); p.shape, np.argwhere(p).tolist()
    ((4, 3), [[0, 0]])
    >>> MARKERS[2][0], MARKERS[2][2]                # ... drawn top left: right and anterior
    ('R', 'A')
    """
    take: list = [slice(None)] * 3
    take[axis] = index
    return np.asarray(volume[tuple(take)]).T[::-1, ::-1]


@dataclass
class _Heat:
    """A colour overlay: values below ``floor`` are transparent."""

    data: np.ndarray
    vmin: float
    vmax: float
    label: str
    floor: float = _HEAT_FLOOR
    scale: float = 1.0            # shown values = data * scale (e.g. 100 for percentages)
    threshold: float | None = None


class _Scene:
    """A RAS+ background with contour and heat overlays on its grid, drawn tile by tile."""

    def __init__(self, background: nib.Nifti1Image,
                 contours: Sequence[tuple[np.ndarray, str]] = (),
                 heat: _Heat | None = None, linewidth: float = 1.0):
        self.image = background
        self.data = np.asanyarray(background.dataobj, dtype=np.float32)
        if self.data.ndim == 4:
            self.data = self.data[..., 0]
        inside = self.data[self.data > 0]
        self.low, self.high = (np.percentile(inside, [1, 99.5]) if inside.size
                               else (0.0, 1.0))
        self.zooms = np.asarray(background.header.get_zooms()[:3], dtype=float)
        self.contours = list(contours)
        self.heat = heat
        self.linewidth = linewidth

    def coordinate(self, axis: int, index: int) -> float:
        """World coordinate (mm) of slice ``index`` along ``axis``, at the volume's centre."""
        centre = (np.asarray(self.data.shape, dtype=float) - 1) / 2
        centre[axis] = index
        return float(nib.affines.apply_affine(self.image.affine, centre)[axis])

    def aspect(self, axis: int, box: tuple[slice, ...] | None = None) -> float:
        """Height / width (in mm) of a tile of ``axis`` within ``box``."""
        horizontal, vertical = _PLANE_AXES[axis]
        box = box or tuple(slice(0, n) for n in self.data.shape)
        size = [len(range(*box[i].indices(self.data.shape[i]))) for i in range(3)]
        return (size[vertical] * self.zooms[vertical]) / max(
            size[horizontal] * self.zooms[horizontal], 1e-6)

    def draw(self, axis_obj, axis: int, index: int, box: tuple[slice, ...] | None = None,
             overlays: bool = True, markers: bool = True, label: str | None = None) -> None:
        """Draw one tile (slice ``index`` across ``axis``, cropped to ``box``) on ``axis_obj``."""
        box = box or tuple(slice(0, n) for n in self.data.shape)
        local = index - box[axis].start
        horizontal, vertical = _PLANE_AXES[axis]
        aspect = self.zooms[vertical] / self.zooms[horizontal]

        def plane(volume: np.ndarray) -> np.ndarray:
            return display_plane(volume[box], axis, local)

        axis_obj.imshow(plane(self.data), cmap="gray", vmin=self.low, vmax=self.high,
                        aspect=aspect, interpolation="nearest", origin="upper")
        if overlays and self.heat is not None:
            heat = plane(self.heat.data)
            shown = np.ma.masked_less(heat, self.heat.floor)
            if shown.count():
                axis_obj.imshow(shown * self.heat.scale, cmap=_HEAT_CMAP, vmin=self.heat.vmin,
                                vmax=self.heat.vmax, aspect=aspect, alpha=0.8,
                                interpolation="nearest", origin="upper")
        if overlays:
            for mask, colour in self.contours:
                outline = plane(mask)
                if outline.any():
                    axis_obj.contour(outline.astype(np.float32), levels=[0.5], colors=[colour],
                                     linewidths=self.linewidth)  # Z[i, j] at (j, i), as imshow
        if markers:
            _mark_sides(axis_obj, axis)
        if label is None:
            label = f"{_COORDINATE[axis]} = {self.coordinate(axis, index):.0f} mm"
        axis_obj.set_title(label, color="white", fontsize=9, pad=2)
        axis_obj.set_axis_off()


def _mark_sides(axis_obj, axis: int) -> None:
    import matplotlib.patheffects as effects

    outline = [effects.withStroke(linewidth=2.5, foreground="black")]
    for (x, y, ha, va), letter in zip(((0.015, 0.5, "left", "center"),
                                       (0.985, 0.5, "right", "center"),
                                       (0.5, 0.985, "center", "top"),
                                       (0.5, 0.015, "center", "bottom")), MARKERS[axis]):
        axis_obj.text(x, y, letter, transform=axis_obj.transAxes, ha=ha, va=va, color="white",
                      fontsize=11, fontweight="bold", path_effects=outline)


@dataclass
class _Row:
    """One row of tiles: ``(axis, index, box)`` each, drawn with or without overlays."""

    tiles: list[tuple[int, int, tuple[slice, ...] | None]]
    columns: int
    overlays: bool = True
    heading: str = ""


def _render(scene: _Scene, rows: Sequence[_Row], out_file: Path | str, title: str,
            footer: str = DISPLAY_CONVENTION) -> Path:
    """Lay rows of tiles out on a 1200-px wide black figure, with a colour bar when the scene
    has a heat overlay, and write it as PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = textwrap.wrap(title, 115) or [""]
    heading_in, tile_title_in, footer_in = 0.28, 0.24, 0.4
    title_in = 0.2 + 0.24 * len(lines)
    colorbar_in = 0.95 if scene.heat is not None else 0.0
    heights = []
    for row in rows:
        width = _FIGURE_WIDTH / row.columns
        tallest = max((scene.aspect(axis, box) for axis, _, box in row.tiles), default=1.0)
        heights.append((heading_in if row.heading else 0.0) + tile_title_in
                       + width * min(tallest, 1.6))
    total = title_in + sum(heights) + colorbar_in + footer_in
    figure = plt.figure(figsize=(_FIGURE_WIDTH, total), facecolor="black")
    top = total - title_in
    figure.text(0.5, 1 - 0.1 / total, "\n".join(lines), color="white", fontsize=12,
                ha="center", va="top")
    for row, height in zip(rows, heights):
        if row.heading:
            figure.text(0.01, (top - 0.05) / total, row.heading, color="#dddddd", fontsize=10,
                        ha="left", va="top", style="italic")
            top -= heading_in
        width = _FIGURE_WIDTH / row.columns
        tile_height = height - tile_title_in - (heading_in if row.heading else 0.0)
        for column, (axis, index, box) in enumerate(row.tiles):
            axis_obj = figure.add_axes(
                [(column * width + 0.04) / _FIGURE_WIDTH, (top - tile_title_in - tile_height) /
                 total, (width - 0.08) / _FIGURE_WIDTH, tile_height / total])
            axis_obj.set_facecolor("black")
            scene.draw(axis_obj, axis, index, box, overlays=row.overlays)
        top -= height - (heading_in if row.heading else 0.0)
    if scene.heat is not None:
        _colorbar(figure, scene.heat, (footer_in + 0.5) / total, 0.25 / total)
    figure.text(0.5, 0.12 / total, footer, color="#cccccc", fontsize=9, ha="center",
                va="bottom")
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_file) as tmp:
        figure.savefig(tmp, dpi=_DPI, facecolor="black", format="png")
    plt.close(figure)
    return out_file


def _colorbar(figure, heat: _Heat, bottom: float, height: float) -> None:
    import matplotlib as mpl

    axis_obj = figure.add_axes([0.3, bottom, 0.4, height])
    norm = mpl.colors.Normalize(vmin=heat.vmin, vmax=heat.vmax)
    bar = figure.colorbar(mpl.cm.ScalarMappable(norm=norm, cmap=_HEAT_CMAP), cax=axis_obj,
                          orientation="horizontal")
    bar.set_label(heat.label, color="white", fontsize=9)
    bar.ax.tick_params(colors="white", labelsize=8)
    bar.outline.set_edgecolor("white")
    if heat.threshold is not None:
        value = heat.threshold * heat.scale
        axis_obj.axvline(value, color=_OUTLINE_ON_HEAT, linewidth=2)
        axis_obj.text(value, 1.15, f"threshold {value:g}",
                      transform=axis_obj.get_xaxis_transform(), color=_OUTLINE_ON_HEAT,
                      fontsize=8, ha="center", va="bottom")


def _slices(extent: np.ndarray, axis: int, count: int, min_span: int = 0) -> list[int]:
    """``count`` slice indices spread over the non-zero extent of a mask along ``axis``,
    widened to at least ``min_span`` slices (centred, within the volume)."""
    other = tuple(i for i in range(3) if i != axis)
    present = np.flatnonzero(extent.any(axis=other))
    if present.size == 0:
        present = np.arange(extent.shape[axis])
    low, high = float(present[0]), float(present[-1])
    if high - low < min_span:
        middle = (low + high) / 2
        low = max(0.0, middle - min_span / 2)
        high = min(extent.shape[axis] - 1.0, middle + min_span / 2)
    margin = (high - low) * 0.08
    return sorted({round(float(v)) for v in np.linspace(low + margin, high - margin, count)})


def _canonical(image: nib.Nifti1Image) -> nib.Nifti1Image:
    image = nib.as_closest_canonical(image)
    if len(image.shape) == 4 and image.shape[3] == 1:
        image = image.slicer[..., 0]
    return image


def _on_grid(image: nib.Nifti1Image, background: nib.Nifti1Image, order: int = 0) -> np.ndarray:
    """``image`` on the RAS+ background grid (float32), resampled when the grids differ
    (``order`` 0: nearest, for masks; 1: linear, for probabilities)."""
    from nibabel.processing import resample_from_to

    image = _canonical(image)
    if image.shape[:3] != background.shape[:3] or not np.allclose(image.affine,
                                                                  background.affine, atol=1e-3):
        image = resample_from_to(image, (background.shape[:3], background.affine), order=order)
    return np.nan_to_num(np.asanyarray(image.dataobj, dtype=np.float32))


def mosaic(background: nib.Nifti1Image, overlays: Sequence[tuple[nib.Nifti1Image, str]],
           out_file: Path | str, focus: nib.Nifti1Image | None = None, columns: int = 6,
           title: str = "", views: Sequence[str] = ("sagittal", "coronal", "axial")) -> Path:
    """Rows of slices (one row per view) of ``background`` with overlay contours (PNG).

    Parameters
    ----------
    background : nibabel.Nifti1Image
        3D image, any orientation; drawn in RAS+, radiological convention
        (:data:`DISPLAY_CONVENTION`), side letters on every panel, slice positions in mm.
    overlays : sequence of (image, colour)
        Masks drawn as contours at 0.5, resampled (nearest) to the background's grid.
    out_file : path
        PNG to write (atomically), 1200 px wide.
    focus : nibabel.Nifti1Image, optional
        Mask whose extent chooses the slices (default: the first overlay).
    columns : int
        Slices per row.
    title : str
        Printed above the tiles.
    views : sequence of {"sagittal", "coronal", "axial"}
        One row per view, in this order.
    """
    background = _canonical(background)
    masks = [(_on_grid(image, background) > 0.5, colour) for image, colour in overlays]
    scene = _Scene(background, masks, linewidth=0.9)
    extent = (_on_grid(focus, background) > 0.5 if focus is not None
              else masks[0][0] if masks else scene.data > 0)
    rows = [_Row([(VIEWS[view], index, None) for index in _slices(extent, VIEWS[view], columns)],
                 columns) for view in views]
    return _render(scene, rows, out_file, title)


def _largest_component(mask: np.ndarray) -> np.ndarray | None:
    """Boolean array of the largest 26-connected component of ``mask`` (None when empty)."""
    if not mask.any():
        return None
    labels, _ = label_components(mask, 26)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == int(np.argmax(sizes)) + 1


def _zoom_box(region: np.ndarray, zooms: np.ndarray, min_half_mm: float = 20.0,
              max_half_mm: float = 90.0) -> tuple[tuple[int, int, int], tuple[slice, ...]]:
    """Centre voxel of ``region`` and a cube (in mm) around it that holds it with a margin."""
    points = np.argwhere(region)
    centre = tuple(round(float(v)) for v in points.mean(axis=0))
    span_mm = (points.max(axis=0) - points.min(axis=0) + 1) * zooms
    half_mm = float(np.clip(span_mm.max() / 2 * 1.6 + 8, min_half_mm, max_half_mm))
    box = []
    for axis in range(3):
        half = int(np.ceil(half_mm / zooms[axis]))
        box.append(slice(max(0, centre[axis] - half),
                         min(region.shape[axis], centre[axis] + half + 1)))
    return centre, tuple(box)


def _world(image: nib.Nifti1Image, voxel: Sequence[int]) -> str:
    x, y, z = nib.affines.apply_affine(image.affine, voxel)
    return f"x = {x:.0f}, y = {y:.0f}, z = {z:.0f} mm"


def lesion_figure(background: nib.Nifti1Image, lesion: nib.Nifti1Image, out_file: Path | str,
                  space: str = "scanner", overview: int = 10) -> Path:
    """Lesion outline over the T1w: a zoom on the largest component, then an axial overview.

    The first two rows are sagittal, coronal and axial slices through the centre of the largest
    connected component (26-connectivity), cropped to a cube that holds it with a margin (at
    least 40 mm wide: a 1 mL lesion, about 12 mm across, spans about 120 px), without and with
    the outline; below, ``overview`` axial slices over the lesion's extent (at least 40 mm).
    Without lesion voxels, only the overview (over the brain) is drawn.

    Parameters
    ----------
    background, lesion : nibabel.Nifti1Image
        T1w and lesion mask (> 0.5); the mask is resampled (nearest) to the T1w grid if needed.
    out_file : path
        PNG, 1200 px wide.
    space : str
        Name of the world coordinates in the title (``scanner`` or ``MNI``).
    overview : int
        Number of axial overview slices (two rows).
    """
    background = _canonical(background)
    mask = _on_grid(lesion, background) > 0.5
    scene = _Scene(background, [(mask, _LESION_COLOUR)], linewidth=1.2)
    rows, title = _zoom_rows(scene, mask, "T1w", "T1w with the lesion outline (yellow)")
    volume_ml = float(mask.sum() * np.prod(scene.zooms) / 1000)
    title = (f"Lesion outline (yellow): {volume_ml:.2f} mL in {_count(mask)}. " + title
             if mask.any() else "No lesion voxels in this mask: axial overview of the T1w")
    rows += _overview_rows(scene, mask, overview)
    return _render(scene, rows, out_file, title.replace("{space}", space))


def probability_figure(background: nib.Nifti1Image, probseg: nib.Nifti1Image,
                       out_file: Path | str, lesion: nib.Nifti1Image | None = None,
                       threshold: float | None = None, space: str = "scanner",
                       overview: int = 5) -> Path:
    """Lesion probability (0-1) as a heat map over the T1w, with the lesion outline.

    Probabilities below 0.05 are not drawn; the colour bar marks ``threshold`` when given. The
    zoom row is centred on the largest component of ``lesion`` (else on the most probable
    voxel), followed by ``overview`` axial slices.
    """
    background = _canonical(background)
    probability = _on_grid(probseg, background, order=1)
    mask = (_on_grid(lesion, background) > 0.5 if lesion is not None
            else np.zeros(background.shape[:3], bool))
    heat = _Heat(probability, 0.0, 1.0, "lesion probability (ensemble mean)", threshold=threshold)
    scene = _Scene(background, [(mask, _OUTLINE_ON_HEAT)], heat=heat, linewidth=1.0)
    focus = mask if mask.any() else (probability >= max(_HEAT_FLOOR, probability.max() * 0.999)
                                     if probability.max() >= _HEAT_FLOOR else mask)
    rows, title = _zoom_rows(scene, focus, "", "probability with the lesion mask outline (cyan)",
                             with_plain=False)
    rows += _overview_rows(scene, focus | (probability >= 0.5), overview, rows_of=1)
    above = int((probability >= _HEAT_FLOOR).sum())
    title = ("Lesion probability (heat, shown from 0.05) with the lesion mask outline (cyan). "
             + (title if focus.any() else f"No voxel reaches 0.05 ({above} voxels).")
             ).replace("{space}", space)
    return _render(scene, rows, out_file, title)


def _count(mask: np.ndarray) -> str:
    count = label_components(mask, 26)[1]
    return f"{count} component" + ("s" if count != 1 else "")


def _zoom_rows(scene: _Scene, focus: np.ndarray, plain: str, outlined: str,
               with_plain: bool = True) -> tuple[list[_Row], str]:
    largest = _largest_component(focus)
    if largest is None:
        return [], ""
    centre, box = _zoom_box(largest, scene.zooms)
    width = max(len(range(*box[i].indices(focus.shape[i]))) * scene.zooms[i] for i in range(3))
    tiles = [(axis, centre[axis], box) for axis in (0, 1, 2)]
    rows = []
    if with_plain:
        rows.append(_Row(tiles, 3, overlays=False, heading=f"Zoom: {plain}"))
    rows.append(_Row(tiles, 3, heading=f"Zoom: {outlined}" if outlined else ""))
    title = (f"Zoom ({width:.0f} mm field of view) centred on the largest component at "
             f"{_world(scene.image, centre)} ({{space}} coordinates).")
    return rows, title


def _overview_rows(scene: _Scene, focus: np.ndarray, count: int, rows_of: int = 2) -> list[_Row]:
    extent = focus if focus.any() else scene.data > scene.low
    span = int(np.ceil(40 / scene.zooms[2]))
    indices = _slices(extent, 2, count, min_span=span)
    per_row = int(np.ceil(count / rows_of))
    return [_Row([(2, index, None) for index in indices[start:start + per_row]], per_row,
                 heading="Axial overview" if start == 0 else "")
            for start in range(0, len(indices), per_row)]


def heat_mosaic(background: nib.Nifti1Image, heat: nib.Nifti1Image, out_file: Path | str, *,
                label: str, title: str, scale: float = 100.0, vmax: float = 100.0,
                columns: int = 6, rows: int = 2) -> Path:
    """A map (e.g. the group lesion frequency) as a heat overlay on axial slices of
    ``background``, with a colour bar labelled ``label`` (values × ``scale``, 0 to ``vmax``)."""
    background = _canonical(background)
    values = _on_grid(heat, background, order=0)
    scene = _Scene(background, heat=_Heat(values, 0.0, vmax, label, floor=1e-6, scale=scale))
    extent = values > 0 if (values > 0).any() else scene.data > 0
    indices = _slices(extent, 2, columns * rows)
    layout = [_Row([(2, index, None) for index in indices[start:start + columns]], columns)
              for start in range(0, len(indices), columns)]
    return _render(scene, layout, out_file, title)


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


# --------------------------------------------------------------------------------------------
# Tables: labels with units and fixed rounding (presentation only; the TSVs keep every digit)
# --------------------------------------------------------------------------------------------
#: Display label (with units) and decimals of the lesion-load and cohort columns.
COLUMN_LABELS: dict[str, tuple[str, int | None]] = {
    "participant_id": ("Participant", None),
    "session_id": ("Session", None),
    "run": ("Run", 0),
    "status": ("Status", None),
    "lesion_source": ("Lesion source", None),
    "model": ("Model", None),
    "demo_model": ("Demo model", None),
    "volume_ml": ("Volume (mL)", 2),
    "volume_voxels": ("Volume (voxels)", 0),
    "n_components": ("Components", 0),
    "largest_component_ml": ("Largest component (mL)", 2),
    "left_volume_ml": ("Left hemisphere (mL)", 2),
    "right_volume_ml": ("Right hemisphere (mL)", 2),
    "midline_volume_ml": ("On the midline, ±0.5 mm (mL)", 2),
    "lesion_side": ("Side", None),
    "std_volume_ml": ("Volume in template space (mL)", 2),
    "std_n_components": ("Components in template space", 0),
    "connectivity": ("Connectivity (neighbours)", 0),
    "component": ("Component", 0),
    "voxels": ("Voxels", 0),
    "centroid_x_mm": ("Centroid x (MNI mm)", 1),
    "centroid_y_mm": ("Centroid y (MNI mm)", 1),
    "centroid_z_mm": ("Centroid z (MNI mm)", 1),
    "hemisphere": ("Hemisphere", None),
}


def region_label(prefix: str) -> str:
    """``tissue_WM`` → ``Tissue: WM``; ``atlas-AAL_Precentral_L`` → ``Atlas AAL: Precentral_L``.

    >>> region_label("tissue_WM"), region_label("atlas-Hemi_Left")
    ('Tissue: WM', 'Atlas Hemi: Left')
    """
    source, _, region = prefix.partition("_")
    source = source.replace("atlas-", "atlas ", 1)
    return f"{source[:1].upper()}{source[1:]}: {region}" if region else prefix


def column_label(name: str) -> tuple[str, int | None]:
    """Display label (with units) and number of decimals of a table column.

    Volumes in mL get 2 decimals, percentages 1, millimetres 1; unknown columns keep their
    name (numbers: 2 decimals).

    >>> column_label("volume_ml"), column_label("tissue_WM_lesion_percent")
    (('Volume (mL)', 2), ('Tissue: WM, % of the lesion', 1))
    """
    if name in COLUMN_LABELS:
        return COLUMN_LABELS[name]
    if name.endswith("_lesion_percent"):
        return f"{region_label(name[: -len('_lesion_percent')])}, % of the lesion", 1
    if name.endswith("_region_percent"):
        return f"{region_label(name[: -len('_region_percent')])}, % of the region lesioned", 1
    for ending, unit, decimals in (("_ml", "mL", 2), ("_percent", "%", 1), ("_mm", "mm", 1)):
        if name.endswith(ending):
            return f"{name[: -len(ending)].replace('_', ' ')} ({unit})", decimals
    return name, 2


def format_value(value, decimals: int | None = 2) -> str:
    """A cell as text: ``n/a`` for missing, yes/no for booleans, numbers at ``decimals``.

    >>> format_value(0.384123, 2), format_value(12.0, 0), format_value(float("nan"))
    ('0.38', '12', 'n/a')
    >>> format_value(True), format_value("left")
    ('yes', 'left')
    """
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, float, np.integer, np.floating)) and decimals is not None:
        return f"{float(value):.{decimals}f}"
    return str(value)


def _is_number(value) -> bool:
    return (isinstance(value, (int, float, np.integer, np.floating))
            and not isinstance(value, (bool, np.bool_)))


def table_html(frame: pd.DataFrame, max_rows: int = 60,
               links: dict[str, dict[str, str]] | None = None) -> str:
    """A DataFrame as an HTML table with labelled columns (units) and rounded numbers, inside a
    box that scrolls sideways (``.table-wrap``) so that a wide table never widens the page.

    ``links`` maps a column to ``{cell text: href}`` (e.g. participants to their pages). Each
    header keeps the TSV column name as its tooltip.
    """
    if frame.empty:
        return "<p><em>none</em></p>"
    links = links or {}
    shown = frame.head(max_rows)
    labels = {column: column_label(str(column)) for column in shown.columns}
    head = "".join(f"<th scope='col' title='TSV column: {html.escape(str(column))}'>"
                   f"{html.escape(labels[column][0])}</th>" for column in shown.columns)
    body = []
    for _, row in shown.iterrows():
        cells = []
        for column in shown.columns:
            value = row[column]
            text = html.escape(format_value(value, labels[column][1]))
            href = links.get(column, {}).get(str(value))
            if href:
                text = f"<a href='{html.escape(href)}'>{text}</a>"
            css = " class='num'" if _is_number(value) else ""
            cells.append(f"<td{css}>{text}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    note = (f"<p class='note'>{len(frame) - max_rows} more rows in the TSV.</p>"
            if len(frame) > max_rows else "")
    return (f"<div class='table-wrap'><table class='table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>{note}")


def summary_table_html(row: dict) -> str:
    """The one-row lesion-load summary, transposed: measure (with units), value, TSV column.
    Region overlaps (``*_lesion_percent``/``*_region_percent``) are left to
    :func:`regions_table_html`."""
    rows = []
    for column, value in row.items():
        if str(column).endswith("_percent"):
            continue
        label, decimals = column_label(str(column))
        css = " class='num'" if _is_number(value) else ""
        rows.append(f"<tr><th scope='row'>{html.escape(label)}</th>"
                    f"<td{css}>{html.escape(format_value(value, decimals))}</td>"
                    f"<td><code>{html.escape(str(column))}</code></td></tr>")
    return ("<div class='table-wrap'><table class='table summary'><thead><tr>"
            "<th scope='col'>Measure</th><th scope='col'>Value</th><th scope='col'>TSV column"
            f"</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>")


def regions_table_html(row: dict) -> str:
    """Tissue and atlas overlap of one lesion: region, % of the lesion in it, % of it lesioned
    (1 decimal). Empty string when the row has no region columns."""
    regions: dict[str, dict[str, float]] = {}
    for column, value in row.items():
        for ending, key in (("_lesion_percent", "lesion"), ("_region_percent", "region")):
            if str(column).endswith(ending):
                regions.setdefault(str(column)[: -len(ending)], {})[key] = value
    if not regions:
        return ""
    body = "".join(
        f"<tr><th scope='row'>{html.escape(region_label(prefix))}</th>"
        f"<td class='num'>{format_value(values.get('lesion'), 1)}</td>"
        f"<td class='num'>{format_value(values.get('region'), 1)}</td></tr>"
        for prefix, values in regions.items())
    return ("<div class='table-wrap'><table class='table'><thead><tr><th scope='col'>Region"
            "</th><th scope='col'>% of the lesion in the region</th><th scope='col'>% of the "
            f"region lesioned</th></tr></thead><tbody>{body}</tbody></table></div>"
            "<p class='note'>Template space (MNI152NLin2009aSym).</p>")


# --------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------
STYLE = """
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;max-width:1240px;margin:0 auto;padding:1em;color:#222;
line-height:1.45;overflow-wrap:break-word}
h1{font-size:1.6em;margin:.3em 0} h2{border-bottom:1px solid #ccc;padding-bottom:.2em;
margin-top:1.6em} h3{margin-top:1.4em}
nav{font-size:.9em;display:flex;flex-wrap:wrap;gap:.3em 1.2em;padding:.4em 0;
border-bottom:1px solid #ddd}
.scope{background:#e8f1fb;border:1px solid #5b8fc7;padding:.6em .8em;border-radius:4px}
.warning{background:#fff3cd;border:1px solid #e0a800;padding:.8em;border-radius:4px}
.table-wrap{overflow-x:auto;max-width:100%;margin:.4em 0}
.table{border-collapse:collapse;font-size:.85em}
.table td,.table th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;
vertical-align:bottom}
.table thead th{background:#f4f4f4;white-space:nowrap}
.table td{white-space:nowrap} .table td.num{text-align:right;font-variant-numeric:tabular-nums}
.table tbody th{font-weight:normal;min-width:9em}
.table tr>:first-child{position:sticky;left:0;background:#fff}
.table thead tr>:first-child{background:#f4f4f4}
figure{margin:1em 0} figure img{display:block;max-width:100%;height:auto;background:#000}
figcaption{font-size:.85em;color:#444;margin-top:.3em}
img{max-width:100%;height:auto} .note{color:#666;font-size:.85em}
dl{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.2em 1em}
dd{margin:0;overflow-wrap:anywhere} code{overflow-wrap:anywhere}
@media (max-width:600px){body{padding:.6em} dl{grid-template-columns:minmax(0,1fr)}
dt{font-weight:600} dd{margin-bottom:.3em}}
"""


def page(title: str, heading: str, body: str, *, nav: str = "") -> str:
    """A complete, self-contained HTML page (viewport set for phones) with the scope statement
    (:data:`SCOPE_STATEMENT`) under its heading."""
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
            + (f"<nav>{nav}</nav>" if nav else "")
            + f"<h1>{html.escape(heading)}</h1>"
            f"<p class='scope'>{html.escape(SCOPE_STATEMENT)}</p>{body}"
            f"<p class='note'>Generated {datetime.date.today().isoformat()} by "
            "stroke-lesion-app.</p></body></html>\n")


def figure_html(src: str, alt: str, caption: str, convention: bool = True) -> str:
    """A figure that opens at full size when clicked, captioned (with the display convention
    for slices)."""
    src = html.escape(src)
    caption = html.escape(caption) + (f" {html.escape(DISPLAY_CONVENTION)}" if convention else "")
    return (f"<figure><a href='{src}'><img src='{src}' alt='{html.escape(alt)}'></a>"
            f"<figcaption>{caption} Click the figure to open it at full size.</figcaption>"
            "</figure>")


_LINK = re.compile(r"""\b(src|href)=(['"])([^'"]*)\2""")


def rebase_links(text: str, prefix: str) -> str:
    """Re-root the relative ``src``/``href`` links of ``text`` under ``prefix``.

    >>> rebase_links("<img src='a.png'><a href='../anat/t.tsv'>t</a>", "sub-01/figures")
    "<img src='sub-01/figures/a.png'><a href='sub-01/anat/t.tsv'>t</a>"
    >>> rebase_links("<a href='#x'><a href='https://a.org/b'>", "sub-01/figures")
    "<a href='#x'><a href='https://a.org/b'>"
    """
    def fix(match: re.Match) -> str:
        attribute, quote, url = match.groups()
        if not url or url.startswith(("#", "/")) or re.match(r"[A-Za-z][\w+.-]*:", url):
            return match.group(0)
        return f"{attribute}={quote}{posixpath.normpath(posixpath.join(prefix, url))}{quote}"

    return _LINK.sub(fix, text)


_SECTION = re.compile(r"<section\b.*</section>", re.DOTALL)
FRAGMENT_SUFFIX = "_report.html"


def image_section_page(subject: str, label: str, section: str) -> str:
    """The stand-alone page of one image's section, kept beside its figures in
    ``sub-<label>/figures/``: its links are relative to that folder, so it opens on its own;
    :func:`assemble_subject_report` takes the ``<section>`` out of it."""
    nav = (f"<a href='../../sub-{html.escape(subject)}.html'>Subject report "
           f"(sub-{html.escape(subject)})</a><a href='../../group/group.html'>Group report</a>")
    return page(f"stroke-lesion-app: {label}", f"sub-{subject}: {label}", section, nav=nav)


def assemble_subject_report(output_dir: Path | str, subject: str, header: str) -> Path | None:
    """Join the image sections of one subject into ``OUTPUT_DIR/sub-<label>.html``.

    Sections come from ``sub-<label>/figures/*_report.html``, one per image (session/run), in
    name order; their links are re-rooted at ``OUTPUT_DIR``. The page links to the group report
    (``group/group.html``, written by the group level) and to each image's section. Returns
    the page's path, or ``None`` when the subject has no section.
    """
    output_dir = Path(output_dir)
    folder = f"sub-{subject}/figures"
    fragments = sorted((output_dir / folder).glob(f"*{FRAGMENT_SUFFIX}"))
    if not fragments:
        return None
    sections, nav = [], ["<a href='group/group.html'>Group report (group level)</a>"]
    for fragment in fragments:
        text = fragment.read_text()
        found = _SECTION.search(text)
        sections.append(rebase_links(found.group(0) if found else text, folder))
        label = fragment.name[: -len(FRAGMENT_SUFFIX)]
        nav.append(f"<a href='#{html.escape(label)}'>{html.escape(label)}</a>")
    return write_text_atomic(
        output_dir / f"sub-{subject}.html",
        page(f"stroke-lesion-app: sub-{subject}", f"sub-{subject}", header + "".join(sections),
             nav="".join(nav)))
