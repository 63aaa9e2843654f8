"""End to end: a dataset with manual lesion masks gets lesion load, reports and group outputs."""

from __future__ import annotations

import json
import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from stroke_lesion_app.cli.run import cli
from stroke_lesion_app.synthetic import synthesize_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """Two synthetic subjects whose true lesion masks sit in the raw dataset as _roi files."""
    root = tmp_path_factory.mktemp("lesion_load")
    bids = root / "bids"
    synthesize_dataset(bids, n_subjects=2, seed=11, resolution=3)
    truth = root / "truth"
    shutil.move(bids / "derivatives" / "synthetic-truth", truth)
    shutil.rmtree(bids / "derivatives")
    for mask in truth.glob("sub-*/anat/sub-*_label-L_mask.nii.gz"):
        if "space-" in mask.name:
            continue
        subject = mask.name.split("_")[0]
        shutil.copy(mask, bids / subject / "anat" / f"{subject}_label-lesion_roi.nii.gz")
    # a two-label atlas on the template grid: left and right hemisphere
    from stroke_lesion_app.core.templates import TEMPLATE_AFFINE, TEMPLATE_SHAPE

    x = nib.affines.apply_affine(TEMPLATE_AFFINE, np.indices(TEMPLATE_SHAPE).reshape(3, -1).T)
    hemispheres = np.where(x[:, 0] < 0, 1, 2).reshape(TEMPLATE_SHAPE).astype(np.int16)
    nib.Nifti1Image(hemispheres, TEMPLATE_AFFINE).to_filename(root / "hemi.nii.gz")
    (root / "hemi.tsv").write_text("index\tname\n1\tLeft\n2\tRight\n")
    out = root / "out"
    result = CliRunner().invoke(cli, [str(bids), str(out), "participant", "-w",
                                      str(root / "work"), "--nprocs", "2", "--group-normalisation", "affine",
                                      "--lesion-source", "manual", "--atlas",
                                      f"Hemi={root / 'hemi.nii.gz'}:{root / 'hemi.tsv'}"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return bids, truth, out


def test_lesion_load_matches_the_truth(processed):
    _, truth, out = processed
    lesions = pd.read_csv(truth / "lesions.tsv", sep="\t")
    for subject, rows in lesions.groupby("participant_id"):
        anat = out / subject / "anat"
        summary = pd.read_csv(anat / f"{subject}_label-L_desc-lesionload_stats.tsv", sep="\t")
        mask = nib.load(truth / subject / "anat" / f"{subject}_label-L_mask.nii.gz")
        native_ml = (mask.get_fdata() > 0.5).sum() * abs(
            float(nib.affines.voxel_sizes(mask.affine).prod())) / 1000
        assert summary.loc[0, "volume_ml"] == pytest.approx(native_ml, rel=1e-4)
        sides = set(rows["hemisphere"])
        expected_side = sides.pop() if len(sides) == 1 else "bilateral"
        assert summary.loc[0, "lesion_side"] == expected_side
        # template-space volume within 15 % of the generator's (1 mm grid) volume
        assert summary.loc[0, "std_volume_ml"] == pytest.approx(
            rows["volume_mm3"].sum() / 1000, rel=0.15)
        components = pd.read_csv(anat / f"{subject}_label-L_desc-components_stats.tsv",
                                 sep="\t")
        largest = rows.sort_values("volume_mm3").iloc[-1]
        centre = components.loc[0, ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]]
        distance = ((centre.to_numpy(float) - largest[["centre_x_mm", "centre_y_mm",
                                                      "centre_z_mm"]].to_numpy(float)) ** 2)
        assert distance.sum() ** 0.5 <= 5.0, subject
        # atlas overlap, both ways: the lesion's share per side sums to 100 %
        shares = summary.loc[0, ["atlas-Hemi_Left_lesion_percent",
                                 "atlas-Hemi_Right_lesion_percent"]]
        assert shares.sum() == pytest.approx(100.0, abs=0.1)
        dominant = "Right" if expected_side == "right" else "Left"
        if expected_side in ("left", "right"):
            assert summary.loc[0, f"atlas-Hemi_{dominant}_lesion_percent"] >= 95
        assert 0 < summary.loc[0, f"atlas-Hemi_{dominant}_region_percent"] < 100
        assert summary.loc[0, "tissue_WM_lesion_percent"] > 0
        sidecar = json.loads((anat / f"{subject}_label-L_desc-lesionload_stats.json")
                             .read_text())
        assert sidecar["volume_ml"]["Units"] == "mL" and sidecar["LesionSource"] == "manual"


def test_reports_reference_existing_figures(processed):
    _, _, out = processed
    for page in sorted(out.glob("sub-*.html")):
        text = page.read_text()
        figures = re.findall(r"src='([^']+)'", text)
        assert len(figures) == 3, page  # lesion, brain mask, registration
        for figure in figures:
            assert (out / figure).is_file(), figure
        assert "Lesion load" in text and "volume_ml" in text
        assert "deepbet" in text  # the methods name the skull-stripping backend
        assert "<ol class='references'>" in text  # with the numbered reference list
        assert "not for clinical use" in text.lower()
    assert len(list(out.glob("sub-*.html"))) == 2


def test_group_level(processed, tmp_path):
    bids, _, out = processed
    # a third subject whose processing failed: a folder with a log only
    (out / "sub-03" / "log").mkdir(parents=True)
    result = CliRunner().invoke(cli, [str(bids), str(out), "group"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    cohort = pd.read_csv(out / "group" / "label-L_desc-lesionload_stats.tsv", sep="\t")
    assert cohort["participant_id"].tolist() == ["sub-01", "sub-02", "sub-03"]
    assert cohort["status"].tolist()[:2] == ["measured", "measured"]
    assert cohort["status"].iloc[2].startswith("not processed")
    assert cohort.loc[:1, "volume_ml"].gt(0).all()
    frequency = nib.load(out / "group" /
                         "space-MNI152NLin2009aSym_label-L_desc-frequency_probseg.nii.gz")
    assert frequency.shape == (197, 233, 189)
    values = frequency.get_fdata()
    assert values.max() <= 1.0 and set(values[values > 0].round(2)) <= {0.5, 1.0}
    page = (out / "group" / "group.html").read_text()
    for figure in re.findall(r"src='([^']+)'", page):
        assert (out / "group" / figure).is_file()
    assert "sub-03" in page
