"""The model-side chain through ``stroke-lesion-model``, end to end, on CPU.

synthesize (6 subjects, voxels ×4) → convert synthetic (4 mm grid, no N4) → two subjects become
unlabelled test images → split (2 folds) → train Default without and DTK10 with MSCSA (fold 0,
1 epoch × 2 iterations, ``--plan-preset tiny``) → ensemble of both on the test images →
evaluate against their truth → bundle → self-train (pseudo-labels from the bundle, then 1
epoch) → self-train again (the dataset is reused).

The models learn next to nothing in 2 iterations; the test checks that every step runs and
writes what the next one reads (files, shapes, label values, splits, manifests). 2 min 40 s
on 2 busy CPU cores (load 6), of which self-train (predict, plan, preprocess, train) 70 s.
"""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from click.testing import CliRunner

from stroke_lesion_app.cli.model import cli

pytestmark = [pytest.mark.slow, pytest.mark.integration]

SOURCE, NEW = 601, 611
UNLABELLED = ("sub-05", "sub-06")
TINY_TRAINING = ("--fold", 0, "--plan-preset", "tiny", "--device", "cpu", "--epochs", 1,
                 "--iterations-per-epoch", 2, "--val-iterations", 1, "--no-validation",
                 "--num-processes", 1)
FOLDER = "{trainer}__nnUNetPlans__3d_fullres"


def _run(*args):
    result = CliRunner().invoke(cli, [str(arg) for arg in args])
    assert result.exit_code == 0, (args[0], result.output, result.exception)
    return result.output


def _data(path):
    return np.asanyarray(nib.load(str(path)).dataobj)


@pytest.fixture
def threads():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def test_synthesize_to_self_training(tmp_path, monkeypatch, threads):
    monkeypatch.setenv("nnUNet_compile", "f")
    raw, work = tmp_path / "raw", tmp_path / "work"
    _run("synthesize", tmp_path / "bids", "--subjects", 6, "--resolution", 4, "--seed", 0)
    output = _run("convert", "synthetic", tmp_path / "bids", raw, "--dataset-id", SOURCE,
                  "--name", "Chain", "--resolution", 4, "--no-bias-correct")
    assert "6 training and 0 test case(s)" in output
    source = raw / f"Dataset{SOURCE}_Chain"
    assert json.loads((source / "dataset.json").read_text())[
        "stroke_lesion_app"]["bias_corrected"] is False

    # two subjects lose their labels: the unlabelled images of self-training
    truth = tmp_path / "truth"
    truth.mkdir()
    (source / "imagesTs").mkdir()
    for case in UNLABELLED:
        shutil.move(source / "imagesTr" / f"{case}_0000.nii.gz", source / "imagesTs")
        shutil.move(source / "labelsTr" / f"{case}.nii.gz", truth)
    description = json.loads((source / "dataset.json").read_text())
    (source / "dataset.json").write_text(json.dumps({**description, "numTraining": 4}))

    splits_file = tmp_path / "splits_601.json"
    _run("split", source / "labelsTr", splits_file, "--folds", 2)
    splits = json.loads(splits_file.read_text())

    # ---- two schemes, fold 0 ------------------------------------------------------------
    members = []
    for scheme, mscsa, trainer in (("default", "--no-mscsa", "StrokeTrainerDefault"),
                                   ("dtk10", "--mscsa", "StrokeTrainerDTK10MSCSA")):
        _run("train", SOURCE, work, "--raw", raw, "--scheme", scheme, mscsa, "--splits",
             splits_file, *TINY_TRAINING)
        folder = work / "nnUNet_results" / source.name / FOLDER.format(trainer=trainer)
        assert (folder / "fold_0" / "checkpoint_final.pth").is_file()
        record = json.loads((folder / "fold_0" / "stroke_lesion_app_training.json").read_text())
        assert record["trainer"] == trainer and record["epochs"] == 1
        members.append(f"{scheme}={folder}:0")
    plans = json.loads((work / "nnUNet_preprocessed" / source.name / "nnUNetPlans.json")
                       .read_text())
    assert plans["configurations"]["3d_fullres"]["patch_size"] == [32, 32, 32]
    assert plans["stroke_lesion_app"]["plan_preset"] == "tiny"
    installed = work / "nnUNet_preprocessed" / source.name / "splits_final.json"
    assert json.loads(installed.read_text()) == splits

    # ---- ensemble of both, evaluated against the held-back truth ------------------------
    pred = tmp_path / "pred"
    _run("ensemble", source / "imagesTs", pred, *[f"--member={m}" for m in members],
         "--device", "cpu", "--no-tta", "--step-size", 1)
    for case in UNLABELLED:
        image = nib.load(source / "imagesTs" / f"{case}_0000.nii.gz")
        mask = nib.load(pred / f"{case}.nii.gz")
        probability = _data(pred / "probabilities" / f"{case}.nii.gz")
        assert mask.shape == probability.shape == image.shape
        assert np.allclose(mask.affine, image.affine)
        assert set(np.unique(_data(pred / f"{case}.nii.gz"))) <= {0, 1}
        assert probability.dtype == np.float32
        assert 0 <= probability.min() and probability.max() <= 1
    evaluation = tmp_path / "eval"
    _run("evaluate", pred, "--truth", truth, "--out", evaluation, "--scheme", "Ensemble")
    cases = pd.read_csv(evaluation / "Ensemble_cases.tsv", sep="\t", index_col="case")
    assert cases.index.tolist() == list(UNLABELLED)
    assert cases["dice"].between(0, 1).all()

    # ---- bundle, then self-training from it ---------------------------------------------
    bundle = tmp_path / "bundles" / "chain"
    _run("bundle", bundle, "--name", "chain", "--resolution", 4, "--demo",
         *[f"--member={m}" for m in members])
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert [m["name"] for m in manifest["members"]] == ["default", "dtk10"]

    output = _run("self-train", SOURCE, work, "--raw", raw, "--new-dataset-id", NEW,
                  "--model", bundle, "--no-tta", "--step-size", 1, "--scheme", "default",
                  "--no-mscsa",
                  *TINY_TRAINING)
    assert "4 labelled + 2 pseudo-labelled case(s), 2 folds" in output
    assert "all folds" in output  # the leak is stated
    new = raw / f"Dataset{NEW}_ChainSelfTrain"
    pseudo = [f"pseudo_{case}" for case in UNLABELLED]
    labelled = sorted(p.name[: -len(".nii.gz")] for p in (source / "labelsTr").iterdir())
    description = json.loads((new / "dataset.json").read_text())
    assert description["numTraining"] == 6
    record = description["stroke_lesion_app"]["self_training"]
    assert record["source_dataset"] == source.name
    assert record["labelled_cases"] == labelled
    assert record["pseudo_labelled_cases"] == dict(zip(pseudo, UNLABELLED))
    assert record["model"]["name"] == "chain" and record["model"]["tta"] is False
    assert record["model"]["step_size"] == 1
    assert record["model"]["manifest_sha256"]
    for case, original in zip(pseudo, UNLABELLED):
        label = nib.load(new / "labelsTr" / f"{case}.nii.gz")
        assert label.get_data_dtype() == np.uint8
        assert set(np.unique(np.asanyarray(label.dataobj))) <= {0, 1}
        # the pseudo-label is the bundle's ensemble mask (same members, folds, TTA and step)
        assert np.array_equal(np.asanyarray(label.dataobj), _data(pred / f"{original}.nii.gz"))
        assert ((new / "imagesTr" / f"{case}_0000.nii.gz").read_bytes()
                == (source / "imagesTs" / f"{original}_0000.nii.gz").read_bytes())
    for case in labelled:
        assert ((new / "labelsTr" / f"{case}.nii.gz").read_bytes()
                == (source / "labelsTr" / f"{case}.nii.gz").read_bytes())

    new_splits = json.loads((work / "nnUNet_preprocessed" / new.name / "splits_final.json")
                            .read_text())
    assert new_splits == json.loads((new / "splits_final.json").read_text())
    assert [fold["val"] for fold in new_splits] == [fold["val"] for fold in splits]
    for old, fold in zip(splits, new_splits):
        assert fold["train"] == old["train"] + pseudo
        assert not set(fold["val"]) & set(pseudo)
    fold_dir = work / "nnUNet_results" / new.name / FOLDER.format(
        trainer="StrokeTrainerDefault") / "fold_0"
    assert (fold_dir / "checkpoint_final.pth").is_file()
    checkpoint = torch.load(fold_dir / "checkpoint_final.pth", map_location="cpu",
                            weights_only=False)
    assert checkpoint["trainer_name"] == "StrokeTrainerDefault"
    assert checkpoint["current_epoch"] == 1

    # re-running resumes: same model, images and split → the dataset is reused, not redone
    stamp = (new / "dataset.json").stat().st_mtime_ns
    output = _run("self-train", SOURCE, work, "--raw", raw, "--new-dataset-id", NEW,
                  "--model", bundle, "--no-tta", "--step-size", 1, "--no-train")
    assert f"reused {new}" in output and "--splits" in output
    assert (new / "dataset.json").stat().st_mtime_ns == stamp
