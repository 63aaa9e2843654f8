"""Evaluation metrics (spec §2.10-2.11) on tiny masks with hand-computed answers."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from stroke_lesion_app.training import evaluate
from stroke_lesion_app.training.evaluate import (
    compare_schemes,
    dice,
    evaluate_case,
    evaluate_folder,
    lesion_count_difference,
    lesion_wise_scores,
    plot_dice_vs_volume,
    precision,
    recall,
    small_lesion_mask,
    small_lesion_rule,
    summarise,
    volume_difference,
    write_table,
)


def _empty(shape=(6, 6, 6)):
    return np.zeros(shape, bool)


def _with(shape, *slices):
    mask = _empty(shape)
    for index in slices:
        mask[index] = True
    return mask


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------
def test_both_empty_is_perfect():
    empty = _empty()
    scores = lesion_wise_scores(empty, empty)
    assert dice(empty, empty) == 1.0
    assert precision(empty, empty) == recall(empty, empty) == 1.0
    assert (scores["f1"], scores["precision"], scores["recall"]) == (1.0, 1.0, 1.0)
    assert (scores["tp"], scores["fp"], scores["fn"], scores["n_truth"]) == (0, 0, 0, 0)
    assert all(bin_["f1"] == 1.0 for bin_ in scores["bins"].values())
    assert volume_difference(empty, empty).voxels == 0
    assert lesion_count_difference(empty, empty) == 0


def test_empty_prediction():
    truth = _with((6, 6, 6), np.s_[1:3, 1:3, 1:3])
    scores = lesion_wise_scores(_empty(), truth)
    assert dice(_empty(), truth) == 0.0
    assert precision(_empty(), truth) == 1.0  # the paper's zero_division=1.0
    assert recall(_empty(), truth) == 0.0
    # TP 0, FN 1: F1 = 0 / (0 + 1/2); no predicted component → precision is the empty value
    assert (scores["tp"], scores["fn"], scores["fp"]) == (0, 1, 0)
    assert (scores["f1"], scores["precision"], scores["recall"]) == (0.0, 1.0, 0.0)


def test_empty_truth():
    pred = _with((6, 6, 6), np.s_[1:3, 1:3, 1:3])
    scores = lesion_wise_scores(pred, _empty())
    assert dice(pred, _empty()) == 0.0
    assert precision(pred, _empty()) == 0.0
    assert recall(pred, _empty()) == 1.0
    assert (scores["tp"], scores["fn"], scores["fp"], scores["tp_pred"]) == (0, 0, 1, 0)
    assert (scores["f1"], scores["precision"], scores["recall"]) == (0.0, 0.0, 1.0)


def test_face_touching_lesions_are_one_component():
    truth = _with((6, 6, 6), np.s_[0:2, 0:2, 0:2], np.s_[2:4, 0:2, 0:2])  # share the x=1|2 face
    assert lesion_wise_scores(truth, truth)["n_truth"] == 1
    two = _with((6, 6, 6), np.s_[0:2, 0:2, 0:2], np.s_[3:5, 0:2, 0:2])  # one empty plane apart
    assert lesion_wise_scores(two, truth)["n_pred"] == 2
    assert lesion_count_difference(two, truth) == 1


@pytest.mark.parametrize(("connectivity", "components"), [(6, 2), (18, 2), (26, 1)])
def test_corner_contact_depends_on_connectivity(connectivity, components):
    truth = _with((4, 4, 4), (1, 1, 1), (2, 2, 2))
    scores = lesion_wise_scores(truth, truth, connectivity=connectivity)
    assert scores["connectivity"] == connectivity
    assert scores["n_truth"] == scores["n_pred"] == scores["tp"] == components


def test_edge_contact_is_one_component_from_18():
    truth = _with((4, 4, 4), (1, 1, 1), (2, 2, 1))
    assert lesion_wise_scores(truth, truth, connectivity=6)["n_truth"] == 2
    assert lesion_wise_scores(truth, truth, connectivity=18)["n_truth"] == 1


def test_default_connectivity_is_scipy_default():
    from scipy import ndimage

    truth = _with((4, 4, 4), (1, 1, 1), (2, 2, 2), (2, 2, 1))
    assert lesion_wise_scores(truth, truth)["n_truth"] == ndimage.label(truth)[1] == 2


def test_prediction_covering_two_truth_lesions():
    truth = _with((5, 5, 9), (2, 2, 2), (2, 2, 6))
    pred = _with((5, 5, 9), np.s_[2, 2, 2:7])  # 5 voxels bridging both
    scores = lesion_wise_scores(pred, truth)
    assert (scores["tp"], scores["fn"], scores["fp"], scores["tp_pred"]) == (2, 0, 0, 1)
    assert (scores["f1"], scores["precision"], scores["recall"]) == (1.0, 1.0, 1.0)
    assert dice(pred, truth) == pytest.approx(2 * 2 / (5 + 2))
    assert precision(pred, truth) == pytest.approx(2 / 5)
    assert recall(pred, truth) == 1.0
    assert lesion_count_difference(pred, truth) == 1


def test_false_positive_far_away():
    truth = _with((10, 10, 10), np.s_[1:3, 1:3, 1:3])  # 8 voxels
    pred = truth.copy()
    pred[8, 8, 8] = True
    scores = lesion_wise_scores(pred, truth)
    assert (scores["tp"], scores["fn"], scores["fp"], scores["tp_pred"]) == (1, 0, 1, 1)
    assert scores["f1"] == pytest.approx(1 / (1 + 0.5))
    assert scores["precision"] == 0.5
    assert scores["recall"] == 1.0
    assert dice(pred, truth) == pytest.approx(16 / 17)
    assert scores["bins"]["lt100"]["fp"] == 1


def test_size_bins():
    shape = (30, 62, 22)
    big = np.s_[0:25, 0:20, 0:20]      # 10000 voxels → ge10000, missed
    thousand = np.s_[0:10, 22:32, 0:10]  # 1000 → 1000to9999, found
    hundred = np.s_[0:10, 34:44, 0]    # 100 → 100to999, missed
    small = np.s_[12:21, 34:45, 0]     # 99 → lt100, found
    false = np.s_[0:15, 50:60, 5]      # 150 predicted, no truth → FP in 100to999
    truth = _with(shape, big, thousand, hundred, small)
    pred = _with(shape, thousand, small, false)
    scores = lesion_wise_scores(pred, truth)
    assert scores["n_truth"] == 4 and scores["n_pred"] == 3
    assert (scores["tp"], scores["fn"], scores["fp"], scores["tp_pred"]) == (2, 2, 1, 2)
    assert scores["f1"] == pytest.approx(2 / (2 + 1.5))
    assert scores["precision"] == pytest.approx(2 / 3)
    assert scores["recall"] == 0.5
    bins = scores["bins"]
    assert list(bins) == ["lt100", "100to999", "1000to9999", "ge10000"]
    assert {k: bins["lt100"][k] for k in ("tp", "fn", "fp", "tp_pred")} == dict(
        tp=1, fn=0, fp=0, tp_pred=1)
    assert {k: bins["100to999"][k] for k in ("tp", "fn", "fp", "tp_pred")} == dict(
        tp=0, fn=1, fp=1, tp_pred=0)
    assert (bins["100to999"]["f1"], bins["100to999"]["precision"]) == (0.0, 0.0)
    assert (bins["1000to9999"]["tp"], bins["1000to9999"]["f1"]) == (1, 1.0)
    ge = bins["ge10000"]
    assert (ge["fn"], ge["f1"], ge["precision"], ge["recall"]) == (1, 0.0, 1.0, 0.0)


def test_volume_difference_anisotropic_ml():
    pred = _with((5, 5, 5), np.s_[0:2, 0:5, 0])     # 10 voxels
    truth = _with((5, 5, 5), np.s_[0:2, 0:2, 4])    # 4 voxels
    difference = volume_difference(pred, truth, zooms=(1.0, 2.0, 3.0))  # 6 mm³ per voxel
    assert difference.voxels == 6
    assert difference.ml == pytest.approx(6 * 6 / 1000)
    assert math.isnan(volume_difference(pred, truth).ml)


def test_bad_arguments_raise_one_line_errors():
    with pytest.raises(ValueError, match="differs from truth shape") as error:
        dice(np.zeros((2, 2, 2)), np.zeros((2, 2, 3)))
    assert "\n" not in str(error.value)
    with pytest.raises(ValueError, match="connectivity 8 unknown"):
        lesion_wise_scores(_empty(), _empty(), connectivity=8)
    with pytest.raises(ValueError, match="3D masks"):
        lesion_wise_scores(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="voxel sizes"):
        volume_difference(_empty(), _empty(), zooms=(1.0, 1.0))


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------
SHAPE = (8, 8, 8)
ZOOMS = (1.0, 1.0, 2.0)


def _save(path, mask, dtype=np.uint8, affine=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*ZOOMS, 1.0]) if affine is None else affine
    nib.Nifti1Image(np.asarray(mask, dtype=dtype), affine).to_filename(path)
    return path


@pytest.fixture
def pairs(tmp_path):
    """3 cases: perfect (8 voxels), empty prediction (1 voxel), half of a 16-voxel slab found."""
    pred_dir, truth_dir = tmp_path / "pred", tmp_path / "truth"
    cube = _with(SHAPE, np.s_[1:3, 1:3, 1:3])
    _save(pred_dir / "case_a.nii.gz", cube * 2)  # any nonzero label counts
    _save(truth_dir / "case_a.nii.gz", cube)
    _save(pred_dir / "case_b.nii.gz", _empty(SHAPE))
    _save(truth_dir / "case_b.nii.gz", _with(SHAPE, (4, 4, 4)))
    slab = _with(SHAPE, np.s_[0:4, 0:4, 5])      # 16 voxels
    _save(pred_dir / "case_c.nii.gz", _with(SHAPE, np.s_[0:2, 0:4, 5]))  # 8 of them
    _save(truth_dir / "case_c.nii.gz", slab * 0.9, dtype=np.float32)  # > 0.5 binarises
    (pred_dir / "summary.json").write_text("{}")  # nnU-Net's summary: ignored
    return pred_dir, truth_dir


def test_evaluate_folder(pairs):
    pred_dir, truth_dir = pairs
    frame = evaluate_folder(pred_dir, truth_dir)
    assert list(frame.index) == ["case_a", "case_b", "case_c"]
    assert frame.index.name == "case"
    assert frame["dice"].tolist() == pytest.approx([1.0, 0.0, 2 * 8 / 24])
    assert frame["lesion_f1"].tolist() == [1.0, 0.0, 1.0]
    assert frame["truth_volume_voxels"].tolist() == [8, 1, 16]
    assert frame["truth_volume_ml"].tolist() == pytest.approx([0.016, 0.002, 0.032])
    assert frame["volume_difference_ml"].tolist() == pytest.approx([0.0, 0.002, 0.016])
    assert frame["connectivity"].unique().tolist() == [6]
    assert frame["truth_largest_lesion_voxels"].tolist() == [8, 1, 16]
    for column in ("precision_voxel", "recall_voxel", "lesion_count_difference",
                   "lesion_recall_lt100", "lesion_tp_ge10000", "pred_lesions"):
        assert column in frame.columns
    single = evaluate_case(pred_dir / "case_c.nii.gz", truth_dir / "case_c.nii.gz")
    assert single == frame.loc["case_c"].to_dict()


def test_evaluate_folder_pools_folds_and_rejects_duplicates(pairs, tmp_path):
    pred_dir, truth_dir = pairs
    other = tmp_path / "fold_1"
    _save(other / "case_d.nii.gz", _empty(SHAPE))
    _save(truth_dir / "case_d.nii.gz", _empty(SHAPE))
    frame = evaluate_folder([pred_dir, other], truth_dir)
    assert list(frame.index) == ["case_a", "case_b", "case_c", "case_d"]
    assert frame.loc["case_d", "dice"] == 1.0
    _save(other / "case_a.nii.gz", _empty(SHAPE))
    with pytest.raises(ValueError, match="'case_a' is in both"):
        evaluate_folder([pred_dir, other], truth_dir)


def test_evaluate_errors_name_both_files(pairs, tmp_path):
    pred_dir, truth_dir = pairs
    shifted = np.diag([*ZOOMS, 1.0])
    shifted[0, 3] = 5.0
    bad = _save(tmp_path / "bad" / "case_a.nii.gz", _empty(SHAPE), affine=shifted)
    with pytest.raises(ValueError) as error:
        evaluate_case(bad, truth_dir / "case_a.nii.gz")
    message = str(error.value)
    assert str(bad) in message and str(truth_dir / "case_a.nii.gz") in message
    assert "\n" not in message
    _save(tmp_path / "lonely" / "case_z.nii.gz", _empty(SHAPE))
    with pytest.raises(ValueError, match="no truth case_z.nii.gz"):
        evaluate_folder(tmp_path / "lonely", truth_dir)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .nii"):
        evaluate_folder(tmp_path / "empty", truth_dir)


# --------------------------------------------------------------------------------------------
# Summaries, tables, figure
# --------------------------------------------------------------------------------------------
def _frame(dice_values, f1_values, volumes, largest=None):
    """Per-case metrics; ``largest`` (largest truth component) defaults to the volume (one
    lesion per subject)."""
    return pd.DataFrame({"dice": dice_values, "lesion_f1": f1_values,
                         "truth_volume_voxels": volumes,
                         "truth_largest_lesion_voxels": volumes if largest is None else largest,
                         "connectivity": 6},
                        index=pd.Index([f"c{i}" for i in range(len(volumes))], name="case"))


def test_small_lesion_rules_differ(tmp_path):
    """Every component < 1000 (default, the paper's text) vs total volume < 1000."""
    truth = _empty((30, 30, 30))
    truth[0:9, 0:10, 0:10] = True   # 900 voxels
    truth[20:29, 0:10, 0:10] = True  # another 900, not touching: total 1800
    path = _save(tmp_path / "two_lesions.nii.gz", truth)
    row = evaluate_case(path, path)
    assert (row["truth_volume_voxels"], row["truth_largest_lesion_voxels"]) == (1800, 900)
    # c0: two 900-voxel lesions; c1: one 1200; c2: one 600; c3: none
    frame = _frame([0.1, 0.5, 0.9, 1.0], [0.2, 0.6, 1.0, 1.0], [1800, 1200, 600, 0],
                   largest=[900, 1200, 600, 0])
    assert small_lesion_mask(frame).tolist() == [True, False, True, False]
    assert small_lesion_mask(frame, rule="components").tolist() == [True, False, True, False]
    assert small_lesion_mask(frame, rule="total").tolist() == [False, False, True, False]
    assert small_lesion_mask(frame, 1300, rule="total").tolist() == [False, True, True, False]
    by_components, by_total = summarise(frame), summarise(frame, rule="total")
    assert by_components.loc["dice", "small_n"] == 2
    assert by_components.loc["dice", "small_mean"] == pytest.approx(0.5)
    assert by_total.loc["dice", "small_n"] == 1 and by_total.loc["dice", "small_mean"] == 0.9
    assert set(by_components["small_rule"]) == {(
        "components: subjects whose every truth lesion component (6-connected) is under 1000 "
        "voxels")}
    assert set(by_total["small_rule"]) == {
        "total: subjects whose total truth lesion volume is under 1000 voxels"}
    assert small_lesion_rule("total", 500) == (
        "total: subjects whose total truth lesion volume is under 500 voxels")
    with pytest.raises(ValueError, match="rule 'largest' is unknown; use one of components, "
                                         "total"):
        small_lesion_mask(frame, rule="largest")
    with pytest.raises(ValueError, match="no 'truth_largest_lesion_voxels' column, which the "
                                         "'components' small-lesion rule needs"):
        small_lesion_mask(frame.drop(columns="truth_largest_lesion_voxels"))
    assert small_lesion_mask(frame.drop(columns="truth_largest_lesion_voxels"),
                             rule="total").sum() == 1


def test_summarise_small_lesion_subset():
    frame = _frame([0.2, 0.4, 0.6, 0.8, 1.0], [0.5, 0.7, 1.0, 1.0, 1.0],
                   [500, 999, 1000, 5000, 0])
    assert small_lesion_mask(frame).tolist() == [True, True, False, False, False]
    summary = summarise(frame)
    assert "connectivity" not in summary.index
    assert summary.loc["dice", "all_mean"] == pytest.approx(0.6)
    assert summary.loc["dice", "all_std"] == pytest.approx(np.std([.2, .4, .6, .8, 1.], ddof=1))
    assert summary.loc["dice", "all_n"] == 5
    assert summary.loc["dice", "small_mean"] == pytest.approx(0.3)
    assert summary.loc["dice", "small_std"] == pytest.approx(math.sqrt(0.02))
    assert summary.loc["lesion_f1", "small_mean"] == pytest.approx(0.6)
    assert summary.loc["dice", "small_n"] == 2
    assert summarise(frame, small_lesion_threshold=1001).loc["dice", "small_n"] == 3
    with pytest.raises(ValueError, match="truth_volume_voxels"):
        summarise(frame.drop(columns="truth_volume_voxels"), rule="total")


def test_compare_schemes_and_write_table(tmp_path):
    volumes = [100, 2000, 3000]
    frames = {"Default": _frame([0.5, 0.7, 0.9], [0.6, 0.8, 1.0], volumes),
              "Default+MSCSA": _frame([0.6, 0.8, 1.0], [1.0, 1.0, 1.0], volumes)}
    table = compare_schemes(frames)
    assert list(table.index) == ["Default", "Default+MSCSA"]
    assert table.loc["Default", "dice_all_mean"] == pytest.approx(0.7)
    assert table.loc["Default", "dice_all_std"] == pytest.approx(0.2)
    assert table.loc["Default+MSCSA", "lesion_f1_all_std"] == 0.0
    assert table.loc["Default", "n_small"] == 1
    assert table.loc["Default", "dice_small_mean"] == pytest.approx(0.5)
    assert math.isnan(table.loc["Default", "dice_small_std"])  # one subject: ddof=1

    tsv, md = write_table(table, tmp_path / "table1.tsv")
    assert (tsv.name, md.name) == ("table1.tsv", "table1.md")
    back = pd.read_csv(tsv, sep="\t", index_col="scheme", na_values="n/a")
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    lines = md.read_text().splitlines()
    assert lines[0] == ("| scheme | n_all | dice_all | lesion_f1_all | n_small | dice_small | "
                        "lesion_f1_small |")
    assert lines[2] == ("| Default | 3 | 0.700 ± 0.200 | 0.800 ± 0.200 | 1 | 0.500 ± n/a | "
                        "0.600 ± n/a |")
    assert lines[-1] == ("small_rule: components: subjects whose every truth lesion component "
                         "(6-connected) is under 1000 voxels")
    assert table["small_rule"].tolist() == [lines[-1].split(": ", 1)[1]] * 2
    assert compare_schemes(frames, rule="total").loc["Default", "small_rule"].startswith(
        "total: ")
    with pytest.raises(FileExistsError):
        write_table(table, tmp_path / "table1")
    write_table(table, tmp_path / "table1", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table1.md", "table1.tsv"]
    with pytest.raises(ValueError, match="no scheme"):
        compare_schemes({})


def test_plot_writes_png_and_svg(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    volumes = np.round(10 ** rng.uniform(1, 4.5, 30))
    dice_values = np.clip(0.85 / (1 + np.exp(-2 * (np.log10(volumes) - 2.5)))
                          + rng.normal(0, 0.05, 30), 0, 1)
    frames = {"Default": _frame(dice_values, dice_values, volumes),
              "tiny": _frame([0.5, 0.0], [1.0, 0.0], [100, 0])}
    result = plot_dice_vs_volume(frames, tmp_path / "dice_vs_volume")
    assert result["fits"] == {"Default": "logistic", "tiny": "none"}
    assert result["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in result["svg"].read_text()
    with pytest.raises(FileExistsError):
        plot_dice_vs_volume(frames, tmp_path / "dice_vs_volume")

    def failing_fit(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found")

    import scipy.optimize

    monkeypatch.setattr(scipy.optimize, "curve_fit", failing_fit)
    result = plot_dice_vs_volume(frames, tmp_path / "fallback.png")
    assert result["fits"]["Default"] == "moving average"
    assert result["svg"].exists() and result["png"].exists()
    assert evaluate.LOGGER.name == "stroke_lesion_app.training.evaluate"
