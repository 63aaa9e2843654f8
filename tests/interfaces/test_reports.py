"""ImageReport as a Nipype node on a tiny head: figure files and names, and the image's section
page (summary, lesion source, lesion-load tables, methods with numbered citations, warnings)."""

from __future__ import annotations

import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nipype.pipeline import engine as pe

from stroke_lesion_app.core.reports import REFERENCES
from stroke_lesion_app.interfaces.reports import ImageReport
from tests.conftest import tiny_head

ENTITIES = {"subject": "01", "session": "1"}
FIGURES = "sub-01/figures"
METHODS = ["Lesions were segmented with a demo network [@mscsa; @nnunet].",
           "The T1w was normalised with ANTs [@ants] to <MNI> space [@mni2009]."]


@pytest.fixture
def images(tmp_path):
    head = tiny_head()
    head.to_filename(tmp_path / "t1w.nii.gz")
    mask = (head.get_fdata() > 400).astype(np.uint8)
    nib.Nifti1Image(mask, head.affine).to_filename(tmp_path / "mask.nii.gz")
    lesion = np.zeros(mask.shape, np.uint8)
    lesion[4:8, 5:9, 3:6] = 1
    nib.Nifti1Image(lesion, head.affine).to_filename(tmp_path / "lesion.nii.gz")
    pd.DataFrame([{"volume_ml": 0.384, "n_components": 1, "lesion_side": "left"}]).to_csv(
        tmp_path / "load.tsv", sep="\t", index=False)
    pd.DataFrame([{"component": 1, "voxels": 48, "volume_ml": 0.384123,
                   "hemisphere": "left"}]).to_csv(tmp_path / "components.tsv", sep="\t",
                                                  index=False)
    return {"t1w_preproc": str(tmp_path / "t1w.nii.gz"), "t1w_mask": str(tmp_path / "mask.nii.gz"),
            "std_t1w": str(tmp_path / "t1w.nii.gz"), "template_mask": str(tmp_path / "mask.nii.gz"),
            "lesion": str(tmp_path / "lesion.nii.gz"), "load": str(tmp_path / "load.tsv"),
            "components": str(tmp_path / "components.tsv")}


def _report(tmp_path, images, **inputs):
    base = {key: images[key] for key in ("t1w_preproc", "t1w_mask", "std_t1w", "template_mask")}
    return pe.Node(ImageReport(output_dir=str(tmp_path / "out"), source_entities=ENTITIES,
                               **base, **inputs),
                   name="image_report", base_dir=str(tmp_path / "work")).run()


def _section(page: str) -> str:
    """The ``<section>`` of an image's stand-alone page (what the subject page joins)."""
    assert page.startswith("<!DOCTYPE html>") and "<meta name='viewport'" in page
    return re.search(r"<section\b.*</section>", page, re.DOTALL).group(0)


def _has_colour(png: Path, rgb: tuple[float, float, float], tolerance=0.12) -> bool:
    import matplotlib.image

    pixels = matplotlib.image.imread(str(png))[..., :3]
    return bool((np.abs(pixels - np.array(rgb)).max(axis=-1) < tolerance).any())


def test_image_report_with_a_lesion(tmp_path, images):
    result = _report(
        tmp_path, images, lesion_mask=images["lesion"], lesion_load=images["load"],
        lesion_components=images["components"], lesion_source="model bundle demo 0.1 (<demo>)",
        model_warning="Demo model: not for clinical use & not validated.",
        t1w_description={"shape": "12x14x10", "orientation": "LIA"},
        skull_strip_method="deepbet", registration="affine", template_source="nilearn",
        methods=METHODS)
    figures = tmp_path / "out" / FIGURES
    names = ["sub-01_ses-1_desc-brainmask_figure.png",
             "sub-01_ses-1_desc-registration_figure.png", "sub-01_ses-1_desc-lesion_figure.png"]
    assert result.outputs.out_figures == [str(figures / name) for name in names]
    for name in names:
        assert (figures / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the overlays are drawn in their colours: red brain mask, blue template, yellow lesion
    assert _has_colour(figures / names[0], (1.0, 0.19, 0.19))
    assert _has_colour(figures / names[1], (0.19, 0.75, 1.0))
    assert _has_colour(figures / names[2], (1.0, 0.82, 0.0))
    assert not _has_colour(figures / names[0], (1.0, 0.82, 0.0))
    assert sorted(p.name for p in figures.iterdir()) == sorted(
        [*names, "sub-01_ses-1_report.html"])   # no temporary file left behind

    assert result.outputs.out_report == str(figures / "sub-01_ses-1_report.html")
    page = Path(result.outputs.out_report).read_text()
    text = _section(page)
    assert text.startswith("<section class='image-report' id='sub-01_ses-1'><h2>sub-01_ses-1"
                           "</h2>")
    assert "<p class='warning'>Demo model: not for clinical use &amp; not validated.</p>" in text
    assert "<p>Lesion mask: model bundle demo 0.1 (&lt;demo&gt;)</p>" in text
    assert "No lesion mask for this image" not in text
    for key, value in {"Input image": "shape 12x14x10, orientation LIA",
                       "Skull-stripping": "deepbet", "Registration": "affine",
                       "Template": "MNI152NLin2009aSym 1 mm (nilearn)"}.items():
        assert f"<dt>{key}</dt><dd>{value}</dd>" in text
    # every figure is referenced relative to the page's own folder (it opens on its own), and
    # links to its full-size picture
    sources = re.findall(r"<img src='([^']+)'", text)
    assert sorted(sources) == sorted(names)
    assert all((figures / source).is_file() for source in sources)
    assert all(f"<a href='{name}'><img src='{name}'" in text for name in names)
    assert "../../sub-01.html" in page   # back to the subject page
    # lesion-load tables: the summary transposed with labels and units, volumes at 2 decimals,
    # the TSV column names kept, links to the TSVs (every digit) from the figures folder
    assert "<h4>Lesion load</h4>" in text and "<h4>Connected components</h4>" in text
    assert re.search(r"<th scope='row'>Side</th><td>left</td><td><code>lesion_side</code>",
                     text)
    assert "Volume (mL)" in text and "0.38</td>" in text and "0.384" not in text
    assert "href='../ses-1/anat/sub-01_ses-1_label-L_desc-lesionload_stats.tsv'" in text
    assert "Radiological convention" in text
    # methods: both paragraphs, citations numbered in order, escaped, with the reference list
    assert ("Lesions were segmented with a demo network [1, 2]. The T1w was normalised with "
            "ANTs [3] to &lt;MNI&gt; space [4].") in text
    references = re.search(r"<ol class='references'>(.*?)</ol>", text).group(1)
    assert re.findall(r"<li>(.*?)</li>", references) == [
        REFERENCES[key] for key in ("mscsa", "nnunet", "ants", "mni2009")]
    assert text.index("<h3>Lesion</h3>") < text.index("<h3>Methods</h3>")


def test_image_report_without_a_lesion(tmp_path, images):
    result = _report(tmp_path, images, template_source="templateflow", registration="syn")
    figures = tmp_path / "out" / FIGURES
    assert [Path(path).name for path in result.outputs.out_figures] == [
        "sub-01_ses-1_desc-brainmask_figure.png", "sub-01_ses-1_desc-registration_figure.png"]
    assert not (figures / "sub-01_ses-1_desc-lesion_figure.png").exists()
    text = _section(Path(result.outputs.out_report).read_text())
    assert "<p class='warning'>No lesion mask for this image" in text
    assert "Lesion mask:" not in text and "<h4>Lesion load</h4>" not in text
    assert "class='warning'>Demo" not in text   # no model warning without one
    # undefined summary items are left out, defined ones shown
    assert "<dt>Skull-stripping</dt>" not in text and "<dt>Input image</dt>" not in text
    assert "<dt>Registration</dt><dd>syn</dd>" in text
    assert "(templateflow)" in text
    # no methods given: an empty paragraph, no references, but the Nipype note
    assert "<ol class='references'></ol>" in text and REFERENCES["nipype"] in text


def test_image_report_run_entity_and_session_free_name(tmp_path, images):
    """Without a session, with a run: the fragment and figures are named from the entities."""
    base = {key: images[key] for key in ("t1w_preproc", "t1w_mask", "std_t1w", "template_mask")}
    result = pe.Node(ImageReport(output_dir=str(tmp_path / "out"),
                                 source_entities={"subject": "02", "run": 3}, **base),
                     name="image_report", base_dir=str(tmp_path / "work")).run()
    figures = tmp_path / "out" / "sub-02" / "figures"
    assert result.outputs.out_report == str(figures / "sub-02_run-3_report.html")
    assert (figures / "sub-02_run-3_desc-brainmask_figure.png").is_file()
    assert _section(Path(result.outputs.out_report).read_text()).startswith(
        "<section class='image-report' id='sub-02_run-3'><h2>sub-02_run-3</h2>")


def test_image_report_lesion_without_a_source_text(tmp_path, images):
    """Either a report with a fallback lesion-source text, or a clear input error naming
    lesion_source (e.g. requires=["lesion_source"] on lesion_mask) — not an AttributeError."""
    try:
        result = _report(tmp_path, images, lesion_mask=images["lesion"],
                         template_source="nilearn")
    except Exception as error:  # noqa: BLE001 - the node wraps whatever the interface raised
        assert "lesion_source" in str(error) and "_Undefined" not in str(error)
    else:
        assert "<p>Lesion mask:" in Path(result.outputs.out_report).read_text()


def test_image_report_without_template_source_shows_no_undefined(tmp_path, images):
    result = _report(tmp_path, images)
    assert "undefined" not in Path(result.outputs.out_report).read_text()


def test_image_report_with_a_probability_map(tmp_path, images):
    """A model's native probability map: a fourth figure (heat map, threshold in the caption);
    left out when undefined (manual masks have none)."""
    lesion = nib.load(images["lesion"])
    probability = np.asarray(lesion.dataobj, np.float32) * 0.9 + 0.1
    nib.Nifti1Image(probability, lesion.affine).to_filename(tmp_path / "probseg.nii.gz")
    result = _report(tmp_path, images, lesion_mask=images["lesion"],
                     lesion_probseg=str(tmp_path / "probseg.nii.gz"), lesion_threshold=0.5,
                     lesion_source="model bundle demo 0.1")
    figures = tmp_path / "out" / FIGURES
    assert [Path(path).name for path in result.outputs.out_figures] == [
        "sub-01_ses-1_desc-brainmask_figure.png", "sub-01_ses-1_desc-registration_figure.png",
        "sub-01_ses-1_desc-lesion_figure.png", "sub-01_ses-1_desc-probability_figure.png"]
    assert _has_colour(figures / "sub-01_ses-1_desc-probability_figure.png", (0.0, 0.9, 1.0))
    text = _section(Path(result.outputs.out_report).read_text())
    assert "<img src='sub-01_ses-1_desc-probability_figure.png'" in text
    assert "Lesion probability" in text and "at or above 0.5" in text
    assert text.index("desc-lesion_figure") < text.index("desc-probability_figure")
