"""LesionLoad as a Nipype node: known volumes (mL), the template-midline split through a known
transform file, connected components, and tissue/atlas overlap columns named after the atlas."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from nipype.pipeline import engine as pe

from stroke_lesion_app.core.atlases import Atlas
from stroke_lesion_app.core.templates import TEMPLATE_AFFINE, TEMPLATE_SHAPE, template_grid
from stroke_lesion_app.interfaces.measures import LesionLoad

#: Native grid: 1 mm, 40×30×30 voxels, voxel (i, j, k) at (i - 30, j - 15, k - 15) mm.
NATIVE_SHAPE = (40, 30, 30)
NATIVE_AFFINE = np.array([[1.0, 0, 0, -30], [0, 1, 0, -15], [0, 0, 1, -15], [0, 0, 0, 1]])
#: The known pose: template mm = native mm + 12 mm along x.
NATIVE_TO_TEMPLATE_X_MM = 12.0


def write_affine_xfm(path, fixed_to_moving_ras: np.ndarray):
    """An ITK affine ``.mat`` as ANTs writes it, from a RAS 4×4 that maps *fixed* points (the
    output grid's world) to *moving* points — the direction ANTs stores and applies to points."""
    import ants

    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    lps = flip @ np.asarray(fixed_to_moving_ras, dtype=float) @ flip
    transform = ants.create_ants_transform(transform_type="AffineTransform", dimension=3,
                                           matrix=lps[:3, :3], translation=lps[:3, 3])
    ants.write_transform(transform, str(path))
    return path


def _shift(x=0.0, y=0.0, z=0.0):
    matrix = np.eye(4)
    matrix[:3, 3] = [x, y, z]
    return matrix


def _template_index(x, y, z):
    """Template voxel index of template mm (x, y, z) on the 1 mm grid."""
    return tuple(int(v) for v in np.linalg.solve(TEMPLATE_AFFINE, [x, y, z, 1])[:3].round())


def _write(tmp_path, name, data, affine):
    path = tmp_path / name
    nib.Nifti1Image(data, affine).to_filename(path)
    return str(path)


def _std2anat(tmp_path):
    # std2anat maps T1w (fixed) points to template (moving) points: native + 12 mm in x
    return str(write_affine_xfm(tmp_path / "std2anat_xfm.mat", _shift(NATIVE_TO_TEMPLATE_X_MM)))


def _run(tmp_path, name="lesion_load", **inputs):
    return pe.Node(LesionLoad(**inputs), name=name, base_dir=str(tmp_path / "work")).run()


@pytest.fixture
def cube_inputs(tmp_path):
    """A 10×10×10 mm native cube at x = -14…-5 mm (template x = -2…7: 2 left, 1 midline, 7
    right columns) and a 10×10×10 mm template cube at x = -30…-21 mm, y = 0…9, z = 10…19."""
    native = np.zeros(NATIVE_SHAPE, np.uint8)
    native[16:26, 10:20, 10:20] = 1
    std = np.zeros(TEMPLATE_SHAPE, np.uint8)
    i, j, k = _template_index(-30, 0, 10)
    std[i:i + 10, j:j + 10, k:k + 10] = 1
    return {"lesion_mask": _write(tmp_path, "lesion.nii.gz", native, NATIVE_AFFINE),
            "std_lesion_mask": _write(tmp_path, "std_lesion.nii.gz", std, TEMPLATE_AFFINE),
            "std2anat_xfm": _std2anat(tmp_path)}


def _atlases(tmp_path):
    """``Test``: 1 mm labels with a TSV table (label 3 unnamed); ``Coarse``: 2 mm, no table."""
    labels = np.zeros(TEMPLATE_SHAPE, np.uint8)
    i, j, k = _template_index(-30, 0, 10)
    labels[i:i + 5, j:j + 40, k:k + 10] = 1       # 2000 voxels, 500 of them in the lesion cube
    labels[i + 5:i + 10, j + 10:j + 20, k:k + 10] = 2   # 500 voxels beside the cube (y 10…19)
    labels[i + 40:i + 44, j:j + 4, k:k + 4] = 3   # far away, no name in the table
    table = tmp_path / "test_atlas.tsv"
    table.write_text("index\tname\n1\tPutamen\n2\tThalamus\n")
    shape_2mm, affine_2mm = template_grid(2)
    coarse = np.zeros(shape_2mm, np.int16)
    lo = np.linalg.solve(affine_2mm, [-40, -10, 0, 1])[:3].astype(int)
    coarse[lo[0]:lo[0] + 16, lo[1]:lo[1] + 16, lo[2]:lo[2] + 16] = 5   # x -40…-10 mm etc.
    return [Atlas("Test", tmp_path / "test_atlas.nii.gz", table),
            Atlas("Coarse", tmp_path / "coarse_atlas.nii.gz")], labels, (coarse, affine_2mm)


def test_lesion_load_volumes_sides_and_atlas_overlap(tmp_path, cube_inputs):
    atlases, labels, (coarse, affine_2mm) = _atlases(tmp_path)
    _write(tmp_path, "test_atlas.nii.gz", labels, TEMPLATE_AFFINE)
    _write(tmp_path, "coarse_atlas.nii.gz", coarse, affine_2mm)
    result = _run(tmp_path, atlases=atlases, **cube_inputs)

    summary = pd.read_csv(result.outputs.out_file, sep="\t")
    assert len(summary) == 1
    row = summary.iloc[0]
    assert row["volume_ml"] == pytest.approx(1.0) and row["volume_voxels"] == 1000
    assert row["n_components"] == 1 and row["largest_component_ml"] == pytest.approx(1.0)
    # split by the template midline through std2anat (native x + 12 mm), not the native x = 0
    assert row["left_volume_ml"] == pytest.approx(0.2)
    assert row["midline_volume_ml"] == pytest.approx(0.1)
    assert row["right_volume_ml"] == pytest.approx(0.7)
    assert row["lesion_side"] == "bilateral"
    assert row["std_volume_ml"] == pytest.approx(1.0) and row["std_n_components"] == 1
    assert row["connectivity"] == 26

    # atlas columns are named after the atlas and its label table
    assert row["atlas-Test_Putamen_lesion_percent"] == pytest.approx(50.0)
    assert row["atlas-Test_Putamen_region_percent"] == pytest.approx(25.0)
    assert row["atlas-Test_Thalamus_lesion_percent"] == 0
    assert row["atlas-Test_Thalamus_region_percent"] == 0
    assert row["atlas-Test_label-3_lesion_percent"] == 0
    # the 2 mm atlas is resampled onto the template grid; it covers the whole cube
    assert row["atlas-Coarse_label-5_lesion_percent"] == pytest.approx(100.0)
    for tissue in ("GM", "WM", "CSF"):
        assert 0 <= row[f"tissue_{tissue}_lesion_percent"] <= 100

    components = pd.read_csv(result.outputs.out_components, sep="\t")
    assert components["voxels"].tolist() == [1000]
    assert components["volume_ml"].tolist() == pytest.approx([1.0])
    # centroid in template mm: native (-9.5, -10.5, -10.5) + (12, 0, 0)
    assert components.loc[0, ["centroid_x_mm", "centroid_y_mm", "centroid_z_mm"]].tolist() == \
        pytest.approx([2.5, -0.5, -0.5], abs=1e-3)
    assert components["hemisphere"].tolist() == ["right"]

    regions = pd.read_csv(result.outputs.out_regions, sep="\t")
    assert set(regions["source"]) == {"tissue", "atlas-Test", "atlas-Coarse"}
    test_rows = regions[regions["source"] == "atlas-Test"].set_index("region")
    assert sorted(test_rows.index) == ["Putamen", "Thalamus", "label-3"]
    assert test_rows.loc["Putamen", "lesion_in_region_ml"] == pytest.approx(0.5)
    assert sorted(regions.loc[regions["source"] == "tissue", "region"]) == ["CSF", "GM", "WM"]

    columns = result.outputs.out_columns
    assert list(columns) == list(summary.columns)
    assert columns["volume_ml"]["Units"] == "mL"
    assert "atlas-Test_Putamen" in columns["atlas-Test_Putamen_lesion_percent"]["Description"]
    json.dumps(columns)  # ready for the JSON sidecar


@pytest.mark.parametrize("connectivity, expected", [(6, 2), (18, 2), (26, 1)])
def test_components_follow_the_connectivity(tmp_path, connectivity, expected):
    """Two cubes (27 and 8 voxels, 2 mm voxels) touching at one corner only."""
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-40.0, -10.0, -10.0]    # template x = native + 12 → all x < 0: left
    native = np.zeros((12, 10, 10), np.uint8)
    native[2:5, 2:5, 2:5] = 1
    native[5:7, 5:7, 5:7] = 1
    std = np.zeros(TEMPLATE_SHAPE, np.uint8)
    i, j, k = _template_index(-40, 0, 0)
    std[i:i + 3, j:j + 3, k:k + 3] = 1
    std[i + 3, j + 3, k + 3] = 1
    result = _run(tmp_path, lesion_mask=_write(tmp_path, "lesion.nii.gz", native, affine),
                  std_lesion_mask=_write(tmp_path, "std.nii.gz", std, TEMPLATE_AFFINE),
                  std2anat_xfm=_std2anat(tmp_path), connectivity=connectivity)
    row = pd.read_csv(result.outputs.out_file, sep="\t").iloc[0]
    assert row["n_components"] == expected and row["std_n_components"] == expected
    assert row["connectivity"] == connectivity
    assert row["volume_voxels"] == 35
    assert row["volume_ml"] == pytest.approx(35 * 0.008)
    assert row["left_volume_ml"] == pytest.approx(35 * 0.008) and row["lesion_side"] == "left"
    components = pd.read_csv(result.outputs.out_components, sep="\t")
    assert components["voxels"].tolist() == ([27, 8] if expected == 2 else [35])
    assert row["largest_component_ml"] == pytest.approx(components["volume_ml"].iloc[0])
    # no atlas given: only the tissue overlap
    assert set(pd.read_csv(result.outputs.out_regions, sep="\t")["source"]) == {"tissue"}
    assert not [column for column in row.index if column.startswith("atlas-")]


def test_empty_lesion(tmp_path):
    """No lesion voxel: zero volumes, side 'none', a components table with its header only."""
    result = _run(
        tmp_path,
        lesion_mask=_write(tmp_path, "lesion.nii.gz", np.zeros(NATIVE_SHAPE, np.uint8),
                           NATIVE_AFFINE),
        std_lesion_mask=_write(tmp_path, "std.nii.gz", np.zeros(TEMPLATE_SHAPE, np.uint8),
                               TEMPLATE_AFFINE),
        std2anat_xfm=_std2anat(tmp_path))
    row = pd.read_csv(result.outputs.out_file, sep="\t").iloc[0]
    assert row["volume_ml"] == 0 and row["n_components"] == 0 and row["std_volume_ml"] == 0
    assert row["lesion_side"] == "none"
    assert row["tissue_GM_lesion_percent"] == 0
    components = pd.read_csv(result.outputs.out_components, sep="\t")
    assert components.empty and "volume_ml" in components.columns


def test_editing_an_atlas_in_place_invalidates_the_cache(tmp_path, cube_inputs):
    import os

    labels = np.zeros(TEMPLATE_SHAPE, np.uint8)
    i, j, k = _template_index(-30, 0, 10)
    labels[i:i + 5, j:j + 10, k:k + 10] = 1
    _write(tmp_path, "atlas.nii.gz", labels, TEMPLATE_AFFINE)
    table = tmp_path / "atlas.tsv"
    table.write_text("index\tname\n1\tPutamen\n")
    atlas = Atlas("A", tmp_path / "atlas.nii.gz", table)
    first = pd.read_csv(_run(tmp_path, atlases=[atlas], **cube_inputs).outputs.out_file,
                        sep="\t").iloc[0]
    assert first["atlas-A_Putamen_lesion_percent"] == pytest.approx(50.0)

    table.write_text("index\tname\n1\tCaudate_nucleus\n")       # same path, new content
    os.utime(table, (table.stat().st_atime, table.stat().st_mtime + 10))
    second = pd.read_csv(_run(tmp_path, atlases=[atlas], **cube_inputs).outputs.out_file,
                         sep="\t").iloc[0]
    assert "atlas-A_Caudate_nucleus_lesion_percent" in second.index
