"""Size-balanced cross-validation folds (spec §2.9): disjoint, complete, balanced, seeded."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from stroke_lesion_app.training.splits import (
    check_splits,
    fold_balance,
    lesion_volumes,
    size_balanced_folds,
    write_splits,
)


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
