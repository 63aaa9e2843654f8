"""``training.commands`` (and the helpers it uses): what ``stroke-lesion-model`` does, no click.

Tiny hand-made inputs: 4×4×4 images, fake trained-model folders whose checkpoints hold a few
numbers, and a fake ``EnsemblePredictor`` (mask = voxels above the image mean), so nothing here
trains, predicts with a network or runs nnU-Net.
"""

from __future__ import annotations

import json
import pickle
from collections import OrderedDict
from typing import ClassVar

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch

from stroke_lesion_app.core import ensemble as core_ensemble
from stroke_lesion_app.core.bundle import BundleError, load_bundle
from stroke_lesion_app.training import commands, nnunet_pipeline
from stroke_lesion_app.training.package import MemberSource, member_identity, package_members
from stroke_lesion_app.training.splits import install_splits
from tests.training.conftest import save_image

SPLITS = [{"train": ["sub-02", "sub-03"], "val": ["sub-01"]},
          {"train": ["sub-01", "sub-03"], "val": ["sub-02"]},
          {"train": ["sub-01", "sub-02"], "val": ["sub-03"]}]


def _data(path):
    return np.asanyarray(nib.load(str(path)).dataobj)


def _trained_folder(root, trainer="StrokeTrainerDefault", folds=(0, 1)):
    """A trained-model folder as nnU-Net leaves it (tiny checkpoints, no network)."""
    folder = root / f"{trainer}__nnUNetPlans__3d_fullres"
    folder.mkdir(parents=True)
    (folder / "plans.json").write_text(json.dumps({"configurations": {"3d_fullres": {}}}))
    (folder / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "lesion": 1}}))
    for fold in folds:
        (folder / f"fold_{fold}").mkdir()
        torch.save({"network_weights": {"w": torch.full((2,), float(fold))},
                    "trainer_name": trainer, "optimizer_state": {"big": torch.zeros(10)}},
                   folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder


class FakePredictor:
    """Stands in for ``EnsemblePredictor``: records its arguments; mask = voxels above mean."""

    made: ClassVar[list] = []

    def __init__(self, bundle, device="cpu", tta=True, step_size=0.5):
        self.bundle = load_bundle(bundle)
        self.args = {"bundle": self.bundle.root, "device": device, "tta": tta,
                     "step_size": step_size}
        self.threshold = self.bundle.threshold
        self.calls = []
        FakePredictor.made.append(self)

    def predict_file(self, in_file, out_probseg, out_mask):
        image = nib.load(str(in_file))
        data = np.asanyarray(image.dataobj)
        save_image(out_probseg, (data > data.mean()).astype(np.float32), image.affine)
        save_image(out_mask, (data > data.mean()).astype(np.uint8), image.affine)
        self.calls.append(in_file.name)


@pytest.fixture
def fake_predictor(monkeypatch):
    FakePredictor.made = []
    monkeypatch.setattr(core_ensemble, "EnsemblePredictor", FakePredictor)
    return FakePredictor


# --------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------
def test_split_labels_writes_and_refuses_overwrite(source, tmp_path):
    out = tmp_path / "splits" / "splits_final.json"
    result = commands.split_labels(source / "labelsTr", out, n_folds=3, seed=1)
    assert result["path"] == out and result["volumes"] == {"sub-01": 4, "sub-02": 8, "sub-03": 12}
    assert json.loads(out.read_text()) == result["splits"]
    assert sorted(case for fold in result["splits"] for case in fold["val"]) == [
        "sub-01", "sub-02", "sub-03"]
    assert isinstance(result["table"], pd.DataFrame) and result["difference"] >= 0
    out.write_text("[]")
    with pytest.raises(FileExistsError, match="--force"):
        commands.split_labels(tmp_path / "nowhere", out, n_folds=3)  # refused before reading
    assert out.read_text() == "[]"
    commands.split_labels(source / "labelsTr", out, n_folds=3, seed=1, overwrite=True)
    assert json.loads(out.read_text()) == result["splits"]  # same seed, same split
    with pytest.raises(ValueError, match="2 cases|3 cases"):
        commands.split_labels(source / "labelsTr", tmp_path / "five.json", n_folds=5)
    assert not (tmp_path / "five.json").exists()


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def test_parse_folds():
    assert commands.parse_folds(("0", "3", "all")) == [0, 3, "all"]
    assert commands.parse_folds(()) == [0, 1, 2, 3, 4]
    assert commands.parse_folds((), n_folds=2) == [0, 1]
    with pytest.raises(ValueError, match=r"--fold takes an integer or 'all', got \('x',\)"):
        commands.parse_folds(("x",))


def test_find_raw_dataset(source, tmp_path):
    assert commands.find_raw_dataset(source.parent, 601) == source
    with pytest.raises(ValueError, match="no Dataset602_\\* under .*convert"):
        commands.find_raw_dataset(source.parent, 602)
    with pytest.raises(ValueError, match="--raw"):
        commands.find_raw_dataset(tmp_path / "nowhere", 601)


def test_install_splits(tmp_path):
    splits_file = tmp_path / "mine.json"
    splits_file.write_text(json.dumps(SPLITS))
    target = tmp_path / "pre" / "Dataset601_Src" / "splits_final.json"
    results = tmp_path / "results" / "Dataset601_Src"
    assert install_splits(splits_file, target, trained_dir=results) == target
    assert target.read_bytes() == splits_file.read_bytes()
    assert sorted(p.name for p in target.parent.iterdir()) == ["splits_final.json"]
    assert install_splits(target, target, trained_dir=results) == target  # itself: a no-op

    other = tmp_path / "other.json"
    other.write_text(json.dumps(SPLITS[::-1]))
    install_splits(other, target, trained_dir=results)  # nothing trained yet: replaced
    assert target.read_bytes() == other.read_bytes()
    (results / "StrokeTrainerDefault__nnUNetPlans__3d_fullres" / "fold_0").mkdir(parents=True)
    with pytest.raises(FileExistsError, match="differs from .* models were already trained on "
                                              "it; use a new WORK_DIR"):
        install_splits(splits_file, target, trained_dir=results)
    assert target.read_bytes() == other.read_bytes()  # untouched
    install_splits(other, target, trained_dir=results)  # the same split: fine


def test_prepare_training(source, tmp_path, monkeypatch):
    planned = []
    monkeypatch.setattr(nnunet_pipeline, "plan_and_preprocess",
                        lambda dataset_id, **kwargs: planned.append((dataset_id, kwargs)))
    folders = {"nnUNet_raw": source.parent, "nnUNet_preprocessed": tmp_path / "pre",
               "nnUNet_results": tmp_path / "res"}
    splits_file = tmp_path / "splits.json"
    splits_file.write_text(json.dumps(SPLITS))
    assert commands.prepare_training(601, folders, plan_preset="tiny", num_processes=1,
                                     splits_file=splits_file) == source
    assert planned == [(601, {"plan_preset": "tiny", "num_processes": 1})]
    installed = tmp_path / "pre" / "Dataset601_Src" / "splits_final.json"
    assert json.loads(installed.read_text()) == SPLITS
    with pytest.raises(ValueError, match="no Dataset602_"):
        commands.prepare_training(602, folders)
    assert len(planned) == 1  # nothing planned for a missing dataset


def test_prepare_training_maps_the_papers_pickle(source, tmp_path, monkeypatch):
    planned = []
    monkeypatch.setattr(nnunet_pipeline, "plan_and_preprocess",
                        lambda dataset_id, **kwargs: planned.append(dataset_id))
    folders = {"nnUNet_raw": source.parent, "nnUNet_preprocessed": tmp_path / "pre",
               "nnUNet_results": tmp_path / "res"}
    stem = "_space-MNI152NLin2009aSym_T1w"  # nnU-Net v1 pickle, ATLAS file stems (the paper's)
    paper = [OrderedDict(train=np.array([case + stem for case in fold["train"]]),
                         val=np.array([case + stem for case in fold["val"]])) for fold in SPLITS]
    pkl = tmp_path / "splits_final.pkl"
    pkl.write_bytes(pickle.dumps(paper))
    commands.prepare_training(601, folders, splits_file=pkl)
    installed = tmp_path / "pre" / "Dataset601_Src" / "splits_final.json"
    assert json.loads(installed.read_text()) == SPLITS and planned == [601]

    paper[1]["val"] = np.array(["sub-09" + stem])  # not a case of Dataset601_Src
    pkl.write_bytes(pickle.dumps(paper))
    with pytest.raises(ValueError, match=f"{pkl}: 1 of its 4 case IDs are not in "
                                         f"{source} \\(first: sub-09{stem};"):
        commands.prepare_training(601, folders, splits_file=pkl)
    assert planned == [601]  # refused before planning


# --------------------------------------------------------------------------------------------
# ensemble
# --------------------------------------------------------------------------------------------
def test_case_name():
    assert commands.case_name("x/sub-01_0000.nii.gz") == "sub-01"
    assert commands.case_name("sub-01.nii") == "sub-01"
    assert commands.case_name("sub-01_0001.nii.gz") == "sub-01_0001"


def test_select_images(source, tmp_path):
    images = source / "imagesTr"
    save_image(images / "sub-04.nii", np.zeros((2, 2, 2), np.float32))
    assert [p.name for p in commands.select_images(images)] == [
        "sub-01_0000.nii.gz", "sub-02_0000.nii.gz", "sub-03_0000.nii.gz", "sub-04.nii"]
    split = tmp_path / "splits.json"
    split.write_text(json.dumps(SPLITS))
    assert [p.name for p in commands.select_images(images, split_file=split, fold=1)] == [
        "sub-02_0000.nii.gz"]
    paper = tmp_path / "splits_final.pkl"  # the paper's: nnU-Net v1 pickle of ATLAS file stems
    paper.write_bytes(pickle.dumps([OrderedDict(
        train=np.array([f"{case}_space-MNI152NLin2009aSym_T1w" for case in fold["train"]]),
        val=np.array([f"{case}_space-MNI152NLin2009aSym_T1w" for case in fold["val"]]))
        for fold in SPLITS]))
    assert [p.name for p in commands.select_images(images, split_file=paper, fold=2)] == [
        "sub-03_0000.nii.gz"]
    with pytest.raises(ValueError, match="has 3 folds; --fold 3 is out of range"):
        commands.select_images(images, split_file=split, fold=3)
    with pytest.raises(ValueError, match="no .nii/.nii.gz images to segment"):
        commands.select_images(source / "imagesTs", split_file=split, fold=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty"):
        commands.select_images(tmp_path / "empty")


def test_refuse_non_empty(tmp_path):
    commands.refuse_non_empty(tmp_path / "new")
    (tmp_path / "new").mkdir()
    commands.refuse_non_empty(tmp_path / "new")
    (tmp_path / "new" / "x").write_text("")
    with pytest.raises(FileExistsError, match="is not empty; choose another folder or pass "
                                              "--force"):
        commands.refuse_non_empty(tmp_path / "new")
    commands.refuse_non_empty(tmp_path / "new", overwrite=True)


def test_package_members_and_identity(source, tmp_path):
    folder = _trained_folder(tmp_path / "results")
    members = [MemberSource("a", folder), MemberSource("b", folder, (1,), 2.0)]
    root = package_members(tmp_path / "tmp" / "bundle", members,
                           reference_image=source / "imagesTs" / "sub-07_0000.nii.gz",
                           threshold=0.3)
    assert root == (tmp_path / "tmp" / "bundle").absolute()
    bundle = load_bundle(root)
    assert (bundle.name, bundle.version, bundle.threshold) == ("ensemble", "0", 0.3)
    assert bundle.resolution_mm == 2.0  # the reference image's voxel size
    assert [(m.name, m.folds, m.weight) for m in bundle.members] == [
        ("a", (0, 1), 1.0), ("b", (1,), 2.0)]
    assert member_identity(members) == {"members": [
        {"name": "a", "folder": str(folder.absolute()), "folds": [0, 1], "weight": 1.0},
        {"name": "b", "folder": str(folder.absolute()), "folds": [1], "weight": 2.0}]}


def test_load_ensemble_and_predict_images(source, tmp_path, fake_predictor):
    folder = _trained_folder(tmp_path / "results")
    images = commands.select_images(source / "imagesTs")
    predictor = commands.load_ensemble(tmp_path / "tmp", members=[f"m={folder}:0"],
                                       reference_image=images[0], device="cpu", tta=False,
                                       step_size=1.0)
    assert predictor.args == {"bundle": (tmp_path / "tmp" / "bundle").absolute(),
                              "device": "cpu", "tta": False, "step_size": 1.0}
    assert predictor.threshold == 0.5 and predictor.bundle.members[0].folds == (0,)
    member_threshold = commands.load_ensemble(tmp_path / "tmp2", members=[f"m={folder}"],
                                              reference_image=images[0], threshold=0.2)
    assert member_threshold.threshold == 0.2  # packaged into the bundle

    bundle = predictor.bundle.root
    assert commands.load_ensemble(tmp_path / "unused", model=bundle).threshold == 0.5
    assert commands.load_ensemble(tmp_path / "unused", model=bundle,
                                  threshold=0.7).threshold == 0.7  # --threshold wins
    assert not (tmp_path / "unused").exists()  # a bundle is used where it is
    with pytest.raises(ValueError, match="NAME=MODEL_FOLDER"):
        commands.load_ensemble(tmp_path / "tmp3", members=["no-equals"],
                               reference_image=images[0])

    out = tmp_path / "pred"
    assert list(commands.predict_images(predictor, images, out)) == ["sub-07", "sub-08"]
    assert predictor.calls == ["sub-07_0000.nii.gz", "sub-08_0000.nii.gz"]
    assert sorted(p.name for p in out.iterdir()) == [
        "probabilities", "sub-07.nii.gz", "sub-08.nii.gz"]
    assert sorted(p.name for p in (out / "probabilities").iterdir()) == [
        "sub-07.nii.gz", "sub-08.nii.gz"]


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------
def test_parse_schemes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    assert commands.parse_schemes((a,), ()) == {"model": [a]}
    assert commands.parse_schemes((a, b), ("Mine",)) == {"Mine": [a, b]}
    assert commands.parse_schemes((), (f"X={a}", f"Y={b}", f"X={b}")) == {"X": [a, b],
                                                                         "Y": [b]}


@pytest.mark.parametrize(("pred_dirs", "schemes", "match"), [
    (("p",), ("a", "b"), "without '=PRED_DIR' 2 times"),
    ((), ("a",), "names the PRED_DIR arguments, but none was given"),
    ((), ("a=",), "no folder after '='"),
    ((), (), "no predictions given"),
    ((), ("bad/name=p",), "scheme name 'bad/name' is invalid"),
])
def test_parse_schemes_refusals(pred_dirs, schemes, match):
    with pytest.raises(ValueError, match=match):
        commands.parse_schemes(pred_dirs, schemes)


def test_evaluation_outputs(tmp_path):
    out = tmp_path / "eval"
    assert [p.name for p in commands.evaluation_outputs(out, ["A"])] == [
        "A_cases.tsv", "A_summary.tsv", "A_summary.md", "dice_vs_volume.png",
        "dice_vs_volume.svg"]
    assert len(commands.evaluation_outputs(out, ["A", "B"])) == 3 + 3 + 2 + 2
    out.mkdir()
    (out / "B_summary.md").write_text("")
    (out / "unrelated.txt").write_text("")
    assert len(commands.evaluation_outputs(out, ["A"])) == 5  # other files do not matter
    with pytest.raises(FileExistsError, match=r"B_summary.md already exists \(1 output file"):
        commands.evaluation_outputs(out, ["A", "B"])
    assert len(commands.evaluation_outputs(out, ["A", "B"], overwrite=True)) == 10
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file; pass a folder"):
        commands.evaluation_outputs(tmp_path / "file", ["A"])


def test_evaluate_schemes(source, tmp_path):
    truth = source / "labelsTr"
    empty = tmp_path / "empty"
    for path in sorted(truth.iterdir()):
        save_image(empty / path.name, np.zeros((4, 4, 4), np.uint8))
    out = tmp_path / "eval"
    folders = {"perfect": [truth], "empty": [empty]}
    paths = commands.evaluation_outputs(out, list(folders))
    frames = commands.evaluate_schemes(folders, truth, out, connectivity=26,
                                       small_lesion_threshold=10)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths)
    assert (frames["perfect"]["dice"] == 1).all() and (frames["empty"]["dice"] == 0).all()
    cases = pd.read_csv(out / "perfect_cases.tsv", sep="\t", index_col="case")
    assert cases.index.tolist() == ["sub-01", "sub-02", "sub-03"]
    assert (cases["connectivity"] == 26).all()
    table = pd.read_csv(out / "comparison.tsv", sep="\t", index_col="scheme")
    assert table.loc["perfect", "n_small"] == 2  # 4 and 8 voxels are < 10
    with pytest.raises(FileExistsError):
        commands.evaluate_schemes(folders, truth, out)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary left


# --------------------------------------------------------------------------------------------
# self-train
# --------------------------------------------------------------------------------------------
def _splits_file(tmp_path, content=SPLITS):
    path = tmp_path / "splits.json"
    path.write_text(json.dumps(content) if not isinstance(content, str) else content)
    return path


def test_selftrain_inputs_defaults(source, tmp_path):
    work = tmp_path / "work"
    installed = work / "nnUNet_preprocessed" / source.name / "splits_final.json"
    installed.parent.mkdir(parents=True)
    installed.write_text(json.dumps(SPLITS))
    inputs = commands.selftrain_inputs(601, work, raw_dir=source.parent)
    assert inputs == commands.SelfTrainInputs(
        source=source, raw_dir=source.parent, name="SrcSelfTrain", splits_file=installed,
        splits=SPLITS, unlabelled_dir=source / "imagesTs", folds=("0", "1", "2"))
    given = commands.selftrain_inputs(601, work, raw_dir=source.parent, new_name="Next",
                                      splits_file=_splits_file(tmp_path), folds=("2", "all"),
                                      unlabelled_dir=tmp_path / "elsewhere")
    assert (given.name, given.folds, given.unlabelled_dir) == (
        "Next", ("2", "all"), tmp_path / "elsewhere")
    # WORK_DIR/nnUNet_raw by default
    with pytest.raises(ValueError, match=f"no Dataset601_\\* under {work / 'nnUNet_raw'}"):
        commands.selftrain_inputs(601, work)


@pytest.mark.parametrize(("content", "folds", "match"), [
    ("{not json", (), "is neither JSON nor a pickle"),
    (SPLITS, ("x",), "--fold is malformed \\(invalid literal"),
    ([{"train": ["sub-01"], "val": ["sub-04"]}], (), "1 of its 2 case IDs are not in"),
    ({"train": []}, (), "is not a list of folds"),
    ([], (), "is not a list of folds"),
    (SPLITS, ("1", "3"), "--fold 3: .* has folds 0-2"),
])
def test_selftrain_inputs_refusals(source, tmp_path, content, folds, match):
    with pytest.raises(ValueError, match=match):
        commands.selftrain_inputs(601, tmp_path, raw_dir=source.parent,
                                  splits_file=_splits_file(tmp_path, content), folds=folds)


def test_selftrain_inputs_needs_the_split(source, tmp_path):
    with pytest.raises(ValueError, match="nnUNet_preprocessed/Dataset601_Src/splits_final.json "
                                         "does not exist; pass the source's split with --splits"):
        commands.selftrain_inputs(601, tmp_path / "work", raw_dir=source.parent)


def test_pseudo_label_model_identity(source, tmp_path):
    folder = _trained_folder(tmp_path / "results")
    root, identity = commands.pseudo_label_model(
        tmp_path / "tmp", unlabelled_dir=source / "imagesTs", members=[f"m={folder}@2"],
        tta=False, step_size=1.0)
    assert root == (tmp_path / "tmp" / "bundle").absolute()
    assert load_bundle(root).resolution_mm == 2.0
    assert identity == {"members": [{"name": "m", "folder": str(folder.absolute()),
                                     "folds": [0, 1], "weight": 2.0}],
                        "threshold": 0.5, "tta": False, "step_size": 1.0}

    same_root, from_bundle = commands.pseudo_label_model(
        tmp_path / "unused", unlabelled_dir=source / "imagesTs", model=root, threshold=0.4)
    assert same_root == root and not (tmp_path / "unused").exists()
    bundle = load_bundle(root)
    assert from_bundle == {**bundle.identity(), "threshold": 0.4, "tta": True,
                           "step_size": 0.5}
    assert commands.pseudo_label_model(tmp_path, unlabelled_dir=source, model=root)[1][
        "threshold"] == bundle.threshold
    with pytest.raises(BundleError):
        commands.pseudo_label_model(tmp_path, unlabelled_dir=source, model=tmp_path / "nope")
    with pytest.raises(ValueError, match="does not exist"):  # the images' grid is needed
        commands.pseudo_label_model(tmp_path / "t2", unlabelled_dir=tmp_path / "nowhere",
                                    members=[f"m={folder}"])


def test_make_pseudo_labelled_dataset_and_reuse(source, tmp_path, fake_predictor):
    folder = _trained_folder(tmp_path / "results")
    work = tmp_path / "work"
    inputs = commands.selftrain_inputs(601, work, raw_dir=source.parent,
                                       splits_file=_splits_file(tmp_path))
    arguments = {"new_dataset_id": 611, "members": [f"m={folder}:0"], "tta": False,
                 "step_size": 1.0, "threshold": 0.6}
    result = commands.make_pseudo_labelled_dataset(inputs, work, **arguments)
    dataset = source.parent / "Dataset611_SrcSelfTrain"
    assert result["dataset_dir"] == dataset.absolute() and result["reused"] is False
    assert result["pseudo_labelled"] == ["pseudo_sub-07", "pseudo_sub-08"]
    [predictor] = fake_predictor.made
    assert predictor.threshold == 0.6 and predictor.args["tta"] is False
    assert predictor.args["step_size"] == 1.0 and predictor.args["device"] == "cpu"
    image = source / "imagesTs" / "sub-07_0000.nii.gz"
    assert np.array_equal(_data(dataset / "labelsTr" / "pseudo_sub-07.nii.gz"),
                          _data(image) > _data(image).mean())
    record = json.loads((dataset / "dataset.json").read_text())[
        "stroke_lesion_app"]["self_training"]
    assert record["model"]["members"][0]["folds"] == [0]
    assert record["model"]["threshold"] == 0.6 and record["model"]["tta"] is False

    again = commands.make_pseudo_labelled_dataset(inputs, work, **arguments)
    assert again["reused"] is True and len(fake_predictor.made) == 1  # nothing predicted
    with pytest.raises(FileExistsError, match="--force"):  # other pseudo-labels: refused
        commands.make_pseudo_labelled_dataset(inputs, work, **{**arguments, "threshold": 0.3})
    (work / "nnUNet_preprocessed" / dataset.name).mkdir(parents=True)
    with pytest.raises(FileExistsError, match="stale"):  # made from the old dataset
        commands.make_pseudo_labelled_dataset(inputs, work, **{**arguments, "threshold": 0.3},
                                              overwrite=True)
    assert len(fake_predictor.made) == 1
