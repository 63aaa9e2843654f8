"""Group outputs for lesion-symptom mapping (core.group, core.group_stacks, core.group_exports):
4D stacks whose volumes are the subjects' masks and whose headers are exactly the template
grid's, flipping to the left, minimum overlap, the probability stack, exclusions, the NiiStat
sheet, the LESYMAP list and the long regional table.

The fake output folder uses the real template grids (MNI152NLin2009aSym 197×233×189 and FSL's
MNI152NLin6Asym 182×218×182, both 1 mm) with small cube lesions:

========  ===========================  ============  ==================  ====================
image     2009aSym mask                source        lesion (x, y, z mm)  NLin6Asym mask
========  ===========================  ============  ==================  ====================
sub-01    desc-lesionaware (+ probseg)  model         (+30, 0, 10), 5 mm   FSL grid (LAS)
sub-02    desc-lesionaware (+ stale     edited        (-30, 0, 10), 5 mm   TemplateFlow grid
          probseg)                                                         (RAS, reordered)
sub-03    label-L_mask (fallback,       model         (-30, 0, 10), 3 mm   none
          + probseg)
sub-04    desc-lesionaware, 2 mm grid   model         (-30, 0, 10)         none
sub-05    log only (not processed)
========  ===========================  ============  ==================  ====================
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from stroke_lesion_app.core import group_stacks
from stroke_lesion_app.core.group import SpaceOutputs, _space_line, run_group
from stroke_lesion_app.core.group_exports import REGIONAL_COLUMNS
from stroke_lesion_app.core.group_stacks import (
    GROUP_GRIDS,
    StackWriter,
    TemplateGrid,
    grid_header,
    mirror_x,
)
from stroke_lesion_app.core.templates import TEMPLATE_AFFINE, TEMPLATE_SHAPE

SYM, FSL = "MNI152NLin2009aSym", "MNI152NLin6Asym"
FSL_SHAPE = (182, 218, 182)
FSL_AFFINE = np.array([[-1.0, 0, 0, 90], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])
#: TemplateFlow's RAS copy of the same grid (same voxel centres, other storage order).
FSL_RAS_AFFINE = np.array([[1.0, 0, 0, -91], [0, 1, 0, -126], [0, 0, 1, -72], [0, 0, 0, 1]])

PARTICIPANTS = pd.DataFrame({"participant_id": ["sub-01", "sub-02", "sub-03", "sub-04"],
                             "age": ["61", "n/a", "70", "55"], "sex": ["M", "F", "F", "M"],
                             "wab_aq": ["88.5", "42", "n/a", "93.1"]})


def _cube(shape, affine, centre_mm, side) -> np.ndarray:
    """A cube of ``side`` voxels centred on the voxel nearest to ``centre_mm``."""
    data = np.zeros(shape, np.uint8)
    centre = np.rint(nib.affines.apply_affine(np.linalg.inv(affine), centre_mm)).astype(int)
    half = side // 2
    data[tuple(slice(c - half, c + half + 1) for c in centre)] = 1
    return data


def _save(data, affine, path: Path, meta: dict | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(data, affine).to_filename(path)
    if meta is not None:
        path.with_name(path.name.replace(".nii.gz", ".json")).write_text(json.dumps(meta))
    return path


def _meta(space: str, source: str, branch: str, stem: str) -> dict:
    return {"SpatialReference": f"https://templateflow.s3.amazonaws.com/tpl-{space}/x.nii.gz",
            "Type": "Lesion", "LesionSource": source,
            "Normalisation": {"Branch": branch, "Parameters": {}},
            "TransformChain": [f"bids::sub-x/anat/{stem}_from-T1w_to-{space}_xfm.h5"],
            "Interpolation": "genericLabel"}


def _measures(anat: Path, stem: str, source: str | None = None) -> None:
    (anat / f"{stem}_desc-preproc_T1w.nii.gz").write_bytes(b"")
    pd.DataFrame([{"volume_ml": 0.2, "std_volume_ml": 0.125, "left_volume_ml": 0.0,
                   "right_volume_ml": 0.2, "tissue_WM_lesion_percent": 40.0,
                   "tissue_WM_region_percent": 0.01,
                   "atlas-AAL_Precentral_L_lesion_percent": 10.0,
                   "atlas-AAL_Precentral_L_region_percent": 0.5}]).to_csv(
        anat / f"{stem}_label-L_desc-lesionload_stats.tsv", sep="\t", index=False)
    if source:
        (anat / f"{stem}_label-L_desc-lesionload_stats.json").write_text(
            json.dumps({"LesionSource": source}))


def _fake_output(root: Path) -> tuple[Path, Path]:
    """The output folder of the table above and a BIDS folder with participants.tsv."""
    out, bids = root / "out", root / "bids"
    bids.mkdir(parents=True)
    PARTICIPANTS.to_csv(bids / "participants.tsv", sep="\t", index=False)
    right, left = (30.0, 0.0, 10.0), (-30.0, 0.0, 10.0)
    # sub-01: model lesion on the right, both spaces, probabilities
    anat = out / "sub-01" / "anat"
    anat.mkdir(parents=True)
    _measures(anat, "sub-01", "model")
    for space, shape, affine in ((SYM, TEMPLATE_SHAPE, TEMPLATE_AFFINE),
                                 (FSL, FSL_SHAPE, FSL_AFFINE)):
        mask = _cube(shape, affine, right, 5)
        base = f"sub-01_space-{space}_label-L_desc-lesionaware"
        _save(mask, affine, anat / f"{base}_mask.nii.gz",
              _meta(space, "model", "enantiomorphic", "sub-01"))
        _save((0.8 * mask + 0.05).astype(np.float32), affine, anat / f"{base}_probseg.nii.gz")
    # sub-02 ses-1: edited lesion on the left; its probability map is the model's old one
    anat = out / "sub-02" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    _measures(anat, "sub-02_ses-1", "edited")
    for space, shape, affine in ((SYM, TEMPLATE_SHAPE, TEMPLATE_AFFINE),
                                 (FSL, FSL_SHAPE, FSL_RAS_AFFINE)):
        base = f"sub-02_ses-1_space-{space}_label-L_desc-lesionaware"
        _save(_cube(shape, affine, left, 5), affine, anat / f"{base}_mask.nii.gz",
              _meta(space, "edited", "cost-function", "sub-02_ses-1"))
        _save(np.full(shape, 0.5, np.float32), affine, anat / f"{base}_probseg.nii.gz")
    # sub-03: no lesion-aware pass: the segmentation's template-space mask (model)
    anat = out / "sub-03" / "anat"
    anat.mkdir(parents=True)
    _measures(anat, "sub-03")
    (anat / "sub-03_label-L_mask.json").write_text(json.dumps({"Model": {"name": "demo",
                                                                         "version": "1"}}))
    mask = _cube(TEMPLATE_SHAPE, TEMPLATE_AFFINE, left, 3)
    _save(mask, TEMPLATE_AFFINE, anat / f"sub-03_space-{SYM}_label-L_mask.nii.gz")
    _save((0.9 * mask).astype(np.float32), TEMPLATE_AFFINE,
          anat / f"sub-03_space-{SYM}_label-L_probseg.nii.gz")
    # sub-04: a mask on a 2 mm grid
    anat = out / "sub-04" / "anat"
    anat.mkdir(parents=True)
    _measures(anat, "sub-04", "model")
    coarse = np.diag([2.0, 2, 2, 1])
    coarse[:3, 3] = TEMPLATE_AFFINE[:3, 3]
    _save(_cube((99, 117, 95), coarse, left, 3), coarse,
          anat / f"sub-04_space-{SYM}_label-L_desc-lesionaware_mask.nii.gz",
          _meta(SYM, "model", "syn", "sub-04"))
    # sub-05: processing failed
    (out / "sub-05" / "log").mkdir(parents=True)
    return out, bids


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """One group run (flip on, minimum overlap 2) over the fake output folder."""
    out, bids = _fake_output(tmp_path_factory.mktemp("group"))
    written = run_group(out, None, bids_dir=bids, flip_to_left=True, min_overlap=2)
    return out, bids, written


def _tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def _raw_header(path: Path) -> bytes:
    with gzip.open(path, "rb") as stream:
        return stream.read(348)


def _header(path: Path) -> nib.Nifti1Header:
    with gzip.open(path, "rb") as stream:
        return nib.Nifti1Header.from_fileobj(stream)


def _data(path: Path) -> np.ndarray:
    return np.asanyarray(nib.load(path).dataobj)


# --------------------------------------------------------------------------------------------
# Stacks: volumes and headers
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("space", "shape", "affine"), [(SYM, TEMPLATE_SHAPE, TEMPLATE_AFFINE),
                                                        (FSL, FSL_SHAPE, FSL_AFFINE)])
def test_mask_stack_volumes_are_the_masks_on_the_template_header(group, space, shape, affine):
    out, _, written = group
    files = written["spaces"][space]
    stack = nib.load(files["mask_stack"])
    order = _tsv(files["mask_stack_table"])
    assert list(order.columns) == ["volume", "participant_id", "session_id", "run",
                                   "source_file", "lesion_source", "normalisation_branch"]
    assert order["volume"].tolist() == [str(n) for n in range(1, len(order) + 1)]
    expected = {SYM: ["sub-01", "sub-02", "sub-03"], FSL: ["sub-01", "sub-02"]}[space]
    assert order["participant_id"].tolist() == expected
    assert stack.shape == (*shape, len(expected))
    data = np.asanyarray(stack.dataobj)
    for index, row in order.iterrows():
        source = nib.load(out / row["source_file"])
        # TemplateFlow's RAS copy of the NLin6Asym grid is reordered onto FSL's, voxel-exact
        source = nib.as_closest_canonical(source)
        mine = nib.as_closest_canonical(nib.Nifti1Image(data[..., index], stack.affine))
        assert np.array_equal(np.asanyarray(mine.dataobj), np.asanyarray(source.dataobj))
        assert np.allclose(mine.affine, source.affine)
    header = stack.header
    assert header.get_data_dtype() == np.uint8
    assert np.array_equal(header.get_sform(), affine)
    assert np.array_equal(header.get_qform(), affine)
    assert int(header["sform_code"]) == int(header["qform_code"]) == 4
    assert header.get_zooms()[:3] == (1.0, 1.0, 1.0)
    assert header.get_xyzt_units()[0] == "mm"
    assert order.loc[0, "lesion_source"] == "model"
    assert order.loc[1, ["session_id", "lesion_source", "normalisation_branch"]].tolist() == [
        "ses-1", "edited", "cost-function"]
    meta = json.loads(files["mask_stack_json"].read_text())
    assert meta["Volumes"] == len(expected) and meta["Space"] == space
    assert len(meta["TransformChain"]) == len(expected) and "SpatialReference" in meta
    assert meta["Interpolation"] and meta["Description"]


def test_headers_are_byte_identical_on_one_grid(group, tmp_path):
    out, bids, written = group
    files = written["spaces"][SYM]
    stack = _raw_header(files["mask_stack"])
    assert len(stack) == 348
    # the flipped stack has the same N and type: the very same bytes
    assert _raw_header(files["flipped_stack"]) == stack
    # the probability stack differs only in the data type and N
    probseg = _header(files["probseg_stack"])
    probseg.set_data_dtype(np.uint8)
    probseg.set_data_shape(_header(files["mask_stack"]).get_data_shape())
    assert probseg.binaryblock == stack
    # the same stack written again (another run) has the same header bytes
    again = tmp_path / "again"
    shutil.copytree(out, again, ignore=shutil.ignore_patterns("group"))
    rewritten = run_group(again, None, bids_dir=bids, min_overlap=3)
    assert _raw_header(rewritten["spaces"][SYM]["mask_stack"]) == stack
    # and the NLin6Asym stack has the header of its own grid
    fsl = _header(written["spaces"][FSL]["mask_stack"])
    assert fsl.binaryblock == grid_header(GROUP_GRIDS[FSL], np.uint8, 2).binaryblock


# --------------------------------------------------------------------------------------------
# Flip, overlap, probabilities, exclusions
# --------------------------------------------------------------------------------------------
def test_right_lesion_is_flipped_to_the_left_voxel_exact(group):
    _, _, written = group
    files = written["spaces"][SYM]
    order = _tsv(files["flipped_stack_table"])
    assert order["flipped"].tolist() == ["true", "false", "false"]
    flipped, stack = _data(files["flipped_stack"]), _data(files["mask_stack"])
    # sub-01's right cube at x = +30 mirrored is sub-02's left cube at x = -30, voxel for voxel
    assert np.array_equal(flipped[..., 0], stack[..., 1])
    assert np.array_equal(flipped[..., 0], stack[::-1, :, :, 0])
    assert np.array_equal(flipped[..., 1:], stack[..., 1:])
    meta = json.loads(files["flipped_stack_json"].read_text())
    assert meta["Flipped"] == ("flipped so that lesions lie in the left hemisphere, x < 0; "
                               "mirror plane x = 0 mm")
    # NLin6Asym (asymmetric): the mirrored lesion lies at x = -30 mm, on the same grid
    fsl = written["spaces"][FSL]
    mirrored = nib.load(fsl["flipped_stack"])
    lesion = np.argwhere(np.asanyarray(mirrored.dataobj)[..., 0])
    x = nib.affines.apply_affine(mirrored.affine, lesion)[:, 0]
    assert len(lesion) == 125 and np.allclose(sorted(set(x)), [-32, -31, -30, -29, -28])
    assert "asymmetric" in json.loads(fsl["flipped_stack_json"].read_text())["MirrorMethod"]


def test_mirror_on_the_fsl_grid_is_nearest_and_pads():
    grid = GROUP_GRIDS[FSL]
    volume = np.zeros(grid.shape, np.uint8)
    volume[0, 5, 5] = 1       # x = +90 mm: mirror at -90 mm, voxel 180
    volume[181, 6, 6] = 1     # x = -91 mm: mirror at +91 mm, off the grid
    moved = mirror_x(volume, grid)
    assert np.argwhere(moved).tolist() == [[180, 5, 5]]


def test_min_overlap_counts_images(group, tmp_path):
    out, _, written = group
    files = written["spaces"][SYM]
    count = _data(files["count_map"])
    shared = tuple(np.argwhere(count == 2)[0])   # in sub-02's and sub-03's masks, not sub-01's
    assert _data(files["overlap_mask"])[shared] == 1
    meta = json.loads(files["overlap_mask_json"].read_text())
    assert meta["MinimumOverlap"] == 2 and meta["Images"] == 3
    again = tmp_path / "again"
    shutil.copytree(out, again, ignore=shutil.ignore_patterns("group"))
    three = run_group(again, None, min_overlap=3)["spaces"][SYM]
    assert _data(three["overlap_mask"])[shared] == 0
    assert not _data(three["overlap_mask"]).any()
    # asking for more than there are images: N becomes the number of images (3, then 2)
    five = run_group(again, None)["spaces"]
    assert json.loads(five[SYM]["overlap_mask_json"].read_text())["MinimumOverlap"] == 3
    fsl = json.loads(five[FSL]["overlap_mask_json"].read_text())
    assert (fsl["MinimumOverlap"], fsl["RequestedMinimumOverlap"]) == (2, 5)
    assert np.array_equal(nib.load(three["overlap_mask"]).affine, TEMPLATE_AFFINE)


def test_probability_stack_has_model_lesions_only(group):
    _, _, written = group
    files = written["spaces"][SYM]
    order = _tsv(files["probseg_stack_table"])
    assert order["participant_id"].tolist() == ["sub-01", "sub-03"]    # sub-02 was edited
    stack = nib.load(files["probseg_stack"])
    assert stack.get_data_dtype() == np.float32 and stack.shape == (*TEMPLATE_SHAPE, 2)
    assert float(np.asanyarray(stack.dataobj).max()) <= 1.0
    assert ("sub-02 ses-1", SYM, "probabilities") in [item[:3] for item in written["excluded"]]
    excluded = json.loads(files["probseg_stack_json"].read_text())["Excluded"]
    assert [item["image"] for item in excluded] == ["sub-02 ses-1"]
    assert "edited" in excluded[0]["reason"]


def test_wrong_grid_is_excluded_with_its_reason(group):
    _, _, written = group
    reasons = {(image, space): reason for image, space, _, reason in written["excluded"]}
    assert "not on the MNI152NLin2009aSym 1 mm grid" in reasons[("sub-04", SYM)]
    assert "(99, 117, 95)" in reasons[("sub-04", SYM)]
    assert reasons[("sub-05", "all")].startswith("not processed")
    meta = json.loads(written["spaces"][SYM]["mask_stack_json"].read_text())
    assert [item["image"] for item in meta["Excluded"]] == ["sub-04"]
    page = written["report"].read_text()
    assert "sub-04" in page and "not on the MNI152NLin2009aSym 1 mm grid" in page
    cohort = _tsv(written["cohort_table"])
    assert cohort.set_index("participant_id").loc["sub-02", "lesion_source"] == "edited"


# --------------------------------------------------------------------------------------------
# Exports
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("space", [SYM, FSL])
def test_niistat_sheet_and_lesymap_list_name_existing_files(group, space):
    out, bids, written = group
    files = written["spaces"][space]
    sheet = _tsv(files["niistat_sheet"])
    assert files["niistat_sheet"].suffix == ".tab"       # NiiStat's tab-delimited extension
    participants = _tsv(bids / "participants.tsv")
    assert list(sheet.columns[1:]) == list(participants.columns)
    paths = [Path(path) for path in sheet.iloc[:, 0]]
    assert all(path.is_absolute() and path.is_file() for path in paths)
    order = _tsv(files["mask_stack_table"])
    assert [path.resolve() for path in paths] == [
        (out / source).resolve() for source in order["source_file"]]
    assert sheet["participant_id"].tolist() == order["participant_id"].tolist()
    first = participants.set_index("participant_id").loc["sub-01"]
    assert sheet.iloc[0][["age", "sex", "wab_aq"]].tolist() == first[
        ["age", "sex", "wab_aq"]].tolist()
    assert sheet.iloc[1]["age"] == ""                    # n/a → empty cell (NiiStat: missing)
    lines = files["lesymap_list"].read_text().splitlines()
    assert [Path(line) for line in lines] == paths


def test_regional_table_is_long(group):
    _, _, written = group
    table = _tsv(written["regions_table"])
    assert tuple(table.columns) == REGIONAL_COLUMNS
    assert set(table["participant_id"]) == {"sub-01", "sub-02", "sub-03", "sub-04"}
    row = table[(table["participant_id"] == "sub-02") & (table["atlas"] == "AAL")].iloc[0]
    assert row[["session_id", "label"]].tolist() == ["ses-1", "Precentral_L"]
    # 10 % of the 0.125 mL template-space lesion
    assert float(row["lesion_ml"]) == pytest.approx(0.0125)
    assert float(row["pct_region_damaged"]) == 0.5
    assert float(row["pct_lesion_in_region"]) == 10.0
    assert set(table["atlas"]) == {"tissue", "AAL"}


def test_group_page_lists_spaces_regions_and_files(group):
    _, _, written = group
    page = written["report"].read_text()
    assert "MNI152NLin6Asym: 2 image(s) stacked" in page
    assert "Minimum overlap (N = 2)" in page and "figures/desc-minoverlap_figure.png" in page
    assert "Precentral_L" in page and "4 of 4" in page
    for files in written["spaces"].values():
        for path in files.values():
            assert f"href='{path.name}'" in page and path.is_file()
    empty = SpaceOutputs(GROUP_GRIDS[FSL])
    assert _space_line(empty) == ("MNI152NLin6Asym: no maps (the template was not available "
                                  "at the participant level)")


# --------------------------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------------------------
def test_stack_writer_refuses_a_wrong_count(tmp_path):
    grid = TemplateGrid("toy", (2, 3, 4), np.eye(4), "", True)
    path = tmp_path / "stack.nii.gz"
    with pytest.raises(ValueError, match="1 volume"), \
            StackWriter(path, grid_header(grid, np.uint8, volumes=2)) as stack:
        stack.append(np.ones(grid.shape))
    assert not list(tmp_path.iterdir())            # nothing under the name, no temporary file
    with pytest.raises(ValueError, match="shape"), \
            StackWriter(path, grid_header(grid, np.uint8, volumes=1)) as stack:
        stack.append(np.ones((3, 2, 4)))
    assert not list(tmp_path.iterdir())


def test_min_overlap_mask_two_of_three():
    masks = np.zeros((3, 4), np.uint8)
    masks[0, 1] = masks[1, 1] = 1      # voxel 1 in 2 of 3 masks
    count = masks.sum(axis=0)
    assert group_stacks.min_overlap_mask(count, 2)[1] == 1
    assert group_stacks.min_overlap_mask(count, 3)[1] == 0


def test_cli_group_options(group, tmp_path):
    from click.testing import CliRunner

    from stroke_lesion_app.cli.run import cli

    out, bids, _ = group
    again = tmp_path / "out"
    shutil.copytree(out, again, ignore=shutil.ignore_patterns("group"))
    (again / "dataset_description.json").write_text(json.dumps({"Name": "x",
                                                                "BIDSVersion": "1.9.0"}))
    result = CliRunner().invoke(cli, [str(bids), str(again), "group", "--flip-to-left",
                                      "--min-overlap", "3"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    group_dir = again / "group"
    assert (group_dir / f"space-{SYM}_label-L_desc-stackflipped_mask.nii.gz").is_file()
    meta = json.loads((group_dir / f"space-{SYM}_label-L_desc-minoverlap_mask.json").read_text())
    assert meta["MinimumOverlap"] == 3
    sheet = _tsv(group_dir / f"space-{SYM}_label-L_desc-niistat_design.tab")
    assert "wab_aq" in sheet.columns
    result = CliRunner().invoke(cli, [str(bids), str(again), "group", "--min-overlap", "0"])
    assert result.exit_code == 2 and "--min-overlap" in result.output
    # a later run without --flip-to-left removes the flipped stack, whose order could be stale
    run_group(again, None)
    assert not list(group_dir.glob("*desc-stackflipped*"))
    assert (group_dir / f"space-{SYM}_label-L_desc-stack_mask.tsv").is_file()
