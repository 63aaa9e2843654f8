"""``stroke-lesion-model`` subcommands through click, ``training.convert`` and ``cli.common``.

The synthetic dataset is made once (2 subjects, ``resolution=3``) and converted on a 4 mm grid
(50×59×48); the ATLAS and template-space trees are hand-made arrays of a few hundred voxels.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from stroke_lesion_app.cli.model import cli
from stroke_lesion_app.synthetic import synthesize_dataset
from stroke_lesion_app.training.convert import (
    TEMPLATE_AFFINE,
    binarise_mask,
    convert_atlas,
    convert_template_space_bids,
    template_grid,
)

SPACE = "MNI152NLin2009aSym"
RESOLUTION = 4


def _run(*args):
    return CliRunner().invoke(cli, [str(arg) for arg in args])


def _one_line_error(result, *needles):
    """The command failed with exit code 2 and one ``stroke-lesion-model: error:`` line."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("stroke-lesion-model: error: "), lines[0]
    for needle in needles:
        assert str(needle) in lines[0], (needle, lines[0])
    return lines[0]


def _data(path):
    return np.asanyarray(nib.load(str(path)).dataobj)


def _save(path, data, affine=TEMPLATE_AFFINE):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(np.asarray(data), affine).to_filename(path)
    return path


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic") / "bids"
    synthesize_dataset(root, n_subjects=2, seed=0, resolution=3)
    return root


@pytest.fixture(scope="module")
def converted(synthetic, tmp_path_factory):
    raw = tmp_path_factory.mktemp("raw")
    result = _run("convert", "synthetic", synthetic, raw, "--dataset-id", 502, "--name",
                  "Synth", "--resolution", RESOLUTION)
    assert result.exit_code == 0, result.output
    assert "2 training and 0 test case(s)" in result.output
    return raw / "Dataset502_Synth"


# --------------------------------------------------------------------------------------------
# convert
# --------------------------------------------------------------------------------------------
def test_convert_synthetic(converted, synthetic):
    description = json.loads((converted / "dataset.json").read_text())
    assert description["channel_names"] == {"0": "T1w"}
    assert description["labels"] == {"background": 0, "lesion": 1}
    assert description["numTraining"] == 2 and description["file_ending"] == ".nii.gz"
    assert description["stroke_lesion_app"]["resolution_mm"] == RESOLUTION
    assert sorted(p.name for p in (converted / "imagesTr").iterdir()) == [
        "sub-01_0000.nii.gz", "sub-02_0000.nii.gz"]
    assert sorted(p.name for p in (converted / "labelsTr").iterdir()) == [
        "sub-01.nii.gz", "sub-02.nii.gz"]
    assert not (converted / "imagesTs").exists()
    shape, affine = template_grid(RESOLUTION)
    assert shape == (50, 59, 48)  # (-98, -134, -72) .. (98, 98, 116) mm every 4 mm
    total = 0
    for case in ("sub-01", "sub-02"):
        image = nib.load(converted / "imagesTr" / f"{case}_0000.nii.gz")
        label = nib.load(converted / "labelsTr" / f"{case}.nii.gz")
        assert image.shape == label.shape == shape
        assert np.allclose(image.affine, affine) and np.allclose(label.affine, affine)
        assert label.get_data_dtype() == np.uint8
        values = np.asanyarray(label.dataobj)
        assert set(np.unique(values)) <= {0, 1}
        assert np.asanyarray(image.dataobj).std() > 0
        # nearest resampling of the 1 mm truth: 4 mm voxel (i, j, k) is 1 mm voxel 4·(i, j, k)
        truth = _data(synthetic / "derivatives/synthetic-truth" / case / "anat"
                      / f"{case}_space-{SPACE}_label-L_mask.nii.gz")
        assert np.array_equal(values, truth[::RESOLUTION, ::RESOLUTION, ::RESOLUTION])
        total += int(values.sum())
    assert total > 0


def test_convert_is_deterministic_and_refuses_overwrite(converted, synthetic):
    raw = converted.parent
    before = {p.name: p.read_bytes() for p in sorted(converted.rglob("*")) if p.is_file()}
    args = ("convert", "synthetic", synthetic, raw, "--dataset-id", 502, "--name", "Synth",
            "--resolution", RESOLUTION)
    _one_line_error(_run(*args), converted, "--force")
    result = _run(*args, "--force")
    assert result.exit_code == 0, result.output
    after = {p.name: p.read_bytes() for p in sorted(converted.rglob("*")) if p.is_file()}
    assert after == before
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset502_Synth"]  # no partial left
    # the same id under another name would confuse nnU-Net
    _one_line_error(_run("convert", "synthetic", synthetic, raw, "--dataset-id", 502, "--name",
                         "Other", "--resolution", RESOLUTION), "Dataset502_Synth", "id")


def _atlas_tree(root):
    """Two training cases (one with a soft 0.999 mask) and one test image, ATLAS v2.0 names."""
    rng = np.random.default_rng(0)
    shape = (6, 7, 5)

    def case(folder, subject, mask):
        anat = root / folder / "R001" / subject / "ses-1" / "anat"
        _save(anat / f"{subject}_ses-1_space-{SPACE}_T1w.nii.gz",
              rng.normal(100, 10, shape).astype(np.float32))
        if mask is not None:
            _save(anat / f"{subject}_ses-1_space-{SPACE}_label-L_desc-T1lesion_mask.nii.gz",
                  mask)

    exact = np.zeros(shape, np.float32)
    exact[1:3, 1:3, 1:3] = 1.0
    exact[4, 4, 3] = 0.4  # below 0.5 in a {0, 1}-max mask: background
    soft = np.zeros(shape, np.float32)
    soft[2:5, 2:5, 1:4] = 0.999
    soft[0, 0, 0] = 1e-6  # interpolation noise below 1e-5: background
    soft[5, 6, 4] = 2e-5  # at or above 1e-5 in a soft mask: lesion
    case("Training", "sub-r001s001", exact)
    case("Training", "sub-r001s002", soft)
    case("Testing", "sub-r001s003", None)
    return root


def test_convert_atlas(tmp_path):
    atlas = _atlas_tree(tmp_path / "ATLAS_2")
    result = _run("convert", "atlas", atlas, tmp_path / "raw")
    assert result.exit_code == 0, result.output
    assert "2 training and 1 test case(s)" in result.output and "1 soft mask" in result.output
    dataset = tmp_path / "raw" / "Dataset501_StrokeLesion"
    description = json.loads((dataset / "dataset.json").read_text())
    assert description["numTraining"] == 2
    assert description["stroke_lesion_app"]["soft_masks_binarised"] == ["sub-r001s002_ses-1"]
    assert sorted(p.name for p in (dataset / "imagesTs").iterdir()) == [
        "sub-r001s003_ses-1_0000.nii.gz"]
    source = next(atlas.rglob(f"sub-r001s001_ses-1_space-{SPACE}_T1w.nii.gz"))
    copied = dataset / "imagesTr" / "sub-r001s001_ses-1_0000.nii.gz"
    assert copied.read_bytes() == source.read_bytes()  # images are copied unchanged

    exact = _data(dataset / "labelsTr" / "sub-r001s001_ses-1.nii.gz")
    soft = _data(dataset / "labelsTr" / "sub-r001s002_ses-1.nii.gz")
    assert exact.dtype == soft.dtype == np.uint8
    assert exact.sum() == 8 and exact[4, 4, 3] == 0
    assert soft.sum() == 27 + 1 and soft[0, 0, 0] == 0 and soft[5, 6, 4] == 1
    assert set(np.unique(soft)) == {0, 1}


def test_train_takes_the_papers_split_of_a_converted_atlas(tmp_path, monkeypatch):
    """README "paper's exact folds": convert atlas, then train --splits splits_final.pkl."""
    import pickle
    from collections import OrderedDict

    from stroke_lesion_app.training import nnunet_pipeline

    planned = []
    monkeypatch.setattr(nnunet_pipeline, "plan_and_preprocess",
                        lambda dataset_id, **kwargs: planned.append(dataset_id))
    assert _run("convert", "atlas", _atlas_tree(tmp_path / "ATLAS_2"), tmp_path / "raw",
                "--dataset-id", 501).exit_code == 0
    stems = [f"sub-r001s00{index}_ses-1_space-{SPACE}_T1w" for index in (1, 2)]
    paper = tmp_path / "splits_final.pkl"  # as the paper publishes it (nnU-Net v1 pickle)
    paper.write_bytes(pickle.dumps([
        OrderedDict(train=np.array(stems[1:]), val=np.array(stems[:1])),
        OrderedDict(train=np.array(stems[:1]), val=np.array(stems[1:]))]))
    train = ("train", 501, tmp_path / "work", "--raw", tmp_path / "raw", "--scheme", "default",
             "--device", "cpu", "--preprocess-only", "--splits", paper)
    result = _run(*train)
    assert result.exit_code == 0, result.output
    installed = (tmp_path / "work" / "nnUNet_preprocessed" / "Dataset501_StrokeLesion"
                 / "splits_final.json")
    assert json.loads(installed.read_text()) == [
        {"train": ["sub-r001s002_ses-1"], "val": ["sub-r001s001_ses-1"]},
        {"train": ["sub-r001s001_ses-1"], "val": ["sub-r001s002_ses-1"]}]

    # the test image is not a training case: refused, one line, before planning
    paper.write_bytes(pickle.dumps([OrderedDict(
        train=np.array(stems), val=np.array([f"sub-r001s003_ses-1_space-{SPACE}_T1w"]))]))
    result = _run(*train)
    assert result.exit_code == 2, result.output
    errors = [line for line in result.output.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("stroke-lesion-model: error: "), errors
    for needle in (f"{paper}: 1 of its 3 case IDs are not in",
                   f"first: sub-r001s003_ses-1_space-{SPACE}_T1w;",
                   "stroke-lesion-model convert atlas"):
        assert needle in errors[0], (needle, errors[0])
    assert planned == [501]


def test_convert_atlas_resampled(tmp_path):
    atlas = _atlas_tree(tmp_path / "ATLAS_2")
    summary = convert_atlas(atlas, tmp_path / "raw", dataset_id=510, name="Coarse",
                            resolution_mm=8)
    shape, affine = template_grid(8)
    label = nib.load(summary["dataset_dir"] / "labelsTr" / "sub-r001s001_ses-1.nii.gz")
    image = nib.load(summary["dataset_dir"] / "imagesTr" / "sub-r001s001_ses-1_0000.nii.gz")
    assert label.shape == image.shape == shape
    assert np.allclose(label.affine, affine) and image.get_data_dtype() == np.float32
    assert set(np.unique(np.asanyarray(label.dataobj))) <= {0, 1}


def test_convert_template_space_bids(tmp_path):
    shape = (5, 6, 4)
    image = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
    mask = np.zeros(shape, np.uint8)
    mask[1:3, 2:4, 1:3] = 1
    bids = tmp_path / "bids"
    _save(bids / "sub-01/anat" / f"sub-01_space-{SPACE}_T1w.nii.gz", image)
    _save(bids / "sub-02/ses-A/anat/sub-02_ses-A_T1w.nii.gz", image)
    masks = tmp_path / "masks"
    _save(masks / "sub-01/anat" / f"sub-01_space-{SPACE}_label-L_desc-manual_mask.nii.gz", mask)
    _save(masks / "sub-01/anat/sub-01_label-L_mask.nii.gz", 1 - mask)  # native: ignored
    summary = convert_template_space_bids(bids, masks, tmp_path / "raw")
    assert summary["training"] == ["sub-01"] and summary["test"] == ["sub-02_ses-A"]
    dataset = summary["dataset_dir"]
    assert np.array_equal(_data(dataset / "labelsTr" / "sub-01.nii.gz"), mask)
    assert (dataset / "imagesTs" / "sub-02_ses-A_0000.nii.gz").is_file()

    _save(masks / "sub-01/anat" / f"sub-01_space-{SPACE}_label-L_desc-manual_mask.nii.gz",
          np.zeros((3, 3, 3), np.uint8))
    with pytest.raises(ValueError, match="not on the grid"):
        convert_template_space_bids(bids, masks, tmp_path / "raw2")
    _save(bids / "sub-03/anat/sub-03_space-MNI152NLin6Asym_T1w.nii.gz", image)
    with pytest.raises(ValueError, match="MNI152NLin6Asym"):
        convert_template_space_bids(bids, masks, tmp_path / "raw3")
    assert not (tmp_path / "raw2" / "Dataset501_StrokeLesion").exists()


def test_binarise_mask_rule():
    assert binarise_mask(np.array([0, 1e-6, 1e-5, 0.5, 0.99998]))[0].tolist() == [0, 0, 1, 1, 1]
    assert binarise_mask(np.array([0, 0.3, 0.99999, 1, 255]))[0].tolist() == [0, 0, 1, 1, 1]
    assert binarise_mask(np.array([0.0, np.nan]))[0].tolist() == [0, 0]


def test_convert_bad_inputs(tmp_path, synthetic):
    missing = tmp_path / "nowhere"
    _one_line_error(_run("convert", "atlas", missing, tmp_path / "raw"), missing)
    _one_line_error(_run("convert", "synthetic", missing, tmp_path / "raw"), missing,
                    "synthesize")
    empty = tmp_path / "empty"
    empty.mkdir()
    _one_line_error(_run("convert", "atlas", empty, tmp_path / "raw"), empty, "T1w")
    _one_line_error(_run("convert", "synthetic", empty, tmp_path / "raw"), "synthetic-truth")
    _one_line_error(_run("convert", "synthetic", synthetic, tmp_path / "raw", "--dataset-id",
                         1000), "1000")
    _one_line_error(_run("convert", "synthetic", synthetic, tmp_path / "raw", "--name",
                         "a b"), "'a b'")
    _one_line_error(_run("convert", "synthetic", synthetic, tmp_path / "raw", "--resolution",
                         0.1), "resolution")
    only_test = tmp_path / "only_test"
    _save(only_test / "sub-r1s1/ses-1/anat" / f"sub-r1s1_ses-1_space-{SPACE}_T1w.nii.gz",
          np.zeros((2, 2, 2), np.float32))
    _one_line_error(_run("convert", "atlas", only_test, tmp_path / "raw"), "lesion mask")
    assert not (tmp_path / "raw").exists() or not any((tmp_path / "raw").iterdir())


# --------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------
def test_split_converted_labels(converted, tmp_path):
    out = tmp_path / "preprocessed" / "splits_final.json"
    result = _run("split", converted / "labelsTr", out, "--folds", 2, "--seed", 0)
    assert result.exit_code == 0, result.output
    assert "n_val" in result.output and "median" in result.output
    splits = json.loads(out.read_text())
    assert len(splits) == 2
    assert sorted(case for fold in splits for case in fold["val"]) == ["sub-01", "sub-02"]
    assert all(set(fold["train"]) | set(fold["val"]) == {"sub-01", "sub-02"} for fold in splits)

    out.write_text("[]")
    _one_line_error(_run("split", converted / "labelsTr", out, "--folds", 2), out, "--force")
    assert out.read_text() == "[]"
    assert _run("split", converted / "labelsTr", out, "--folds", 2, "--force").exit_code == 0
    assert len(json.loads(out.read_text())) == 2
    _one_line_error(_run("split", converted / "labelsTr", tmp_path / "five.json"), "5", "2 cases")


def test_split_five_folds(tmp_path):
    labels = tmp_path / "labelsTr"
    for index in range(7):
        mask = np.zeros((4, 4, 4), np.uint8)
        mask.flat[: index * 3] = 1
        _save(labels / f"sub-{index:02d}.nii.gz", mask)
    out = tmp_path / "splits_final.json"
    result = _run("split", labels, out, "--seed", 3)
    assert result.exit_code == 0, result.output
    splits = json.loads(out.read_text())
    assert len(splits) == 5
    validation = sorted(case for fold in splits for case in fold["val"])
    assert validation == [f"sub-{index:02d}" for index in range(7)]
    assert sorted(len(fold["val"]) for fold in splits) == [1, 1, 1, 2, 2]
    _one_line_error(_run("split", tmp_path / "nothing", tmp_path / "x.json"), "nothing")


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------
@pytest.fixture
def predictions(converted, tmp_path):
    """``perfect``: the truth itself; ``empty``: all-zero masks on the truth grid."""
    perfect, empty = tmp_path / "perfect", tmp_path / "empty"
    shutil.copytree(converted / "labelsTr", perfect)
    for path in sorted(perfect.iterdir()):
        image = nib.load(path)
        _save(empty / path.name, np.zeros(image.shape, np.uint8), image.affine)
    (perfect / "summary.json").write_text("{}")  # nnU-Net's: ignored
    return perfect, empty


def test_evaluate_one_scheme(converted, predictions, tmp_path):
    perfect, _ = predictions
    out = tmp_path / "eval"
    result = _run("evaluate", perfect, "--truth", converted / "labelsTr", "--out", out,
                  "--scheme", "Truth", "--connectivity", 26)
    assert result.exit_code == 0, result.output
    assert "Truth: 2 case(s), Dice 1.000, lesion-wise F1 1.000" in result.output
    assert sorted(p.name for p in out.iterdir()) == [
        "Truth_cases.tsv", "Truth_summary.md", "Truth_summary.tsv", "dice_vs_volume.png",
        "dice_vs_volume.svg"]
    cases = pd.read_csv(out / "Truth_cases.tsv", sep="\t", index_col="case")
    assert cases.index.tolist() == ["sub-01", "sub-02"]
    assert (cases["dice"] == 1).all() and (cases["lesion_f1"] == 1).all()
    assert (cases["connectivity"] == 26).all()
    summary = pd.read_csv(out / "Truth_summary.tsv", sep="\t", index_col="metric")
    assert summary.loc["dice", "all_mean"] == 1.0 and summary.loc["dice", "all_n"] == 2
    assert "1.000 ± 0.000" in (out / "Truth_summary.md").read_text()

    _one_line_error(_run("evaluate", perfect, "--truth", converted / "labelsTr", "--out", out,
                         "--scheme", "Truth"), "already exists", "--force")
    result = _run("evaluate", perfect, "--truth", converted / "labelsTr", "--out", out,
                  "--scheme", "Truth", "--force")
    assert result.exit_code == 0, result.output


def test_evaluate_compares_schemes(converted, predictions, tmp_path):
    perfect, empty = predictions
    out = tmp_path / "eval"
    volumes = {case: int(_data(converted / "labelsTr" / f"{case}.nii.gz").sum())
               for case in ("sub-01", "sub-02")}
    threshold = max(volumes.values())  # the smaller case is "small", the larger is not
    result = _run("evaluate", "--truth", converted / "labelsTr", "--out", out,
                  "--scheme", f"perfect={perfect}", "--scheme", f"empty={empty}",
                  "--small-lesion-threshold", threshold, "--small-lesion-rule", "total")
    assert result.exit_code == 0, result.output
    assert (f"small-lesion subset rule total: subjects whose total truth lesion volume is under "
            f"{threshold} voxels") in result.output
    assert (out / "comparison.tsv").is_file() and (out / "comparison.md").is_file()
    empty_cases = pd.read_csv(out / "empty_cases.tsv", sep="\t", index_col="case")
    lesioned = [case for case, volume in volumes.items() if volume > 0]
    assert (empty_cases.loc[lesioned, "dice"] == 0).all()
    assert (empty_cases.loc[lesioned, "lesion_f1"] == 0).all()
    assert (empty_cases["pred_volume_voxels"] == 0).all()
    table = pd.read_csv(out / "comparison.tsv", sep="\t", index_col="scheme")
    assert table.index.tolist() == ["perfect", "empty"]
    assert table.loc["perfect", "dice_all_mean"] == 1.0
    assert table.loc["empty", "dice_all_mean"] == 0.0
    assert table.loc["perfect", "n_small"] == 1 and table.loc["perfect", "n_all"] == 2
    assert table.loc["perfect", "small_rule"].startswith("total: ")

    # default rule: every lesion component (6-connected) under the threshold
    from scipy import ndimage

    largest = {}
    for case in volumes:
        labels, count = ndimage.label(_data(converted / "labelsTr" / f"{case}.nii.gz") > 0)
        largest[case] = int(np.bincount(labels.ravel())[1:].max()) if count else 0
    result = _run("evaluate", "--truth", converted / "labelsTr", "--out", out,
                  "--scheme", f"perfect={perfect}", "--scheme", f"empty={empty}",
                  "--small-lesion-threshold", threshold, "--force")
    assert result.exit_code == 0, result.output
    assert "small-lesion subset rule components: subjects whose every truth lesion component " \
           f"(6-connected) is under {threshold} voxels" in result.output
    expected = {case: 0 < largest[case] < threshold for case in volumes}
    cases = pd.read_csv(out / "perfect_cases.tsv", sep="\t", index_col="case")
    assert cases["truth_largest_lesion_voxels"].to_dict() == largest
    assert cases["small_subset"].to_dict() == expected
    table = pd.read_csv(out / "comparison.tsv", sep="\t", index_col="scheme")
    assert table.loc["perfect", "n_small"] == sum(expected.values())
    assert (out / "perfect_summary.md").read_text().splitlines()[-1].startswith(
        "small_rule: components: subjects whose every truth lesion component (6-connected)")


def test_evaluate_bad_inputs(converted, predictions, tmp_path):
    perfect, empty = predictions
    truth = converted / "labelsTr"
    out = tmp_path / "eval"
    _one_line_error(_run("evaluate", "--truth", truth, "--out", out), "no predictions")
    _one_line_error(_run("evaluate", perfect, "--truth", tmp_path / "nope", "--out", out),
                    "nope")
    _one_line_error(_run("evaluate", tmp_path / "gone", "--truth", truth, "--out", out), "gone")
    _one_line_error(_run("evaluate", perfect, "--truth", truth, "--out", out, "--scheme", "a",
                         "--scheme", "b"), "bare", )
    _one_line_error(_run("evaluate", "--truth", truth, "--out", out, "--scheme", "a"),
                    "PRED_DIR")
    _one_line_error(_run("evaluate", "--truth", truth, "--out", out, "--scheme",
                         f"bad/name={perfect}"), "bad/name")
    _one_line_error(_run("evaluate", "--truth", truth, "--out", out, "--scheme", "a="), "a=")
    _one_line_error(_run("evaluate", perfect, empty, "--truth", truth, "--out", out),
                    "in both")
    assert not out.exists()


# --------------------------------------------------------------------------------------------
# refusals of train / ensemble before anything runs, and the shared cli.common helpers
# --------------------------------------------------------------------------------------------
def test_train_and_ensemble_refusals(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    images = tmp_path / "images"
    _save(images / "sub-01_0000.nii.gz", np.zeros((2, 2, 2), np.float32))
    _one_line_error(_run("train", 601, tmp_path / "work", "--scheme", "default", "--device",
                         "cpu", "--fold", "x"), "--fold takes an integer or 'all'", "('x',)")
    _one_line_error(_run("train", 601, tmp_path / "work", "--scheme", "default", "--device",
                         "cuda"), "--device cuda", "--device cpu")
    assert not (tmp_path / "work").exists()  # refused before nnU-Net's folders are made
    _one_line_error(_run("ensemble", images, tmp_path / "pred"), "either --model")
    _one_line_error(_run("ensemble", images, tmp_path / "pred", "--model", "x", "--member",
                         "a=b"), "either --model")
    _one_line_error(_run("ensemble", images, tmp_path / "pred", "--model", "x", "--device",
                         "cuda"), "--device cuda")
    split = tmp_path / "splits.json"
    split.write_text(json.dumps([{"train": ["sub-01"], "val": ["sub-02"]}]))
    _one_line_error(_run("ensemble", images, tmp_path / "pred", "--model", "x", "--split",
                         split, "--device", "cpu"), "--split and --fold go together")
    _one_line_error(_run("ensemble", images, tmp_path / "pred", "--model", "x", "--split",
                         split, "--fold", 1, "--device", "cpu"), "1 folds; --fold 1")
    _one_line_error(_run("ensemble", images, tmp_path / "pred", "--model", "x", "--split",
                         split, "--fold", 0, "--device", "cpu"), "no .nii/.nii.gz images",
                    images)
    (tmp_path / "pred").mkdir()
    (tmp_path / "pred" / "old.nii.gz").write_text("")
    _one_line_error(_run("ensemble", images, tmp_path / "pred", "--model", "x", "--device",
                         "cpu"), tmp_path / "pred", "not empty", "--force")
    _one_line_error(_run("ensemble", images, tmp_path / "pred", "--model", tmp_path / "x",
                         "--device", "cpu", "--force"), tmp_path / "x")
    _one_line_error(_run("ensemble", images, tmp_path / "pred2", "--member", "bad",
                         "--device", "cpu"), "NAME=MODEL_FOLDER")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["images", "pred", "splits.json"]


def test_usage_errors_name_their_program(capsys):
    from stroke_lesion_app.cli.common import EXIT_USAGE, ModelUsageError, UsageError

    UsageError("bad input").show()
    ModelUsageError("bad model input").show()
    assert capsys.readouterr().err.splitlines() == [
        "stroke-lesion-app: error: bad input", "stroke-lesion-model: error: bad model input"]
    assert UsageError("x").exit_code == ModelUsageError("x").exit_code == EXIT_USAGE == 2


def test_resolve_device_option(monkeypatch):
    import torch

    from stroke_lesion_app.cli.common import ModelUsageError, UsageError, resolve_device_option

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device_option("cpu") == resolve_device_option("auto") == "cpu"
    with pytest.raises(ModelUsageError, match="--device cuda: no CUDA device") as refused:
        resolve_device_option("cuda", ModelUsageError)
    assert "\n" not in refused.value.format_message()
    with pytest.raises(UsageError, match="unknown"):
        resolve_device_option("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device_option("auto") == resolve_device_option("cuda") == "cuda"


@pytest.mark.parametrize(("verbose", "default", "level"), [
    (0, "WARNING", "WARNING"), (1, "WARNING", "INFO"), (2, "WARNING", "DEBUG"),  # model
    (0, "INFO", "INFO"), (1, "INFO", "INFO"), (3, "INFO", "DEBUG"),  # app
])
def test_setup_logging_levels(verbose, default, level):
    import logging

    from stroke_lesion_app.cli.common import setup_logging

    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    try:
        setup_logging(verbose, getattr(logging, default), quiet=("chatty.library",))
        assert logging.getLevelName(root.level) == level
        assert logging.getLogger("chatty.library").level == logging.WARNING
    finally:
        root.handlers[:] = saved[1]
        root.setLevel(saved[0])
        logging.getLogger("chatty.library").setLevel(logging.NOTSET)


def test_one_line():
    from stroke_lesion_app.cli.common import one_line

    assert one_line(ValueError("a\n  b\tc ")) == "a b c"
