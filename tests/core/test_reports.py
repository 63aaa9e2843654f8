"""Report figures and pages (core.reports, the group page of core.group): display convention
(a lesion in the patient's left hemisphere is drawn on the side marked L, whatever the voxel
order), a 1 mL lesion large enough to see, the probability and frequency heat maps, tables with
units and rounding, pages that fit a phone and link to each other, the scope statement."""

from __future__ import annotations

import html
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from stroke_lesion_app.core import reports
from stroke_lesion_app.core.group import run_group
from stroke_lesion_app.core.reports import MARKERS, SCOPE_STATEMENT, VIEWS

YELLOW = (1.0, 0.816, 0.0)     # lesion outline, #ffd000
CYAN = (0.0, 0.898, 1.0)       # outline on the probability map, #00e5ff
RED = (1.0, 0.188, 0.188)      # #ff3030


def _head(shape=(40, 48, 40), zoom=2.0) -> nib.Nifti1Image:
    """An ellipsoid 'head' in RAS+, centred on the world origin."""
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    radius = (grid ** 2).sum(axis=0)
    data = 50 + 400 * (radius < 0.85) + 250 * (radius < 0.5)
    affine = np.diag([zoom, zoom, zoom, 1.0])
    affine[:3, 3] = -(np.array(shape) - 1) * zoom / 2
    return nib.Nifti1Image(data.astype(np.float32), affine)


def _cube(image: nib.Nifti1Image, centre_mm, side_mm) -> nib.Nifti1Image:
    """A cube-shaped lesion mask at a world position (RAS mm) on ``image``'s grid."""
    ijk = np.indices(image.shape[:3]).reshape(3, -1).T
    xyz = nib.affines.apply_affine(image.affine, ijk)
    inside = (np.abs(xyz - np.asarray(centre_mm)) < side_mm / 2).all(axis=1)
    return nib.Nifti1Image(inside.reshape(image.shape[:3]).astype(np.uint8), image.affine)


def _reoriented(image: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    """The same image (same world positions) stored in another voxel order."""
    transform = nib.orientations.ornt_transform(nib.io_orientation(image.affine),
                                                nib.orientations.axcodes2ornt(codes))
    return image.as_reoriented(transform)


def _pixels(png: Path, rgb, tolerance=0.12) -> np.ndarray:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))[..., :3]
    return np.abs(pixels - np.array(rgb)).max(axis=-1) < tolerance


def _heat_pixels(png: Path) -> int:
    """Pixels of the 'autumn' heat overlay (red to yellow, at alpha 0.8 over grey)."""
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))[..., :3]
    return int(((pixels[..., 0] > 0.75) & (pixels[..., 2] < 0.25)).sum())


# --------------------------------------------------------------------------------------------
# Display convention
# --------------------------------------------------------------------------------------------
def test_display_plane_is_radiological():
    volume = np.zeros((5, 6, 7))
    volume[4, 5, 6] = 1          # the patient's most right, anterior and superior voxel
    for view, axis in VIEWS.items():
        plane = reports.display_plane(volume, axis, (4, 5, 6)[axis])
        (row, column), = np.argwhere(plane)
        left, right, top, _ = MARKERS[axis]
        # right/anterior is drawn on the side whose letter says R or A, superior (or anterior
        # in an axial plane) at the top
        assert (column == 0) == (left in "RA") and (column == plane.shape[1] - 1) == (
            right in "RA"), view
        assert row == 0 and top in "SA", view
    assert MARKERS == {0: ("A", "P", "S", "I"), 1: ("R", "L", "S", "I"),
                       2: ("R", "L", "A", "P")}
    assert "patient's right (R) is on the left" in reports.DISPLAY_CONVENTION


@pytest.mark.parametrize("stored", ["RAS", "LPS", "PIL"])
@pytest.mark.parametrize("view", ["sagittal", "coronal", "axial"])
def test_left_lesion_is_drawn_on_the_side_marked_L(tmp_path, stored, view):
    """A lesion in the LEFT hemisphere (x < 0 mm, RAS), anterior and superior, lands in the
    picture on the sides whose letters say L (or A) and S (or A), for any voxel order."""
    head = _head()
    lesion = _cube(head, (-20.0, 16.0, 12.0), 10.0)
    outline = nib.Nifti1Image((np.asarray(head.dataobj) > 100).astype(np.uint8), head.affine)
    head, lesion, outline = (_reoriented(image, stored) for image in (head, lesion, outline))
    png = reports.mosaic(head, [(lesion, "#ffd000"), (outline, "#ff3030")], tmp_path / "f.png",
                         columns=1, views=(view,), focus=lesion)
    yellow, red = _pixels(png, YELLOW), _pixels(png, RED)
    assert yellow.any() and red.any()
    rows, columns = np.nonzero(yellow)
    head_rows, head_columns = np.nonzero(red)       # the head's outline: its centre
    centre_row = (head_rows.min() + head_rows.max()) / 2
    centre_column = (head_columns.min() + head_columns.max()) / 2
    left, right, top, _ = MARKERS[VIEWS[view]]
    lesion_sides = {"L", "A", "S"}
    if right in lesion_sides:
        assert columns.min() > centre_column, (view, stored)
    else:
        assert left in lesion_sides and columns.max() < centre_column, (view, stored)
    assert top in lesion_sides and rows.max() < centre_row, (view, stored)


def test_orientation_of_the_stored_image_does_not_change_the_picture(tmp_path):
    head = _head()
    lesion = _cube(head, (-20.0, 16.0, 12.0), 10.0)
    import matplotlib.image

    pictures = [matplotlib.image.imread(str(reports.lesion_figure(
        _reoriented(head, codes), _reoriented(lesion, codes), tmp_path / f"{codes}.png")))
        for codes in ("RAS", "LPI")]
    assert pictures[0].shape == pictures[1].shape
    assert np.abs(pictures[0] - pictures[1]).max() < 1e-6


# --------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------
def test_lesion_figure_shows_a_1_ml_lesion_large(tmp_path):
    """1 mm head, a 1 mL cube (10 mm): the zoomed outline is about 100 px across (it was
    about 10 px in 150-px tiles)."""
    head = _head(shape=(96, 112, 96), zoom=1.0)
    lesion = _cube(head, (-25.0, 10.0, 5.0), 10.0)
    assert int(np.asarray(lesion.dataobj).sum()) == 1000
    png = reports.lesion_figure(head, lesion, tmp_path / "lesion.png")
    yellow = _pixels(png, YELLOW)
    assert yellow.shape[1] == 1200
    blobs, count = ndimage.label(ndimage.binary_dilation(yellow, iterations=2))
    widths = [bounds[1].stop - bounds[1].start for bounds in ndimage.find_objects(blobs)]
    assert count >= 4 and max(widths) >= 80, widths   # 3 zoom panels + overview slices
    # the zoom panels without the outline come first: the top quarter has no yellow
    assert not yellow[: yellow.shape[0] // 4].any()


def test_lesion_figure_without_lesion(tmp_path):
    head = _head()
    empty = nib.Nifti1Image(np.zeros(head.shape, np.uint8), head.affine)
    png = reports.lesion_figure(head, empty, tmp_path / "none.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not _pixels(png, YELLOW).any()


def test_probability_figure(tmp_path):
    head = _head()
    lesion = _cube(head, (-20.0, 0.0, 0.0), 12.0)
    probability = ndimage.gaussian_filter(np.asarray(lesion.dataobj, np.float32), 1.5) * 1.5
    # on a coarser grid than the T1w: resampled (linear) onto it
    probseg = nib.Nifti1Image(np.clip(probability, 0, 1)[::2, ::2, ::2],
                              head.affine @ np.diag([2.0, 2.0, 2.0, 1.0]))
    shown = reports.probability_figure(head, probseg, tmp_path / "p.png", lesion=lesion,
                                       threshold=0.5)
    assert _heat_pixels(shown) > 5000 and _pixels(shown, CYAN).any()
    # zero probability, no mask: nothing above the floor, only the colour bar is coloured
    zero = nib.Nifti1Image(np.zeros(head.shape, np.float32), head.affine)
    blank = reports.probability_figure(head, zero, tmp_path / "zero.png")
    assert _heat_pixels(blank) < _heat_pixels(shown) / 3
    assert not _pixels(blank, CYAN).any()        # no outline, no threshold line
    # probabilities without a mask (a manual-free model run that found nothing above threshold)
    below = nib.Nifti1Image(np.clip(probability, 0, 0.4), head.affine)
    assert reports.probability_figure(head, below, tmp_path / "below.png",
                                      threshold=0.5).is_file()


def test_heat_mosaic_draws_the_frequency_on_its_side(tmp_path):
    head = _head()
    frequency = _cube(head, (-20.0, 0.0, 0.0), 12.0)
    png = reports.heat_mosaic(head, nib.Nifti1Image(
        np.asarray(frequency.dataobj, np.float32) * 0.5, head.affine), tmp_path / "f.png",
        label="% of the N = 2 images", title="Lesion frequency, N = 2", columns=2, rows=1)
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))[..., :3]
    # orange (50 %) in the tiles, on the L (right) half of each tile
    orange = (pixels[..., 0] > 0.9) & (np.abs(pixels[..., 1] - 0.6) < 0.1) & (
        pixels[..., 2] < 0.3)
    tiles = orange[:-160]          # above the colour bar and the footer
    columns = np.flatnonzero(tiles.any(axis=0))
    assert columns.size and all(
        (columns[(columns >= start) & (columns < start + 600)] - start > 300).all()
        for start in (0, 600))


# --------------------------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------------------------
def test_column_labels_have_units_and_decimals():
    assert reports.column_label("volume_ml") == ("Volume (mL)", 2)
    assert reports.column_label("left_volume_ml") == ("Left hemisphere (mL)", 2)
    assert reports.column_label("centroid_x_mm") == ("Centroid x (MNI mm)", 1)
    assert reports.column_label("atlas-AAL_Precentral_L_region_percent") == (
        "Atlas AAL: Precentral_L, % of the region lesioned", 1)
    assert reports.column_label("some_new_ml") == ("some new (mL)", 2)
    assert reports.column_label("n_components")[1] == 0


def test_table_html_rounds_labels_links_and_scrolls():
    frame = pd.DataFrame([
        {"participant_id": "sub-01", "volume_ml": 1.23456, "n_components": 2,
         "tissue_WM_lesion_percent": 55.55, "lesion_side": "left", "demo_model": True},
        {"participant_id": "sub-02", "volume_ml": np.nan, "n_components": np.nan,
         "tissue_WM_lesion_percent": np.nan, "lesion_side": None, "demo_model": False}])
    text = reports.table_html(frame, links={"participant_id": {"sub-01": "../sub-01.html"}})
    assert text.startswith("<div class='table-wrap'><table")
    assert "<th scope='col' title='TSV column: volume_ml'>Volume (mL)</th>" in text
    assert "<td class='num'>1.23</td>" in text and "1.2345" not in text
    assert "<td class='num'>2</td>" in text and "55.5" in text and "55.55" not in text
    assert "<td><a href='../sub-01.html'>sub-01</a></td><td class='num'>" in text
    assert "<td>sub-02</td>" in text and text.count("n/a") == 4
    assert "<td>yes</td>" in text and "<td>no</td>" in text
    assert reports.table_html(pd.DataFrame()) == "<p><em>none</em></p>"
    long = reports.table_html(pd.DataFrame({"volume_ml": np.arange(70.0)}), max_rows=60)
    assert long.count("<tr>") == 61 and "10 more rows in the TSV" in long


def test_summary_and_region_tables():
    row = {"volume_ml": 0.384123, "volume_voxels": 48, "lesion_side": "left",
           "tissue_WM_lesion_percent": 80.04, "tissue_WM_region_percent": 0.0123,
           "atlas-Hemi_Left_lesion_percent": 100.0, "atlas-Hemi_Left_region_percent": 0.5}
    summary = reports.summary_table_html(row)
    assert re.search(r"<th scope='row'>Side</th><td>left</td><td><code>lesion_side</code>",
                     summary)
    assert "<td class='num'>0.38</td><td><code>volume_ml</code>" in summary
    assert "<td class='num'>48</td>" in summary and "percent" not in summary
    regions = reports.regions_table_html(row)
    assert "<th scope='row'>Tissue: WM</th><td class='num'>80.0</td><td class='num'>0.0</td>" \
        in regions
    assert "<th scope='row'>Atlas Hemi: Left</th><td class='num'>100.0</td>" in regions
    assert reports.regions_table_html({"volume_ml": 1.0}) == ""


# --------------------------------------------------------------------------------------------
# Pages
# --------------------------------------------------------------------------------------------
def _links(text: str) -> list[str]:
    return re.findall(r"(?:src|href)='([^'#]+)'", text)


def test_page_fits_phones_and_states_the_scope():
    text = reports.page("t", "Heading <1>", "<p>body</p>", nav="<a href='x.html'>x</a>")
    assert "<meta name='viewport' content='width=device-width, initial-scale=1'>" in text
    assert "<nav><a href='x.html'>x</a></nav><h1>Heading &lt;1&gt;</h1>" in text
    assert f"<p class='scope'>{SCOPE_STATEMENT}</p>" in text
    assert "chronic stroke" in SCOPE_STATEMENT and "T1-weighted" in SCOPE_STATEMENT
    for excluded in ("acute", "DWI", "FLAIR", "tumours", "not for clinical use"):
        assert excluded in SCOPE_STATEMENT
    assert ".table-wrap{overflow-x:auto" in text


def test_subject_page_from_standalone_sections(tmp_path):
    out = tmp_path / "out"
    figures = out / "sub-01" / "figures"
    figures.mkdir(parents=True)
    (figures / "sub-01_ses-1_desc-lesion_figure.png").write_bytes(b"png")
    section = ("<section class='image-report' id='sub-01_ses-1'><h2>sub-01_ses-1</h2>"
               + reports.figure_html("sub-01_ses-1_desc-lesion_figure.png", "lesion", "Cap.")
               + "<a href='../ses-1/anat/sub-01_ses-1_label-L_desc-lesionload_stats.tsv'>t</a>"
               "</section>")
    fragment = figures / "sub-01_ses-1_report.html"
    fragment.write_text(reports.image_section_page("01", "sub-01_ses-1", section))
    # an older, bare fragment is joined too
    (figures / "sub-01_ses-2_report.html").write_text(
        "<section><h2>sub-01_ses-2</h2><img src='sub-01_ses-1_desc-lesion_figure.png'></section>")
    page = reports.assemble_subject_report(out, "01", "<p>header</p>")
    assert page == out / "sub-01.html"
    text = page.read_text()
    assert "<meta name='viewport'" in text and SCOPE_STATEMENT in text
    assert text.index("<h1>sub-01</h1>") < text.index(SCOPE_STATEMENT) < text.index("header")
    assert "<a href='group/group.html'>" in text
    assert "<a href='#sub-01_ses-1'>" in text and "id='sub-01_ses-1'" in text
    assert "src='sub-01/figures/sub-01_ses-1_desc-lesion_figure.png'" in text
    assert "href='sub-01/ses-1/anat/sub-01_ses-1_label-L_desc-lesionload_stats.tsv'" in text
    assert text.count("<h1>") == 1 and text.count("<!DOCTYPE") == 1
    assert html.escape(reports.DISPLAY_CONVENTION) in text
    # every link of both pages resolves from its own folder (the group page and the TSV
    # exist after the group level and the participant level's data sinks)
    (out / "group").mkdir()
    (out / "group" / "group.html").write_text("group")
    (out / "sub-01" / "ses-1" / "anat").mkdir(parents=True)
    (out / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_label-L_desc-lesionload_stats.tsv"
     ).write_text("")
    for html_file in (page, fragment):
        for link in _links(html_file.read_text()):
            assert (html_file.parent / link).is_file(), (html_file.name, link)
    assert reports.assemble_subject_report(out, "02", "") is None


def _template_cube(centre_mm, side_mm) -> nib.Nifti1Image:
    """A cube-shaped lesion mask on the real MNI152NLin2009aSym 1 mm grid (the group level
    stacks only masks on that grid)."""
    from stroke_lesion_app.core.templates import TEMPLATE_AFFINE, TEMPLATE_SHAPE

    data = np.zeros(TEMPLATE_SHAPE, np.uint8)
    centre = nib.affines.apply_affine(np.linalg.inv(TEMPLATE_AFFINE), centre_mm)
    low = np.rint(centre - side_mm / 2).astype(int)
    data[tuple(slice(start, start + int(side_mm)) for start in low)] = 1
    return nib.Nifti1Image(data, TEMPLATE_AFFINE)


def _fake_output(out: Path) -> Path:
    """Two measured images (left and right lesions) and a subject that failed."""
    for subject, x_mm, volume in (("01", -20.0, 1.23456), ("02", 20.0, 10.98765)):
        anat = out / f"sub-{subject}" / "anat"
        anat.mkdir(parents=True)
        (anat / f"sub-{subject}_desc-preproc_T1w.nii.gz").write_bytes(b"")
        pd.DataFrame([{"volume_ml": volume, "n_components": 1, "lesion_side": "left",
                       "tissue_WM_lesion_percent": 12.345,
                       "tissue_WM_region_percent": 0.5678}]).to_csv(
            anat / f"sub-{subject}_label-L_desc-lesionload_stats.tsv", sep="\t", index=False)
        _template_cube((x_mm, 0.0, 0.0), 12.0).to_filename(
            anat / f"sub-{subject}_space-MNI152NLin2009aSym_label-L_desc-manual_mask.nii.gz")
    (out / "sub-03" / "log").mkdir(parents=True)
    (out / "sub-01.html").write_text("subject page")
    return out


def test_group_page(tmp_path):
    out = _fake_output(tmp_path / "out")
    written = run_group(out, _head())
    group = out / "group"
    # the TSV and the maps keep their names and every digit
    assert written["cohort_table"] == group / "label-L_desc-lesionload_stats.tsv"
    assert "1.23456" in written["cohort_table"].read_text()
    assert written["frequency_map"].name == \
        "space-MNI152NLin2009aSym_label-L_desc-frequency_probseg.nii.gz"
    text = written["report"].read_text()
    assert "<meta name='viewport'" in text and SCOPE_STATEMENT in text
    # figures: the frequency heat map with N, the minimum-overlap region, the histogram, the
    # region chart
    sources = re.findall(r"src='([^']+)'", text)
    assert sources == ["figures/desc-frequency_figure.png", "figures/desc-minoverlap_figure.png",
                       "figures/desc-volumes_figure.png", "figures/desc-regions_figure.png"]
    assert "N = 2 images" in text and html.escape(reports.DISPLAY_CONVENTION) in text
    assert _heat_pixels(group / sources[0]) > 1000
    # cohort table: labels with units, rounding, links to the subject pages that exist
    assert "<div class='table-wrap'>" in text and "Volume (mL)</th>" in text
    assert "<td class='num'>1.23</td>" in text and "1.2345" not in text
    assert "<a href='../sub-01.html'>sub-01</a>" in text
    assert "<td>sub-02</td>" in text and "sub-03" in text   # no page: no link
    assert "<a href='label-L_desc-lesionload_stats.tsv'>" in text
    for link in _links(text):
        assert (group / link).is_file(), link
