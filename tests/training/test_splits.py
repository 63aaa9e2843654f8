"""Size-balanced cross-validation folds (spec §2.9): disjoint, complete, balanced, seeded;
and the paper's published ``splits_final.pkl`` (nnU-Net v1, ATLAS file stems as case IDs)."""

from __future__ import annotations

import json
import os
import pickle
from collections import OrderedDict

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.training.splits import (
    case_id,
    check_splits,
    dataset_cases,
    fold_balance,
    install_splits,
    lesion_volumes,
    load_splits,
    map_splits,
    size_balanced_folds,
    write_splits,
)

#: The paper's ATLAS v2.0 file-stem suffix (its splits_final.pkl names cases like this).
PAPER_SUFFIX = "_space-MNI152NLin2009aSym_T1w"


@pytest.fixture(scope="module")
def volumes():
    """50 log-uniform lesion volumes between 100 and 10000 voxels."""
    rng = np.random.default_rng(42)
    return {f"sub-{index:03d}": float(10 ** rng.uniform(2, 4)) for index in range(50)}


def test_folds_are_disjoint_complete_and_complementary(volumes):
    splits = size_balanced_folds(volumes, n_folds=5, seed=0)
    assert len(splits) == 5
    validated = [case for fold in splits for case in fold["val"]]
    assert sorted(validated) == sorted(volumes)  # every case in exactly one val fold
    for fold in splits:
        assert set(fold) == {"train", "val"}
        assert len(fold["val"]) == 10
        assert fold["train"] == sorted(set(volumes) - set(fold["val"]))
        assert fold["val"] == sorted(fold["val"])
    check_splits(splits)


def test_each_fold_takes_one_case_per_volume_block(volumes):
    order = sorted(volumes, key=volumes.get)
    for fold in size_balanced_folds(volumes, n_folds=5, seed=3):
        ranks = sorted(order.index(case) for case in fold["val"])
        assert [rank // 5 for rank in ranks] == list(range(10))


def test_uneven_last_block():
    volumes = {f"c{index}": float(index) for index in range(7)}
    splits = size_balanced_folds(volumes, n_folds=3, seed=1)
    assert sorted(len(fold["val"]) for fold in splits) == [2, 2, 3]
    assert sorted(case for fold in splits for case in fold["val"]) == sorted(volumes)


def test_folds_are_balanced(volumes):
    rng = np.random.default_rng(0)
    cases = sorted(volumes)
    for seed in range(5):
        frame, difference = fold_balance(size_balanced_folds(volumes, seed=seed), volumes)
        assert difference < 0.6, (seed, frame)  # fold medians within 60 % of the median
        shuffled = list(rng.permutation(cases))
        random = [{"val": shuffled[fold::5],
                   "train": [c for c in shuffled if c not in shuffled[fold::5]]}
                  for fold in range(5)]
        assert difference < fold_balance(random, volumes)[1]


def test_fold_balance_by_hand():
    volumes = {"a": 1.0, "b": 2.0, "c": 3.0, "d": 5.0}
    splits = [{"train": ["c", "d"], "val": ["a", "b"]}, {"train": ["a", "b"], "val": ["c", "d"]}]
    frame, difference = fold_balance(splits, volumes)
    assert frame["n_val"].tolist() == [2, 2] and frame["n_train"].tolist() == [2, 2]
    assert frame["median"].tolist() == [1.5, 4.0]
    assert frame["mean"].tolist() == [1.5, 4.0]
    assert frame["q1"].tolist() == [1.25, 3.5] and frame["q3"].tolist() == [1.75, 4.5]
    assert (frame["min"].tolist(), frame["max"].tolist()) == ([1.0, 3.0], [2.0, 5.0])
    assert difference == pytest.approx((4.0 - 1.5) / 2.5)
    with pytest.raises(ValueError, match="no volume"):
        fold_balance(splits, {"a": 1.0})


def test_seed_determines_split(volumes):
    assert size_balanced_folds(volumes, seed=7) == size_balanced_folds(dict(volumes), seed=7)
    assert size_balanced_folds(volumes, seed=0) != size_balanced_folds(volumes, seed=1)


@pytest.mark.parametrize(("n_folds", "message"), [
    (1, "at least 2 folds"), (0, "at least 2 folds"), (4, "exceeds the 3 cases"),
])
def test_bad_fold_counts(n_folds, message):
    with pytest.raises(ValueError, match=message) as error:
        size_balanced_folds({"a": 1.0, "b": 2.0, "c": 3.0}, n_folds=n_folds)
    assert "\n" not in str(error.value)


def test_bad_volumes():
    with pytest.raises(ValueError, match="no cases"):
        size_balanced_folds({})
    with pytest.raises(ValueError, match="invalid case identifier or volume"):
        size_balanced_folds({"a": 1.0, "b": float("nan")}, n_folds=2)
    with pytest.raises(ValueError, match="invalid case identifier or volume"):
        size_balanced_folds({"a": 1.0, "b": -1.0}, n_folds=2)


@pytest.mark.parametrize(("splits", "message"), [
    ([], "empty"),
    ([{"train": ["a"], "val": ["a"]}], "in both train and val"),
    ([{"train": [], "val": ["a"]}, {"train": [], "val": ["a"]}], "validation folds 0 and 1"),
    ([{"train": ["a", "a"], "val": ["b"]}], "twice"),
    ([{"val": ["a"]}], "is not a"),
    ([{"train": "ab", "val": ["c"]}], "list of case identifiers"),
])
def test_check_splits_rejects(splits, message):
    with pytest.raises(ValueError, match=message):
        check_splits(splits)


def test_check_splits_accepts_pseudo_labelled_training_cases():
    check_splits([{"train": ["b", "pseudo"], "val": ["a"]},
                  {"train": ["a", "pseudo"], "val": ["b"]}])


def test_write_splits_is_nnunet_json(volumes, tmp_path):
    splits = size_balanced_folds(volumes)
    path = write_splits(splits, tmp_path / "Dataset100" / "splits_final.json")
    assert json.loads(path.read_text()) == splits
    assert [p.name for p in path.parent.iterdir()] == ["splits_final.json"]  # no temp left
    with pytest.raises(FileExistsError, match="already exists"):
        write_splits(splits, path)
    other = size_balanced_folds(volumes, seed=1)
    write_splits(other, path, overwrite=True)
    assert json.loads(path.read_text()) == other
    with pytest.raises(ValueError, match="in both train and val"):
        write_splits([{"train": ["a"], "val": ["a"]}], tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


def test_lesion_volumes(tmp_path):
    for name, voxels in (("case_a", 3), ("case_b", 0)):
        data = np.zeros((4, 4, 4), np.uint8)
        data.flat[:voxels] = 1
        nib.Nifti1Image(data, np.eye(4)).to_filename(tmp_path / f"{name}.nii.gz")
    (tmp_path / "dataset.json").write_text("{}")
    assert lesion_volumes(tmp_path) == {"case_a": 3, "case_b": 0}
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no"):
        lesion_volumes(tmp_path / "empty")


# --------------------------------------------------------------------------------------------
# The paper's splits_final.pkl: nnU-Net v1 pickle, ATLAS file stems as identifiers
# --------------------------------------------------------------------------------------------
#: ``convert atlas`` identifiers of a small synthetic "ATLAS" dataset (3 folds of 2).
OURS = [f"sub-r00{site}s00{index}_ses-1" for site in (1, 2) for index in (1, 2, 3)]


def _paper_style(cases, n_folds=3):
    """Folds as nnU-Net v1 pickles them: OrderedDicts of numpy '<U..' arrays, paper stems."""
    stems = np.array([case + PAPER_SUFFIX for case in cases])
    folds = np.array_split(np.arange(len(cases)), n_folds)
    return [OrderedDict(train=stems[np.setdiff1d(np.arange(len(cases)), val)], val=stems[val])
            for val in folds]


def _labels_dataset(root, cases):
    """A raw dataset folder whose ``labelsTr`` holds an empty mask per case."""
    (root / "labelsTr").mkdir(parents=True)
    for case in cases:
        nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)).to_filename(
            root / "labelsTr" / f"{case}.nii.gz")
    return root


def test_case_id_reduces_paper_stems():
    assert case_id("sub-r001s004_ses-1" + PAPER_SUFFIX) == "sub-r001s004_ses-1"
    assert case_id("sub-r001s004_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz") == (
        "sub-r001s004_ses-1")
    assert case_id("sub-r001s004_ses-1_0000.nii.gz") == "sub-r001s004_ses-1"
    assert case_id("sub-01_T1w") == "sub-01"
    for unchanged in ("sub-r001s004_ses-1", "sub-01", "pseudo_sub-01_ses-1", "case_7", "c0"):
        assert case_id(unchanged) == unchanged


def test_load_splits_reads_the_paper_pickle_and_json(tmp_path):
    paper = tmp_path / "splits_final.pkl"
    paper.write_bytes(pickle.dumps(_paper_style(OURS)))
    splits = load_splits(paper)
    assert len(splits) == 3 and splits[0]["val"] == [OURS[0] + PAPER_SUFFIX, OURS[1] + PAPER_SUFFIX]
    assert all(type(case) is str for fold in splits for key in fold for case in fold[key])
    ours = tmp_path / "splits_final.json"
    ours.write_text(json.dumps(map_splits(splits, OURS)))
    assert load_splits(ours)[0] == {"train": OURS[2:], "val": OURS[:2]}


@pytest.mark.parametrize(("content", "message"), [
    (b"{not json", "is neither JSON nor a pickle"),
    (json.dumps({"train": [], "val": []}).encode(), "is not a list of folds"),
    (json.dumps([{"train": "sub-01", "val": []}]).encode(), "is not a list of folds"),
    (json.dumps([]).encode(), "is not a list of folds"),
    (pickle.dumps([{"train": [1], "val": []}]), "must be a list of case identifiers"),
    (pickle.dumps([{"train": ["a"], "val": ["a"]}]), "in both train and val"),
    (pickle.dumps([{"train": [], "val": [os.getcwd]}]), "posix.getcwd|nt.getcwd"),
])
def test_load_splits_refusals(tmp_path, content, message):
    path = tmp_path / "bad.pkl"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as error:
        load_splits(path)
    assert str(error.value).startswith(f"split file {path}") and "\n" not in str(error.value)
    with pytest.raises(ValueError, match="missing.pkl is unreadable .*; pass nnU-Net's "
                                         "splits_final.json or the paper's splits_final.pkl"):
        load_splits(tmp_path / "missing.pkl")


def test_map_splits_maps_paper_stems_and_pseudo_cases():
    paper = [{key: list(fold[key]) for key in fold} for fold in _paper_style(OURS)]
    mapped = map_splits(paper, OURS)
    assert mapped[0] == {"train": OURS[2:], "val": OURS[:2]}
    assert sorted(case for fold in mapped for case in fold["val"]) == sorted(OURS)
    assert map_splits(mapped, OURS) == mapped  # our own identifiers: unchanged
    # the paper's self-training split (splits_final_2.pkl): test images added to training
    extra = "sub-r009s001_ses-1" + PAPER_SUFFIX
    with_pseudo = [{"train": fold["train"] + [extra], "val": fold["val"]} for fold in paper]
    mapped = map_splits(with_pseudo, [*OURS, "pseudo_sub-r009s001_ses-1"])
    assert all(fold["train"][-1] == "pseudo_sub-r009s001_ses-1" for fold in mapped)


def test_map_splits_names_missing_cases_and_the_fix():
    paper = [{key: list(fold[key]) for key in fold} for fold in _paper_style(OURS)]
    with pytest.raises(ValueError) as error:
        map_splits(paper, OURS[1:5], source="paper.pkl", dataset="raw/Dataset501_StrokeLesion")
    message = str(error.value)
    assert message.startswith("paper.pkl: 2 of its 6 case IDs are not in "
                              "raw/Dataset501_StrokeLesion (first: sub-r001s001_ses-1" + PAPER_SUFFIX)
    assert f"sub-r001s001_ses-1{PAPER_SUFFIX}, sub-r002s003_ses-1{PAPER_SUFFIX}; " in message
    assert "the dataset has e.g. sub-r001s002_ses-1" in message
    assert "stroke-lesion-model convert atlas" in message and "\n" not in message
    collide = [{"train": ["sub-r001s001_ses-1"], "val": ["sub-r001s001_ses-1" + PAPER_SUFFIX]}]
    with pytest.raises(ValueError, match="in both train and val"):
        map_splits(collide, OURS)


def test_install_paper_pickle_maps_and_checks(tmp_path):
    dataset = _labels_dataset(tmp_path / "raw" / "Dataset501_StrokeLesion", OURS)
    assert dataset_cases(dataset) == set(OURS)
    paper = tmp_path / "splits_final.pkl"
    paper.write_bytes(pickle.dumps(_paper_style(OURS)))
    target = tmp_path / "pre" / "Dataset501_StrokeLesion" / "splits_final.json"
    install_splits(paper, target, dataset_dir=dataset)
    installed = json.loads(target.read_text())
    assert installed == map_splits(load_splits(paper), OURS)
    assert installed[2] == {"train": OURS[:4], "val": OURS[4:]}

    (dataset / "labelsTr" / f"{OURS[-1]}.nii.gz").unlink()
    target.unlink()
    with pytest.raises(ValueError, match=f"{paper}: 1 of its 6 case IDs are not in {dataset} "
                                         f"\\(first: {OURS[-1]}{PAPER_SUFFIX};"):
        install_splits(paper, target, dataset_dir=dataset)
    assert not target.exists()
    with pytest.raises(ValueError, match="holds no .nii/.nii.gz label"):
        dataset_cases(tmp_path)
