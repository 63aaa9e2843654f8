"""Derivative naming, atomic writing, dataset checks and T1w discovery."""

from __future__ import annotations

import json

import pytest

from stroke_lesion_app.core import bids as bids_core
from stroke_lesion_app.core.fileio import atomic_path


@pytest.mark.parametrize(("entities", "kind", "overrides", "expected"), [
    ({"subject": "01", "session": "1"}, "lesion_mask", {}, "sub-01_ses-1_label-L_mask.nii.gz"),
    ({"subject": "01"}, "std_lesion_probseg", {},
     "sub-01_space-MNI152NLin2009aSym_label-L_probseg.nii.gz"),
    ({"subject": "01"}, "anat2std_xfm", {},
     "sub-01_from-T1w_to-MNI152NLin2009aSym_mode-image_xfm.mat"),
    ({"subject": "01"}, "std2anat_xfm", {"extension": ".h5"},
     "sub-01_from-MNI152NLin2009aSym_to-T1w_mode-image_xfm.h5"),
    ({"subject": "01"}, "t1w_mask", {}, "sub-01_desc-brain_mask.nii.gz"),
    ({"subject": "01", "session": "pre", "acquisition": "mprage", "run": "02"}, "t1w_preproc", {},
     "sub-01_ses-pre_acq-mprage_run-02_desc-preproc_T1w.nii.gz"),
    ({"subject": "01", "task": "rest", "suffix": "bold"}, "lesion_probseg", {},
     "sub-01_label-L_probseg.nii.gz"),
    ({"subject": "01"}, "std_lesion_mask", {"resolution": "2"},
     "sub-01_space-MNI152NLin2009aSym_res-2_label-L_mask.nii.gz"),
    ({"subject": "01"}, "lesion_load", {}, "sub-01_label-L_desc-lesionload_stats.tsv"),
])
def test_derivative_names(entities, kind, overrides, expected):
    assert bids_core.derivative_name(entities, kind, **overrides) == expected


def test_derivative_path_and_errors(tmp_path):
    path = bids_core.derivative_path(tmp_path, {"subject": "01", "session": "1"}, "t1w_mask")
    assert path == tmp_path / "sub-01/ses-1/anat/sub-01_ses-1_desc-brain_mask.nii.gz"
    with pytest.raises(ValueError, match="unknown output kind"):
        bids_core.derivative_name({"subject": "01"}, "nonsense")
    with pytest.raises(ValueError, match="no subject"):
        bids_core.derivative_name({"session": "1"}, "t1w_mask")


def test_every_output_kind_builds_a_unique_name():
    names = {bids_core.derivative_name({"subject": "01"}, kind) for kind in bids_core.OUTPUTS}
    assert len(names) == len(bids_core.OUTPUTS)


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "sub-01" / "out.nii.gz"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            assert tmp.name.endswith(".nii.gz") and tmp.parent == target.parent
            tmp.write_text("partial")
            raise RuntimeError("crash while writing")
    assert list(target.parent.iterdir()) == []
    bids_core.write_json(target.with_suffix(".json"), {"a": 1})
    assert json.loads(target.with_suffix(".json").read_text()) == {"a": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.nii.json"]


def test_dataset_description(tmp_path, bids_root, monkeypatch):
    root = bids_root({"dataset_description.json": {"Name": "Stroke cohort",
                                                   "BIDSVersion": "1.9.0",
                                                   "DatasetDOI": "doi:10.1/xyz"},
                      "sub-01/anat/sub-01_T1w.nii.gz": None})
    monkeypatch.delenv("APPTAINER_CONTAINER", raising=False)
    monkeypatch.delenv("SINGULARITY_CONTAINER", raising=False)
    monkeypatch.setenv("STROKE_LESION_APP_CONTAINER", "docker")
    monkeypatch.setenv("STROKE_LESION_APP_IMAGE", "strokelesion/app:0.1.0")
    out = bids_core.write_dataset_description(tmp_path / "out", root, "9.9.9")
    content = json.loads(out.read_text())
    assert content["DatasetType"] == "derivative"
    assert content["GeneratedBy"][0]["Version"] == "9.9.9"
    assert content["GeneratedBy"][0]["Container"] == {"Type": "docker",
                                                      "Tag": "strokelesion/app:0.1.0"}
    assert content["SourceDatasets"] == [{"DOI": "doi:10.1/xyz", "Name": "Stroke cohort"}]
    assert content["DatasetLinks"] == {"raw": "../bids"}  # relative: moves with the folders
    monkeypatch.delenv("STROKE_LESION_APP_CONTAINER")
    content = bids_core.derivatives_description(root, "1")
    assert "Container" not in content["GeneratedBy"][0]


def test_bidsignore_keeps_the_users_lines(tmp_path, bids_root):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    out = tmp_path / "out"
    out.mkdir()
    (out / ".bidsignore").write_text("mine/\n*.html\n")
    bids_core.write_dataset_description(out, root, "1", model_dir=tmp_path / "models" / "m")
    lines = (out / ".bidsignore").read_text().splitlines()
    assert lines[:2] == ["mine/", "*.html"] and set(bids_core.BIDSIGNORE) <= set(lines)
    assert len(lines) == len(set(lines))
    links = json.loads((out / "dataset_description.json").read_text())["DatasetLinks"]
    assert links == {"raw": "../bids", "model": "../models/m"}
    assert json.loads((out / "dataset_description.json").read_text())["SourceDatasets"] == [
        {"URL": "../bids", "Name": "tiny"}]


@pytest.mark.parametrize(("layout", "message"), [
    ({"dataset_description.json": False, "sub-01/anat/sub-01_T1w.nii.gz": None},
     "dataset_description.json: missing"),
    ({"dataset_description.json": "{not json", "sub-01/anat/sub-01_T1w.nii.gz": None},
     "not valid JSON"),
    ({"dataset_description.json": {"Name": "x"}, "sub-01/anat/sub-01_T1w.nii.gz": None},
     "lacks BIDSVersion"),
    ({"README": "nothing here"}, "no sub-\\* folders"),
])
def test_check_bids_dir_errors(bids_root, layout, message):
    root = bids_root(layout)
    with pytest.raises(bids_core.BIDSInputError, match=message) as info:
        bids_core.check_bids_dir(root)
    assert str(root) in str(info.value) and "\n" not in str(info.value)


def test_check_bids_dir_missing_and_empty(tmp_path):
    with pytest.raises(bids_core.BIDSInputError, match="not found"):
        bids_core.check_bids_dir(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(bids_core.BIDSInputError, match="empty"):
        bids_core.check_bids_dir(tmp_path / "empty")
    # without validation a missing description is accepted
    (tmp_path / "raw" / "sub-01").mkdir(parents=True)
    assert bids_core.check_bids_dir(tmp_path / "raw", validate=False) == tmp_path / "raw"


def test_check_output_dir(bids_root, tmp_path):
    root = bids_root({"sub-01/anat/sub-01_T1w.nii.gz": None})
    for inside in (root, root / "sub-01" / "out", root / "derivatives"):
        with pytest.raises(bids_core.BIDSInputError, match="derivatives"):
            bids_core.check_output_dir(inside, root)
    assert bids_core.check_output_dir(root / "derivatives" / "stroke", root).is_dir()
    assert bids_core.check_output_dir(tmp_path / "out", root).is_dir()


def test_load_filters(tmp_path):
    good = tmp_path / "f.json"
    good.write_text('{"t1w": {"acquisition": "mprage"}, "bold": {}}')
    assert bids_core.load_filters(good) == {"acquisition": "mprage"}
    bad = tmp_path / "bad.json"
    bad.write_text("{oops")
    with pytest.raises(bids_core.BIDSInputError, match="not valid JSON"):
        bids_core.load_filters(bad)
    reserved = tmp_path / "reserved.json"
    reserved.write_text('{"t1w": {"suffix": "T2w"}}')
    with pytest.raises(bids_core.BIDSInputError, match="may not set suffix"):
        bids_core.load_filters(reserved)


@pytest.fixture
def study(bids_root):
    return bids_root({
        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz": None,
        "sub-01/ses-1/anat/sub-01_ses-1_label-lesion_roi.nii.gz": None,
        "sub-01/ses-2/anat/sub-01_ses-2_acq-fast_T1w.nii.gz": None,
        "sub-02/anat/sub-02_run-1_T1w.nii.gz": None,
        "sub-02/anat/sub-02_run-2_T1w.nii.gz": None,
        "sub-02/anat/sub-02_run-2_label-L_mask.nii.gz": None,
        "sub-03/anat/sub-03_T2w.nii.gz": None,
        "sub-04/anat/sub-04_T1w.nii.gz": None,
        "sub-04/anat/sub-04_notbids_T1w.nii.gz": None,
    })


def test_collect_t1w(study):
    layout = bids_core.index_dataset(study)
    found = bids_core.collect_t1w(layout)
    names = [item.name for item in found.inputs]
    # each run is processed on its own; invalid BIDS names are ignored when validating
    assert names == ["sub-01_ses-1", "sub-01_ses-2_acq-fast", "sub-02_run-1", "sub-02_run-2",
                     "sub-04"]
    assert list(found.errors) == ["03"] and "sub-03" in found.errors["03"]
    by_name = {item.name: item for item in found.inputs}
    assert [p.name for p in by_name["sub-01_ses-1"].lesion_masks] == [
        "sub-01_ses-1_label-lesion_roi.nii.gz"]
    assert by_name["sub-01_ses-2_acq-fast"].lesion_masks == []
    assert [p.name for p in by_name["sub-02_run-2"].lesion_masks] == [
        "sub-02_run-2_label-L_mask.nii.gz"]
    assert by_name["sub-02_run-1"].lesion_masks == []
    assert by_name["sub-01_ses-1"].uri == "bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz"


def test_collect_t1w_filters(study):
    layout = bids_core.index_dataset(study)
    found = bids_core.collect_t1w(layout, ["sub-01", "02"], ["ses-2"])
    assert [item.name for item in found.inputs] == ["sub-01_ses-2_acq-fast"]
    assert list(found.errors) == ["02"]
    found = bids_core.collect_t1w(layout, ["01"], filters={"acquisition": "fast"})
    assert [item.name for item in found.inputs] == ["sub-01_ses-2_acq-fast"]
    with pytest.raises(bids_core.BIDSInputError, match="sub-99 not found"):
        bids_core.collect_t1w(layout, ["99"])
