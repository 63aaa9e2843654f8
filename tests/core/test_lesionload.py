"""Lesion-load measures on masks with hand-computable answers."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from stroke_lesion_app.core import lesionload


def _template_grid_mask(shape=(20, 20, 20), zooms=(1.0, 1.0, 1.0)):
    """A grid whose world x is 0 at the middle of axis 0 (RAS, like the template)."""
    affine = np.diag([*zooms, 1.0])
    affine[:3, 3] = [-zooms[0] * shape[0] / 2, -zooms[1] * shape[1] / 2, 0.0]
    return np.zeros(shape, np.uint8), affine


def test_cube_of_known_volume():
    data, affine = _template_grid_mask()
    data[2:6, 2:6, 2:6] = 1                      # 64 voxels of 1 mm³, left (x < 0)
    load = lesionload.measure_lesion(nib.Nifti1Image(data, affine), "MNI152NLin2009aSym")
    assert load.voxels == 64 and load.volume_ml == pytest.approx(0.064)
    assert load.n_components == 1 and load.left_ml == pytest.approx(0.064)
    assert load.right_ml == 0 and load.components[0].hemisphere == "left"
    assert load.components[0].centroid_mm == (-6.5, -6.5, 3.5)


def test_anisotropic_voxels():
    data, affine = _template_grid_mask(zooms=(0.9, 0.9, 1.2))
    data[12:14, 5:8, 5:10] = 1                   # 30 voxels of 0.972 mm³, right
    load = lesionload.measure_lesion(nib.Nifti1Image(data, affine), "T1w")
    assert load.volume_ml == pytest.approx(30 * 0.9 * 0.9 * 1.2 / 1000)
    assert load.right_ml == pytest.approx(load.volume_ml)
    assert lesionload.lesion_side(load) == "right"


def test_two_components_sorted_by_size():
    data, affine = _template_grid_mask()
    data[1:3, 1:3, 1:3] = 1                      # 8 voxels, left
    data[12:16, 12:16, 12:16] = 1                # 64 voxels, right
    load = lesionload.measure_lesion(nib.Nifti1Image(data, affine), "MNI152NLin2009aSym")
    table = lesionload.components_table(load)
    assert table["voxels"].tolist() == [64, 8]
    assert table["hemisphere"].tolist() == ["right", "left"]
    assert load.largest_component_ml == pytest.approx(0.064)
    assert lesionload.lesion_side(load) == "bilateral"


def test_diagonal_contact_and_connectivity():
    data, affine = _template_grid_mask()
    data[5, 5, 5] = data[6, 6, 6] = 1            # corner contact only
    image = nib.Nifti1Image(data, affine)
    assert lesionload.measure_lesion(image, "T1w", connectivity=26).n_components == 1
    assert lesionload.measure_lesion(image, "T1w", connectivity=6).n_components == 2
    with pytest.raises(ValueError, match="connectivity 8 unknown"):
        lesionload.measure_lesion(image, "T1w", connectivity=8)


def test_lesion_split_across_the_midline_in_native_space():
    """A native lesion straddling the template midline, with a known native→template map."""
    data, affine = _template_grid_mask()
    data[6:10, 4:8, 4:8] = 1                     # native x from -4 to -1 mm
    shift = np.array([2.5, 0.0, 0.0])            # template = native + 2.5 mm in x

    load = lesionload.measure_lesion(nib.Nifti1Image(data, affine), "T1w",
                                     to_template=lambda points: points + shift)
    # template x of the 4 columns: -1.5, -0.5, 0.5, 1.5 → 1 left, 2 midline, 1 right
    assert load.left_ml == pytest.approx(0.016)
    assert load.midline_ml == pytest.approx(0.032)
    assert load.right_ml == pytest.approx(0.016)
    assert load.components[0].hemisphere == "midline"


def test_empty_mask():
    data, affine = _template_grid_mask()
    load = lesionload.measure_lesion(nib.Nifti1Image(data, affine), "T1w")
    assert load.volume_ml == 0 and load.n_components == 0
    assert lesionload.lesion_side(load) == "none"
    assert lesionload.components_table(load).empty


def test_region_overlap_both_directions():
    data, affine = _template_grid_mask()
    data[0:10, 0:10, 0:2] = 1                    # 200 voxels
    region_a = np.zeros(data.shape, np.float32)
    region_a[0:10, 0:10, 0:1] = 1                # 100 voxels, all lesioned
    region_b = np.zeros(data.shape, np.float32)
    region_b[0:20, 0:20, 1:2] = 0.5              # 400 voxels at weight 0.5, 100 in lesion
    table = lesionload.region_overlap(nib.Nifti1Image(data, affine),
                                      {"A": region_a, "B": region_b})
    a, b = table.set_index("region").loc["A"], table.set_index("region").loc["B"]
    assert a["percent_of_lesion"] == pytest.approx(50.0)
    assert a["percent_of_region"] == pytest.approx(100.0)
    assert b["lesion_in_region_ml"] == pytest.approx(0.05)
    assert b["percent_of_lesion"] == pytest.approx(25.0)
    assert b["percent_of_region"] == pytest.approx(25.0)
    with pytest.raises(ValueError, match="resample the atlas"):
        lesionload.region_overlap(nib.Nifti1Image(data, affine), {"C": np.zeros((2, 2, 2))})


def test_atlas_regions_resampled_and_named(tmp_path):
    data, affine = _template_grid_mask()
    atlas = np.zeros(data.shape, np.int16)
    atlas[:10] = 3
    atlas[10:] = 7
    flipped = nib.Nifti1Image(atlas[::-1], affine @ np.array(
        [[-1, 0, 0, 19], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]))   # stored LAS
    labels_file = tmp_path / "labels.tsv"
    pd.DataFrame({"index": [3, 7], "name": ["Left", "Right"]}).to_csv(labels_file, sep="\t",
                                                                         index=False)
    regions = lesionload.atlas_regions(flipped, lesionload.read_atlas_labels(labels_file),
                                       nib.Nifti1Image(data, affine))
    assert sorted(regions) == ["Left", "Right"]
    assert regions["Left"][:10].all() and not regions["Left"][10:].any()
    text_file = tmp_path / "aal.txt"
    text_file.write_text("1 Precentral_L 2001\n2 Precentral_R 2002\n")
    assert lesionload.read_atlas_labels(text_file) == {1: "Precentral_L", 2: "Precentral_R"}


def test_summary_row_and_descriptions():
    data, affine = _template_grid_mask()
    data[2:4, 2:4, 2:4] = 1
    image = nib.Nifti1Image(data, affine)
    load = lesionload.measure_lesion(image, "T1w")
    overlap = lesionload.region_overlap(image, {"GM": np.ones(data.shape, np.float32)})
    row = lesionload.summary_row(load, load, {"tissue": overlap})
    assert row["volume_ml"] == pytest.approx(0.008)
    assert row["tissue_GM_lesion_percent"] == pytest.approx(100.0)
    described = lesionload.column_descriptions(row)
    assert described["volume_ml"]["Units"] == "mL"
    assert "GM" in described["tissue_GM_region_percent"]["Description"]
