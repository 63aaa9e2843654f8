"""``training.selftrain``: the split extension, the dataset writer and the resume rule.

Hand-made 4×4×4 raw datasets and a fake ensemble (it writes the mask of voxels above the image
mean), so nothing here runs nnU-Net; the chain through the CLI is in ``test_model_chain.py``.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.training.selftrain import (
    LEAK_NOTE,
    PSEUDO_PREFIX,
    find_unlabelled_images,
    make_selftrain_dataset,
    selftrain_splits,
    write_selftrain_dataset,
)
from stroke_lesion_app.training.splits import check_splits
from tests.training.conftest import save_image

SPLITS = [{"train": ["sub-02", "sub-03"], "val": ["sub-01"]},
          {"train": ["sub-01", "sub-03"], "val": ["sub-02"]},
          {"train": ["sub-01", "sub-02"], "val": ["sub-03"]}]
MODEL = {"name": "fake", "version": "1", "path": "/somewhere", "threshold": 0.5}


class FakePredictor:
    """Stands in for ``EnsemblePredictor``: mask = voxels above the image mean."""

    def __init__(self):
        self.calls = []

    def predict_file(self, in_file, out_probseg, out_mask):
        image = nib.load(str(in_file))
        data = np.asanyarray(image.dataobj)
        nib.Nifti1Image((data > data.mean()).astype(np.float32), image.affine).to_filename(
            out_probseg)
        nib.Nifti1Image((data > data.mean()).astype(np.uint8), image.affine).to_filename(
            out_mask)
        self.calls.append(in_file.name)


# --------------------------------------------------------------------------------------------
# splits
# --------------------------------------------------------------------------------------------
def test_selftrain_splits_keep_validation_and_add_pseudo_to_every_training_list():
    pseudo = ["pseudo_b", "pseudo_a"]
    extended = selftrain_splits(SPLITS, pseudo)
    assert len(extended) == len(SPLITS)
    for old, new in zip(SPLITS, extended):
        assert new["val"] == old["val"]  # validation folds exactly the source's
        assert new["train"] == old["train"] + ["pseudo_a", "pseudo_b"]
        assert not set(new["val"]) & set(pseudo)
    check_splits(extended)
    assert SPLITS[0]["train"] == ["sub-02", "sub-03"]  # the input is not modified


@pytest.mark.parametrize(("pseudo", "match"), [
    ([], "no pseudo-labelled case"),
    (["pseudo_a", "pseudo_a"], "twice"),
    (["sub-01"], "already cases"),
])
def test_selftrain_splits_refuses(pseudo, match):
    with pytest.raises(ValueError, match=match):
        selftrain_splits(SPLITS, pseudo)
    with pytest.raises(ValueError, match="validation folds"):
        selftrain_splits([{"train": [], "val": ["a"]}, {"train": [], "val": ["a"]}], ["p"])


# --------------------------------------------------------------------------------------------
# unlabelled images
# --------------------------------------------------------------------------------------------
def test_find_unlabelled_images(source, tmp_path):
    images = find_unlabelled_images(source / "imagesTs")
    assert list(images) == ["sub-07", "sub-08"]
    assert images["sub-07"].name == "sub-07_0000.nii.gz"
    save_image(source / "imagesTs" / "sub-07_0001.nii.gz", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="channel 0001"):
        find_unlabelled_images(source / "imagesTs")
    with pytest.raises(ValueError, match="does not exist"):
        find_unlabelled_images(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .nii"):
        find_unlabelled_images(tmp_path / "empty")


# --------------------------------------------------------------------------------------------
# writer
# --------------------------------------------------------------------------------------------
def _pseudo_labels(source, tmp_path):
    images = find_unlabelled_images(source / "imagesTs")
    masks = {}
    for case, image in images.items():
        data = np.asanyarray(nib.load(str(image)).dataobj)
        masks[case] = save_image(tmp_path / "masks" / f"{case}.nii.gz",
                            (data > 0).astype(np.uint8))
    return images, masks


def test_write_selftrain_dataset(source, tmp_path):
    images, masks = _pseudo_labels(source, tmp_path)
    raw = source.parent
    result = write_selftrain_dataset(source, raw, dataset_id=611, name="SrcSelfTrain",
                                     images=images, masks=masks, splits=SPLITS, model=MODEL,
                                     unlabelled_dir=source / "imagesTs")
    target = raw / "Dataset611_SrcSelfTrain"
    assert result["dataset_dir"] == target
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset601_Src", "Dataset611_SrcSelfTrain"]
    assert sorted(p.name for p in target.iterdir()) == [
        "dataset.json", "imagesTr", "labelsTr", "splits_final.json"]
    pseudo = [f"{PSEUDO_PREFIX}sub-07", f"{PSEUDO_PREFIX}sub-08"]
    cases = sorted(["sub-01", "sub-02", "sub-03", *pseudo])
    assert sorted(p.name for p in (target / "imagesTr").iterdir()) == [
        f"{case}_0000.nii.gz" for case in cases]
    assert sorted(p.name for p in (target / "labelsTr").iterdir()) == [
        f"{case}.nii.gz" for case in cases]
    # labelled cases unchanged, pseudo-labelled ones are the given image and mask
    for case in ("sub-01", "sub-03"):
        assert ((target / "labelsTr" / f"{case}.nii.gz").read_bytes()
                == (source / "labelsTr" / f"{case}.nii.gz").read_bytes())
    assert ((target / "imagesTr" / "pseudo_sub-08_0000.nii.gz").read_bytes()
            == images["sub-08"].read_bytes())
    assert ((target / "labelsTr" / "pseudo_sub-07.nii.gz").read_bytes()
            == masks["sub-07"].read_bytes())

    description = json.loads((target / "dataset.json").read_text())
    assert description["numTraining"] == 5
    assert description["name"] == "Dataset611_SrcSelfTrain"
    assert description["channel_names"] == {"0": "T1w"} and description["file_ending"] == ".nii.gz"
    entry = description["stroke_lesion_app"]
    assert entry["conversion"] == "synthetic" and entry["numTest"] == 0  # source entry kept
    record = entry["self_training"]
    assert record["source_dataset"] == "Dataset601_Src"
    assert record["model"] == MODEL
    assert record["labelled_cases"] == ["sub-01", "sub-02", "sub-03"]
    assert record["pseudo_labelled_cases"] == {"pseudo_sub-07": "sub-07",
                                               "pseudo_sub-08": "sub-08"}
    assert record["note"] == LEAK_NOTE and "all folds" in LEAK_NOTE

    written = json.loads((target / "splits_final.json").read_text())
    assert written == result["splits"] == selftrain_splits(SPLITS, pseudo)
    assert [fold["val"] for fold in written] == [fold["val"] for fold in SPLITS]
    assert all(set(pseudo) <= set(fold["train"]) for fold in written)
    # the source is untouched
    assert json.loads((source / "dataset.json").read_text())["numTraining"] == 3

    with pytest.raises(FileExistsError, match="already exists"):
        write_selftrain_dataset(source, raw, dataset_id=611, name="SrcSelfTrain",
                                images=images, masks=masks, splits=SPLITS, model=MODEL,
                                unlabelled_dir=source / "imagesTs")
    with pytest.raises(FileExistsError, match="611"):  # the id is taken under another name
        write_selftrain_dataset(source, raw, dataset_id=611, name="Other", images=images,
                                masks=masks, splits=SPLITS, model=MODEL,
                                unlabelled_dir=source / "imagesTs")


@pytest.mark.parametrize(("change", "match"), [
    ({"dataset_id": 601}, "own id"),
    ({"splits": [{"train": ["sub-01"], "val": ["sub-09"]},
                 {"train": ["sub-09"], "val": ["sub-01"]}]}, "sub-09"),
    ({"masks": {}}, "pseudo-labels missing"),
])
def test_write_selftrain_dataset_refuses(source, tmp_path, change, match):
    images, masks = _pseudo_labels(source, tmp_path)
    arguments = {"dataset_id": 611, "name": "X", "images": images, "masks": masks,
                 "splits": SPLITS, "model": MODEL, "unlabelled_dir": source / "imagesTs",
                 **change}
    with pytest.raises(ValueError, match=match):
        write_selftrain_dataset(source, source.parent, **arguments)
    assert sorted(p.name for p in source.parent.iterdir()) == ["Dataset601_Src"]


def test_make_selftrain_dataset_predicts_once_and_resumes(source, tmp_path):
    predictor = FakePredictor()
    loads = []

    def load():
        loads.append(1)
        return predictor

    arguments = {"dataset_id": 611, "name": "SrcSelfTrain",
                 "unlabelled_dir": source / "imagesTs", "splits": SPLITS, "model": MODEL,
                 "load_predictor": load}
    first = make_selftrain_dataset(source, source.parent, **arguments)
    assert first["reused"] is False and loads == [1]
    assert predictor.calls == ["sub-07_0000.nii.gz", "sub-08_0000.nii.gz"]
    label = nib.load(first["dataset_dir"] / "labelsTr" / "pseudo_sub-07.nii.gz")
    image = nib.load(first["dataset_dir"] / "imagesTr" / "pseudo_sub-07_0000.nii.gz")
    assert label.get_data_dtype() == np.uint8 and label.shape == image.shape
    assert np.array_equal(np.asanyarray(label.dataobj),
                          np.asanyarray(image.dataobj) > np.asanyarray(image.dataobj).mean())
    # no staging folder left behind
    assert sorted(p.name for p in source.parent.iterdir()) == [
        "Dataset601_Src", "Dataset611_SrcSelfTrain"]

    # same model (moved: the path is not part of its identity), images and split: reused
    moved = {**MODEL, "path": "/elsewhere"}
    again = make_selftrain_dataset(source, source.parent, **{**arguments, "model": moved})
    assert again["reused"] is True and loads == [1]

    other = {**MODEL, "version": "2"}
    with pytest.raises(FileExistsError, match="already exists"):
        make_selftrain_dataset(source, source.parent, **{**arguments, "model": other})
    assert loads == [1]  # refused before predicting
    preprocessed = tmp_path / "work" / "nnUNet_preprocessed" / "Dataset611_SrcSelfTrain"
    preprocessed.mkdir(parents=True)
    with pytest.raises(FileExistsError, match="nnUNet_preprocessed"):  # stale derived data
        make_selftrain_dataset(source, source.parent, **{**arguments, "model": other},
                               overwrite=True, derived=[preprocessed])
    # ... which does not matter when the dataset is reused
    assert make_selftrain_dataset(source, source.parent, **arguments,
                                  derived=[preprocessed])["reused"] is True
    preprocessed.rmdir()
    replaced = make_selftrain_dataset(source, source.parent,
                                      **{**arguments, "model": other}, overwrite=True,
                                      derived=[preprocessed])
    assert replaced["reused"] is False and loads == [1, 1]
    description = json.loads((replaced["dataset_dir"] / "dataset.json").read_text())
    assert description["stroke_lesion_app"]["self_training"]["model"]["version"] == "2"


# --------------------------------------------------------------------------------------------
# command line: refusals before anything is predicted or written
# --------------------------------------------------------------------------------------------
def _cli_error(*args):
    from click.testing import CliRunner

    from stroke_lesion_app.cli.model import cli

    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stroke-lesion-model: error: "), lines
    return lines[0]


def test_self_train_cli_refusals(source, tmp_path):
    raw, work = source.parent, tmp_path / "work"
    splits = tmp_path / "splits.json"
    splits.write_text(json.dumps(SPLITS))
    base = ("self-train", 601, work, "--raw", raw, "--new-dataset-id", 611)
    assert "either --model" in _cli_error(*base, "--scheme", "default")
    assert "either --model" in _cli_error(*base, "--model", "x", "--member", "a=b",
                                          "--scheme", "default")
    assert "--scheme is required" in _cli_error(*base, "--model", "x")
    assert "Dataset602_*" in _cli_error("self-train", 602, work, "--raw", raw,
                                        "--new-dataset-id", 611, "--model", "x", "--no-train")
    missing = _cli_error(*base, "--model", "x", "--no-train")
    assert "nnUNet_preprocessed/Dataset601_Src/splits_final.json" in missing
    assert "--splits" in missing
    assert "--fold 3" in _cli_error(*base, "--model", "x", "--splits", splits, "--scheme",
                                    "default", "--fold", 3)
    assert "x" in _cli_error(*base, "--model", tmp_path / "x", "--splits", splits, "--no-train")
    assert sorted(p.name for p in raw.iterdir()) == ["Dataset601_Src"]  # nothing written


def test_convert_no_bias_correct_is_synthetic_only(tmp_path):
    assert "`convert synthetic` only" in _cli_error("convert", "atlas", tmp_path, tmp_path / "raw",
                                          "--no-bias-correct")
