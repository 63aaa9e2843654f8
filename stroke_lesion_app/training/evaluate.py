"""Evaluation of lesion masks: the paper's per-case metrics, the small-lesion subset, Table 1, Fig.

``docs/mscsa-spec.md`` §2.10 and §2.11. The per-case metrics reproduce the paper's ``scoring.py`` /
``run_parallel.py`` (the ATLAS challenge scoring plus size bins), computed on binary masks:

============================  ===================  =========================================
column                        paper                definition
============================  ===================  =========================================
``dice``                      ``dice``             2|P∩T| / (|P|+|T|); 1.0 if both are empty
``precision_voxel``           ``precision_voxel``  |P∩T| / |P|; 1.0 if P is empty
``recall_voxel``              ``recall_voxel``     |P∩T| / |T|; 1.0 if T is empty
``volume_difference_voxels``  ``volume``           ||P| - |T|| in voxels
``volume_difference_ml``      (none)               the same in mL (truth header voxel size)
``lesion_count_difference``   ``count``            |#components(P) - #components(T)|
``lesion_f1``                 ``f1_0``             lesion-wise F1 (see below)
``lesion_precision``          ``precision_0``      lesion-wise precision
``lesion_recall``             ``recall_0``         lesion-wise recall
``lesion_<m>_lt100``          ``<m>_1``            components of < 100 voxels
``lesion_<m>_100to999``       ``<m>_2``            100-999 voxels
``lesion_<m>_1000to9999``     ``<m>_3``            1000-9999 voxels
``lesion_<m>_ge10000``        ``<m>_4``            >= 10000 voxels
============================  ===================  =========================================

``<m>`` is ``f1``, ``precision``, ``recall`` or one of the counts ``tp``, ``fn``, ``fp``,
``tp_pred`` (the counts are ours; the paper's columns are those of ``run_parallel.py``).

Lesion-wise scores (:func:`lesion_wise_scores`): lesions are connected components found with
:func:`scipy.ndimage.label`. Its default structuring element in 3D is **6-connectivity** (face
neighbours), which is what the paper used; 18 and 26 are options, and the connectivity used is
part of every result. A truth component is a true positive (TP) if at least one of its voxels is
predicted, otherwise a false negative (FN). A predicted component with no truth voxel is a false
positive (FP); one that touches the truth is a "TP prediction" (``tp_pred``). Then::

    F1        = TP / (TP + (FP + FN) / 2)
    precision = tp_pred / (tp_pred + FP)
    recall    = TP / (TP + FN)

and each is 1.0 when its denominator is 0 (in particular all three are 1.0 when neither mask has
a component). Per size bin, truth components are binned by their size for TP/FN and predicted
components by theirs for FP/``tp_pred``, as in the paper.

Differences from the paper's code, all deliberate:

* the masks are binarised here (prediction ``!= 0``, truth ``> 0.5``); the paper used nnU-Net's
  {0, 1} labels as they were;
* components are counted with ``numpy.bincount`` instead of one full-volume pass per component
  (same numbers, much faster);
* some copies of the ATLAS challenge's ``scoring.py`` take the "truth" volume from the
  prediction (so the volume difference is always 0); the paper's copy and this module compare
  prediction and truth.

Summaries (:func:`summarise`) are means and unbiased (``ddof=1``) standard deviations over
cases, as the paper's ``torch.std_mean``. The paper computed them per fold folder; pass all five
validation folders to :func:`evaluate_folder` to pool the cross-validation instead.

The **small-lesion subset** (spec §2.11) is not defined in the paper's published code (its
``gather_small.py`` is missing). The paper's text selects the 138 subjects "that only have
lesions with volumes under 1000 voxels", so the default rule (``"components"``,
:data:`SMALL_LESION_RULE`) takes the subjects whose **every** truth lesion component (connected
component, at the evaluation's connectivity) is smaller than ``small_lesion_threshold`` voxels
(1000 by default). The other reading, ``"total"``, takes the subjects whose **total** truth
lesion volume is below the threshold (its methods section says "lesion volumes under 1,000
voxels"); a "total" subject is always a "components" subject, not the other way round. Both
rules leave out subjects without any truth lesion. Every summary names the rule it used
(:func:`small_lesion_rule`; ``small_rule`` column, Markdown caption), and the per-case table
holds ``truth_largest_lesion_voxels``. With ATLAS's 1 mm isotropic grid, 1000 voxels are 1 mL.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from stroke_lesion_app.core.components import CONNECTIVITIES, connectivity_structure
from stroke_lesion_app.core.fileio import atomic_path

__all__ = [
    "CONNECTIVITIES",
    "SIZE_BINS",
    "SMALL_LESION_RULE",
    "SMALL_LESION_RULES",
    "SMALL_LESION_THRESHOLD",
    "VolumeDifference",
    "compare_schemes",
    "dice",
    "evaluate_case",
    "evaluate_folder",
    "lesion_count_difference",
    "lesion_wise_scores",
    "plot_dice_vs_volume",
    "precision",
    "recall",
    "small_lesion_mask",
    "small_lesion_rule",
    "summarise",
    "volume_difference",
    "write_table",
]

LOGGER = logging.getLogger(__name__)

#: Component size bins of the paper's ``_lesion_f1_score``: (label, lowest size, highest size + 1)
#: in voxels.
SIZE_BINS = (
    ("lt100", 0, 100),
    ("100to999", 100, 1000),
    ("1000to9999", 1000, 10000),
    ("ge10000", 10000, None),
)


#: Default small-lesion threshold in voxels (spec §2.11; the paper's "under 1000 voxels").
SMALL_LESION_THRESHOLD = 1000

#: Rules of the small-lesion subset (:func:`small_lesion_mask`): name → the per-case column it
#: compares with the threshold.
SMALL_LESION_RULES = MappingProxyType({
    "components": "truth_largest_lesion_voxels",
    "total": "truth_volume_voxels",
})

#: Default rule: every truth lesion component under the threshold (the paper's text).
SMALL_LESION_RULE = "components"

#: Largest accepted difference between prediction and truth affines, in mm.
AFFINE_TOLERANCE_MM = 1e-3

#: NIfTI file endings recognised by :func:`evaluate_folder`.
NIFTI_ENDINGS = (".nii.gz", ".nii")

_BIN_EDGES = np.array([low for _, low, _ in SIZE_BINS[1:]])
_NON_METRICS = ("connectivity", "small_subset")


# --------------------------------------------------------------------------------------------
# Per-case metrics on arrays
# --------------------------------------------------------------------------------------------
def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Whole-volume Dice coefficient of two masks.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        Masks of the same shape (any dimension); every nonzero voxel counts as lesion.

    Returns
    -------
    float
        ``2 |P ∩ T| / (|P| + |T|)`` in [0, 1]; 1.0 when both masks are empty, 0.0 when exactly
        one is.

    Examples
    --------
    >>> dice(np.array([1, 1, 0, 0]), np.array([0, 1, 1, 0]))
    0.5
    >>> dice(np.zeros(3), np.zeros(3))
    1.0
    """
    pred, truth = _masks(pred, truth)
    denominator = int(pred.sum()) + int(truth.sum())
    if denominator == 0:
        return 1.0
    return 2.0 * int(np.count_nonzero(pred & truth)) / denominator


def precision(pred: np.ndarray, truth: np.ndarray) -> float:
    """Voxel-wise precision ``|P ∩ T| / |P|``; 1.0 when the prediction is empty.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        Masks of the same shape; every nonzero voxel counts as lesion.

    Returns
    -------
    float
        In [0, 1]. The empty-prediction value 1.0 is the paper's (``zero_division=1.0``).
    """
    pred, truth = _masks(pred, truth)
    predicted = int(pred.sum())
    return 1.0 if predicted == 0 else int(np.count_nonzero(pred & truth)) / predicted


def recall(pred: np.ndarray, truth: np.ndarray) -> float:
    """Voxel-wise recall (sensitivity) ``|P ∩ T| / |T|``; 1.0 when the truth is empty.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        Masks of the same shape; every nonzero voxel counts as lesion.

    Returns
    -------
    float
        In [0, 1]. The empty-truth value 1.0 is the paper's (``zero_division=1.0``).
    """
    pred, truth = _masks(pred, truth)
    actual = int(truth.sum())
    return 1.0 if actual == 0 else int(np.count_nonzero(pred & truth)) / actual


class VolumeDifference(NamedTuple):
    """Absolute lesion volume difference between prediction and truth."""

    #: ``||P| - |T||`` in voxels.
    voxels: int
    #: The same in mL; NaN when no voxel size was given.
    ml: float


def volume_difference(pred: np.ndarray, truth: np.ndarray,
                      zooms: Sequence[float] | None = None) -> VolumeDifference:
    """Absolute difference of the lesion volumes, in voxels and (given voxel sizes) in mL.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        Masks of the same shape; every nonzero voxel counts as lesion.
    zooms : sequence of float, optional
        Voxel edge lengths in mm, one per array axis (e.g. ``img.header.get_zooms()[:3]``).

    Returns
    -------
    VolumeDifference
        ``(voxels, ml)``; ``ml`` is ``voxels * prod(zooms) / 1000``, NaN without ``zooms``.

    Examples
    --------
    >>> volume_difference(np.ones((2, 2, 1)), np.zeros((2, 2, 1)), zooms=(1.0, 2.0, 3.0))
    VolumeDifference(voxels=4, ml=0.024)
    """
    pred, truth = _masks(pred, truth)
    voxels = abs(int(pred.sum()) - int(truth.sum()))
    return VolumeDifference(voxels, voxels * _voxel_volume_ml(zooms, pred.ndim))


def lesion_count_difference(pred: np.ndarray, truth: np.ndarray, connectivity: int = 6) -> int:
    """Absolute difference of the numbers of connected components.

    Parameters
    ----------
    pred, truth : numpy.ndarray
        3D masks of the same shape, (X, Y, Z); every nonzero voxel counts as lesion.
    connectivity : {6, 18, 26}
        Neighbourhood of a voxel; 6 (face neighbours) is scipy's default and the paper's.

    Returns
    -------
    int
        ``|#components(P) - #components(T)|``.
    """
    pred, truth = _masks(pred, truth, spatial=True)
    structure = connectivity_structure(connectivity)
    return abs(ndimage.label(pred, structure)[1] - ndimage.label(truth, structure)[1])


def lesion_wise_scores(pred: np.ndarray, truth: np.ndarray,
                       connectivity: int = 6) -> dict[str, Any]:
    """Lesion-wise detection scores (ATLAS challenge definition plus the paper's size bins).

    Parameters
    ----------
    pred, truth : numpy.ndarray
        3D masks of the same shape, (X, Y, Z); every nonzero voxel counts as lesion.
    connectivity : {6, 18, 26}
        Neighbourhood used to find components; 6 (scipy's default) is the paper's.

    Returns
    -------
    dict
        ``connectivity``; ``n_truth`` and ``n_pred`` (component counts); ``truth_largest``
        (voxels of the largest truth component, 0 without one); ``tp``, ``fn`` (truth
        components touched / missed by the prediction), ``fp``, ``tp_pred`` (predicted
        components missing / touching the truth); ``f1``, ``precision``, ``recall`` (each 1.0
        when its denominator is 0); and ``bins``: the same counts and scores per size bin
        (:data:`SIZE_BINS`, keys ``"lt100"`` … ``"ge10000"``), truth components binned by
        their own size for ``tp``/``fn``, predicted components by theirs for
        ``fp``/``tp_pred``.

    Examples
    --------
    A predicted lesion that touches both truth lesions detects both:

    >>> truth = np.zeros((1, 1, 5), bool); truth[0, 0, [0, 4]] = True
    >>> scores = lesion_wise_scores(np.ones((1, 1, 5)), truth)
    >>> scores["tp"], scores["fp"], scores["fn"], scores["tp_pred"], scores["f1"]
    (2, 0, 0, 1, 1.0)
    """
    pred, truth = _masks(pred, truth, spatial=True)
    structure = connectivity_structure(connectivity)
    truth_labels, n_truth = ndimage.label(truth, structure)
    pred_labels, n_pred = ndimage.label(pred, structure)
    truth_sizes = np.bincount(truth_labels.ravel(), minlength=n_truth + 1)[1:]
    pred_sizes = np.bincount(pred_labels.ravel(), minlength=n_pred + 1)[1:]
    truth_hit = np.bincount(truth_labels[pred], minlength=n_truth + 1)[1:] > 0
    pred_hit = np.bincount(pred_labels[truth], minlength=n_pred + 1)[1:] > 0
    truth_bin = np.searchsorted(_BIN_EDGES, truth_sizes, side="right")
    pred_bin = np.searchsorted(_BIN_EDGES, pred_sizes, side="right")

    def counts(truth_selected: np.ndarray, pred_selected: np.ndarray) -> dict[str, Any]:
        tp = int(np.count_nonzero(truth_hit & truth_selected))
        fn = int(np.count_nonzero(~truth_hit & truth_selected))
        fp = int(np.count_nonzero(~pred_hit & pred_selected))
        tp_pred = int(np.count_nonzero(pred_hit & pred_selected))
        return {"tp": tp, "fn": fn, "fp": fp, "tp_pred": tp_pred,
                "f1": _ratio(tp, tp + (fp + fn) / 2), "precision": _ratio(tp_pred, tp_pred + fp),
                "recall": _ratio(tp, tp + fn)}

    scores: dict[str, Any] = {"connectivity": int(connectivity), "n_truth": int(n_truth),
                              "n_pred": int(n_pred),
                              "truth_largest": int(truth_sizes.max()) if n_truth else 0}
    scores.update(counts(np.ones(n_truth, bool), np.ones(n_pred, bool)))
    scores["bins"] = {label: counts(truth_bin == index, pred_bin == index)
                      for index, (label, _, _) in enumerate(SIZE_BINS)}
    return scores


# --------------------------------------------------------------------------------------------
# Files and folders
# --------------------------------------------------------------------------------------------
def evaluate_case(pred_path: Path | str, truth_path: Path | str, *,
                  connectivity: int = 6) -> dict[str, Any]:
    """All per-case metrics of one predicted mask against its truth.

    Parameters
    ----------
    pred_path : path
        Predicted mask (NIfTI); binarised with ``!= 0``.
    truth_path : path
        Truth mask (NIfTI) on the same grid; binarised with ``> 0.5``.
    connectivity : {6, 18, 26}
        Neighbourhood for the component-based metrics.

    Returns
    -------
    dict
        The metric columns of the module table (Dice, voxel precision/recall, volume and count
        differences, lesion-wise F1/precision/recall overall and per size bin, and the
        ``lesion_tp/fn/fp/tp_pred`` counts overall and per bin), plus ``truth_volume_voxels``,
        ``pred_volume_voxels``, ``truth_volume_ml``, ``pred_volume_ml``, ``truth_lesions``,
        ``pred_lesions``, ``truth_largest_lesion_voxels`` (the largest truth component; 0
        without a lesion) and ``connectivity``. Volumes in mL use the truth header's voxel size.

    Raises
    ------
    ValueError
        When a file cannot be read, is not 3D, or the two grids (shape or affine) differ.
    """
    pred_image, pred = _load_mask(pred_path, "prediction")
    truth_image, truth = _load_mask(truth_path, "truth")
    pred, truth = pred != 0, truth > 0.5
    if pred.shape != truth.shape or not np.allclose(pred_image.affine, truth_image.affine,
                                                    rtol=0, atol=AFFINE_TOLERANCE_MM):
        raise ValueError(f"prediction {pred_path} (shape {pred.shape}) and truth {truth_path} "
                         f"(shape {truth.shape}) are on different grids (shape or affine); "
                         "resample the prediction to the truth grid.")
    zooms = truth_image.header.get_zooms()[:3]
    voxel_ml = _voxel_volume_ml(zooms, 3)
    lesions = lesion_wise_scores(pred, truth, connectivity)
    difference = volume_difference(pred, truth, zooms)
    truth_voxels, pred_voxels = int(truth.sum()), int(pred.sum())
    row: dict[str, Any] = {
        "dice": dice(pred, truth),
        "precision_voxel": precision(pred, truth),
        "recall_voxel": recall(pred, truth),
        "volume_difference_voxels": difference.voxels,
        "volume_difference_ml": difference.ml,
        "lesion_count_difference": abs(lesions["n_pred"] - lesions["n_truth"]),
    }
    keys = ("f1", "precision", "recall", "tp", "fn", "fp", "tp_pred")
    row.update({f"lesion_{key}": lesions[key] for key in keys})
    for label, scores in lesions["bins"].items():
        row.update({f"lesion_{key}_{label}": scores[key] for key in keys})
    row.update({
        "truth_volume_voxels": truth_voxels,
        "pred_volume_voxels": pred_voxels,
        "truth_volume_ml": truth_voxels * voxel_ml,
        "pred_volume_ml": pred_voxels * voxel_ml,
        "truth_lesions": lesions["n_truth"],
        "pred_lesions": lesions["n_pred"],
        "truth_largest_lesion_voxels": lesions["truth_largest"],
        "connectivity": lesions["connectivity"],
    })
    return row


def evaluate_folder(pred_dir: Path | str | Sequence[Path | str], truth_dir: Path | str, *,
                    connectivity: int = 6) -> pd.DataFrame:
    """Evaluate every predicted mask of one or more folders against the truth of the same name.

    Parameters
    ----------
    pred_dir : path or sequence of paths
        Folder(s) of predicted masks (``*.nii.gz`` / ``*.nii``; other files, such as nnU-Net's
        ``summary.json``, are ignored). Several folders, e.g. the five ``fold_*/validation``
        folders of a cross-validation, are pooled; a case may appear in only one of them.
    truth_dir : path
        Folder of truth masks with the same file names (e.g. nnU-Net's ``labelsTr``).
    connectivity : {6, 18, 26}
        Neighbourhood for the component-based metrics.

    Returns
    -------
    pandas.DataFrame
        One row per case (index ``case``: file name without the NIfTI ending, sorted), columns
        as returned by :func:`evaluate_case`.

    Raises
    ------
    ValueError
        When a folder holds no NIfTI file, a case has no truth file or appears twice, or a
        pair fails :func:`evaluate_case`'s checks.
    """
    pred_dirs = [pred_dir] if isinstance(pred_dir, (str, Path)) else list(pred_dir)
    truth_dir = Path(truth_dir)
    if not truth_dir.is_dir():
        raise ValueError(f"truth folder {truth_dir} does not exist; pass the labels folder.")
    cases: dict[str, Path] = {}
    for folder in map(Path, pred_dirs):
        found = _nifti_files(folder)
        if not found:
            raise ValueError(f"prediction folder {folder} holds no .nii/.nii.gz file; check "
                             "the path.")
        for case, path in found.items():
            if case in cases:
                raise ValueError(f"case {case!r} is in both {cases[case].parent} and {folder}; "
                                 "pass each case's prediction once.")
            cases[case] = path
    rows = {}
    for case in sorted(cases):
        truth_path = truth_dir / cases[case].name
        if not truth_path.is_file():
            raise ValueError(f"no truth {truth_path.name} in {truth_dir} for prediction "
                             f"{cases[case]}; pass the matching labels folder.")
        rows[case] = evaluate_case(cases[case], truth_path, connectivity=connectivity)
    LOGGER.info("Evaluated %d cases from %s against %s", len(rows),
                ", ".join(map(str, pred_dirs)), truth_dir)
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "case"
    return frame


# --------------------------------------------------------------------------------------------
# Summaries, tables and the Dice-vs-volume figure
# --------------------------------------------------------------------------------------------
def small_lesion_rule(rule: str = SMALL_LESION_RULE,
                      small_lesion_threshold: float = SMALL_LESION_THRESHOLD,
                      connectivity: int | None = None) -> str:
    """A one-line description of a small-lesion subset rule, as the outputs state it.

    Examples
    --------
    >>> small_lesion_rule("components", 1000, 6)
    'components: subjects whose every truth lesion component (6-connected) is under 1000 voxels'
    >>> small_lesion_rule("total", 1000)
    'total: subjects whose total truth lesion volume is under 1000 voxels'
    """
    _check_rule(rule)
    if rule == "total":
        return (f"total: subjects whose total truth lesion volume is under "
                f"{small_lesion_threshold:g} voxels")
    neighbourhood = "" if connectivity is None else f" ({int(connectivity)}-connected)"
    return (f"components: subjects whose every truth lesion component{neighbourhood} is under "
            f"{small_lesion_threshold:g} voxels")


def small_lesion_mask(frame: pd.DataFrame,
                      small_lesion_threshold: float = SMALL_LESION_THRESHOLD,
                      rule: str = SMALL_LESION_RULE) -> pd.Series:
    """Which cases form the small-lesion subset (spec §2.11).

    Parameters
    ----------
    frame : pandas.DataFrame
        Per-case metrics (:func:`evaluate_folder`) with the column of ``rule``
        (:data:`SMALL_LESION_RULES`).
    small_lesion_threshold : float
        Upper bound (exclusive), in voxels.
    rule : {"components", "total"}
        ``"components"`` (default, the paper's text): every truth lesion component is under
        the threshold (``0 < truth_largest_lesion_voxels < threshold``); ``"total"``: the
        total truth lesion volume is (``0 < truth_volume_voxels < threshold``).

    Returns
    -------
    pandas.Series of bool
        True for the subjects in the subset. Subjects without any truth lesion never are.

    Raises
    ------
    ValueError
        An unknown rule, or a table without the rule's column.
    """
    _check_rule(rule)
    column = SMALL_LESION_RULES[rule]
    if column not in frame.columns:
        raise ValueError(f"the metrics table has no {column!r} column, which the {rule!r} "
                         "small-lesion rule needs; build it with evaluate_folder() (or use the "
                         "other rule).")
    size = frame[column]
    return (size > 0) & (size < small_lesion_threshold)


def summarise(frame: pd.DataFrame,
              small_lesion_threshold: float = SMALL_LESION_THRESHOLD,
              rule: str = SMALL_LESION_RULE) -> pd.DataFrame:
    """Mean and unbiased standard deviation of every metric, overall and on small lesions.

    Parameters
    ----------
    frame : pandas.DataFrame
        Per-case metrics (:func:`evaluate_folder`), one row per case.
    small_lesion_threshold : float
        Small-lesion threshold in voxels (:func:`small_lesion_mask`).
    rule : {"components", "total"}
        Small-lesion subset rule (:func:`small_lesion_mask`).

    Returns
    -------
    pandas.DataFrame
        Index ``metric`` (every numeric column but ``connectivity``); columns ``all_mean``,
        ``all_std``, ``all_n``, ``small_mean``, ``small_std``, ``small_n`` and ``small_rule``
        (:func:`small_lesion_rule`, the same on every row). ``std`` uses ``ddof=1`` (the
        paper's ``torch.std_mean``) and is NaN for fewer than two cases.
    """
    small = small_lesion_mask(frame, small_lesion_threshold, rule)
    description = small_lesion_rule(rule, small_lesion_threshold, _connectivity(frame))
    metrics = [column for column in frame.select_dtypes("number").columns
               if column not in _NON_METRICS]
    LOGGER.info("Small-lesion subset: %d of %d subjects (%s)", int(small.sum()), len(frame),
                description)
    columns = {}
    for subset, rows in (("all", frame), ("small", frame[small])):
        values = rows[metrics].astype(float)
        columns[f"{subset}_mean"] = values.mean()
        columns[f"{subset}_std"] = values.std(ddof=1)
        columns[f"{subset}_n"] = values.count()
    summary = pd.DataFrame(columns, index=metrics)
    summary["small_rule"] = description
    summary.index.name = "metric"
    return summary


def compare_schemes(frames: Mapping[str, pd.DataFrame], *,
                    small_lesion_threshold: float = SMALL_LESION_THRESHOLD,
                    rule: str = SMALL_LESION_RULE,
                    metrics: Sequence[str] = ("dice", "lesion_f1")) -> pd.DataFrame:
    """A Table-1-style comparison: one row per training scheme.

    Parameters
    ----------
    frames : mapping of str to pandas.DataFrame
        Scheme name → per-case metrics (:func:`evaluate_folder`), in row order.
    small_lesion_threshold : float
        Small-lesion subset threshold in voxels (:func:`small_lesion_mask`).
    rule : {"components", "total"}
        Small-lesion subset rule (:func:`small_lesion_mask`).
    metrics : sequence of str
        Metric columns to report (default: Dice and lesion-wise F1, as Table 1).

    Returns
    -------
    pandas.DataFrame
        Index ``scheme``; columns ``n_all``, ``<metric>_all_mean``, ``<metric>_all_std`` for each
        metric, then the same for ``small``, and ``small_rule`` (:func:`small_lesion_rule`).
        :func:`write_table` prints each mean/std pair as ``mean ± std``.
    """
    if not frames:
        raise ValueError("no scheme to compare; pass {scheme name: per-case metrics table}.")
    case_sets = {name: frozenset(frame.index) for name, frame in frames.items()}
    if len(set(case_sets.values())) > 1:
        LOGGER.warning("Schemes were evaluated on different cases (%s); their rows are not "
                       "directly comparable",
                       ", ".join(f"{name}: {len(cases)}" for name, cases in case_sets.items()))
    rows = {}
    for name, frame in frames.items():
        missing = [metric for metric in metrics if metric not in frame.columns]
        if missing:
            raise ValueError(f"scheme {name!r} has no column(s) {missing}; build its table with "
                             "evaluate_folder().")
        summary = summarise(frame, small_lesion_threshold, rule)
        row: dict[str, Any] = {}
        for subset in ("all", "small"):
            row[f"n_{subset}"] = int(summary.loc[metrics[0], f"{subset}_n"])
            for metric in metrics:
                row[f"{metric}_{subset}_mean"] = summary.loc[metric, f"{subset}_mean"]
                row[f"{metric}_{subset}_std"] = summary.loc[metric, f"{subset}_std"]
        row["small_rule"] = summary["small_rule"].iloc[0]
        rows[name] = row
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.name = "scheme"
    return table


def write_table(frame: pd.DataFrame, path: Path | str, *, decimals: int = 3,
                overwrite: bool = False) -> tuple[Path, Path]:
    """Write a table as TSV (full precision) and Markdown (``mean ± std``), atomically.

    Parameters
    ----------
    frame : pandas.DataFrame
        Any table; each pair of columns ``<name>_mean`` / ``<name>_std`` becomes one Markdown
        column ``<name>`` reading ``mean ± std``, and a text column with one value on every row
        (e.g. ``small_rule``) becomes a line ``<name>: <value>`` below the Markdown table.
    path : path
        Output name; its suffix is replaced by ``.tsv`` and ``.md``.
    decimals : int
        Decimals of floats in the Markdown table.
    overwrite : bool
        Replace existing files (refused by default).

    Returns
    -------
    tuple of Path
        ``(tsv_path, markdown_path)``.
    """
    tsv_path, md_path = _outputs(path, (".tsv", ".md"), overwrite)
    with atomic_path(tsv_path) as tmp:
        frame.to_csv(tmp, sep="\t", index=True, na_rep="n/a")
    with atomic_path(md_path) as tmp:
        tmp.write_text(_markdown(frame, decimals))
    LOGGER.info("Wrote %s and %s", tsv_path, md_path)
    return tsv_path, md_path


def plot_dice_vs_volume(frames: Mapping[str, pd.DataFrame], path: Path | str, *,
                        volume_column: str = "truth_volume_voxels",
                        small_lesion_threshold: float | None = SMALL_LESION_THRESHOLD,
                        overwrite: bool = False) -> dict[str, Any]:
    """Scatter per-case Dice against truth lesion volume (log scale) with a fitted curve per scheme.

    The curve is a logistic function of ``log10(volume)``,
    ``dice = top / (1 + exp(-slope * (log10(volume) - midpoint)))``, fitted with
    :func:`scipy.optimize.curve_fit`. When that fit fails (or with fewer than 4 cases) a moving
    average over the volume-sorted cases is drawn instead, and the fallback is logged. Cases
    without a truth lesion cannot sit on a log axis and are left out (logged).

    Parameters
    ----------
    frames : mapping of str to pandas.DataFrame
        Scheme name → per-case metrics with ``dice`` and ``volume_column``.
    path : path
        Output name; its suffix is replaced by ``.png`` and ``.svg``.
    volume_column : str
        Column holding the truth lesion volume (``truth_volume_voxels`` or
        ``truth_volume_ml``).
    small_lesion_threshold : float or None
        Draw a dotted vertical line there (in voxels; only with ``truth_volume_voxels``).
    overwrite : bool
        Replace existing files (refused by default).

    Returns
    -------
    dict
        ``png`` and ``svg`` (paths written) and ``fits`` (scheme → ``"logistic"``,
        ``"moving average"`` or ``"none"``).
    """
    import matplotlib
    from matplotlib.figure import Figure

    png_path, svg_path = _outputs(path, (".png", ".svg"), overwrite)
    figure = Figure(figsize=(6.4, 4.4), layout="constrained")
    axes = figure.add_subplot()
    fits = {}
    for index, (name, frame) in enumerate(frames.items()):
        for column in ("dice", volume_column):
            if column not in frame.columns:
                raise ValueError(f"scheme {name!r} has no {column!r} column; build its table "
                                 "with evaluate_folder().")
        volume = frame[volume_column].to_numpy(float)
        score = frame["dice"].to_numpy(float)
        keep = np.isfinite(volume) & np.isfinite(score) & (volume > 0)
        if not keep.all():
            LOGGER.info("%s: %d cases without a truth lesion left out of the Dice-vs-volume "
                        "plot", name, int((~keep).sum()))
        volume, score = volume[keep], score[keep]
        colour = f"C{index % 10}"
        axes.scatter(volume, score, s=12, alpha=0.6, color=colour, linewidths=0)
        fits[name], curve_x, curve_y = _fit_curve(np.log10(volume), score, name)
        label = name if fits[name] == "none" else f"{name} ({fits[name]})"
        if curve_x.size:
            axes.plot(10 ** curve_x, curve_y, color=colour, linewidth=2, label=label)
        else:
            axes.scatter([], [], color=colour, label=label)
    if small_lesion_threshold is not None and volume_column == "truth_volume_voxels":
        axes.axvline(small_lesion_threshold, color="0.5", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_ylim(-0.02, 1.02)
    unit = "mL" if volume_column.endswith("_ml") else "voxels"
    axes.set_xlabel(f"Truth lesion volume ({unit}, log scale)")
    axes.set_ylabel("Dice")
    axes.grid(True, which="major", alpha=0.3)
    if frames:
        axes.legend(loc="lower right", fontsize="small")
    with matplotlib.rc_context({"svg.hashsalt": "stroke-lesion-app"}):
        with atomic_path(png_path) as tmp:
            figure.savefig(tmp, format="png", dpi=150)
        with atomic_path(svg_path) as tmp:
            figure.savefig(tmp, format="svg", metadata={"Date": None})
    LOGGER.info("Wrote %s and %s", png_path, svg_path)
    return {"png": png_path, "svg": svg_path, "fits": fits}


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------
def _check_rule(rule: str) -> None:
    if rule not in SMALL_LESION_RULES:
        raise ValueError(f"small-lesion rule {rule!r} is unknown; use one of "
                         f"{', '.join(SMALL_LESION_RULES)}.")


def _connectivity(frame: pd.DataFrame) -> int | None:
    """The one connectivity of a per-case table, or None (no column, or several values)."""
    if "connectivity" not in frame.columns:
        return None
    values = frame["connectivity"].dropna().unique()
    return int(values[0]) if len(values) == 1 else None


def _masks(pred, truth, spatial: bool = False) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = np.asarray(pred) != 0, np.asarray(truth) != 0
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape "
                         f"{truth.shape}; compare masks on the same grid.")
    if spatial and pred.ndim != 3:
        raise ValueError(f"lesion components need 3D masks, got shape {pred.shape}; pass one "
                         "(X, Y, Z) volume.")
    return pred, truth


def _ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or the paper's ``empty_value`` 1.0 when it is 0."""
    return 1.0 if denominator == 0 else numerator / denominator


def _voxel_volume_ml(zooms: Sequence[float] | None, ndim: int) -> float:
    if zooms is None:
        return float("nan")
    zooms = np.asarray(zooms, dtype=float)
    if zooms.shape != (ndim,) or not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise ValueError(f"voxel sizes {zooms.tolist()} invalid; give {ndim} positive sizes "
                         "in mm.")
    return float(np.prod(zooms)) / 1000.0


def _load_mask(path: Path | str, role: str) -> tuple[nib.spatialimages.SpatialImage, np.ndarray]:
    try:
        image = nib.load(str(path))
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # nibabel raises many types for missing/corrupt files
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"{role} {path}: unreadable NIfTI ({reason}); check the file.") from None
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{role} {path}: shape {data.shape} is not one 3D mask; pass a 3D "
                         "label image.")
    return image, data


def _nifti_files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise ValueError(f"prediction folder {folder} does not exist; check the path.")
    files = {}
    for path in sorted(folder.iterdir()):
        ending = next((end for end in NIFTI_ENDINGS if path.name.endswith(end)), None)
        if ending and path.is_file() and not path.name.startswith("."):
            files[path.name[: -len(ending)]] = path
    return files


def _outputs(path: Path | str, suffixes: Sequence[str], overwrite: bool) -> list[Path]:
    path = Path(path)
    outputs = [path.with_suffix(suffix) for suffix in suffixes]
    existing = [str(output) for output in outputs if output.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{', '.join(existing)} already exist(s); choose another name or "
                              "pass overwrite=True.")
    return outputs


def _markdown(frame: pd.DataFrame, decimals: int) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, (bool, np.bool_)):
            return str(value)
        if isinstance(value, (int, np.integer)):
            return str(int(value))
        if isinstance(value, (float, np.floating)):
            return "n/a" if not np.isfinite(value) else f"{value:.{decimals}f}"
        return str(value).replace("|", "\\|")

    captions = [f"{column}: {frame[column].iloc[0]}" for column in frame.columns
                if len(frame) and frame[column].map(type).eq(str).all()
                and frame[column].nunique() == 1]
    frame = frame.drop(columns=[caption.split(": ", 1)[0] for caption in captions])
    columns = [str(column) for column in frame.columns]
    values = {str(column): frame[column].tolist() for column in frame.columns}  # keeps int types
    merged = {column[: -len("_mean")] for column in columns
              if column.endswith("_mean") and column[: -len("_mean")] + "_std" in columns}
    header = [str(frame.index.name or "")]
    cells = []  # one list of formatted cells per output column
    for column in columns:
        stem = column.rsplit("_", 1)[0]
        if column.endswith("_std") and stem in merged:
            continue
        if column.endswith("_mean") and stem in merged:
            header.append(stem)
            cells.append([f"{cell(mean)} ± {cell(std)}" for mean, std
                          in zip(values[f"{stem}_mean"], values[f"{stem}_std"])])
        else:
            header.append(column)
            cells.append([cell(value) for value in values[column]])
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join([" --- "] + [" ---: "] * (len(header) - 1)) + "|"]
    for row, index in enumerate(frame.index):
        lines.append("| " + " | ".join([cell(index)] + [column[row] for column in cells]) + " |")
    if captions:
        lines += ["", *captions]
    return "\n".join(lines) + "\n"


def _fit_curve(log_volume: np.ndarray, score: np.ndarray,
               name: str) -> tuple[str, np.ndarray, np.ndarray]:
    """Logistic fit of Dice on log10 volume, or a moving average when that fails."""
    if log_volume.size >= 4 and np.ptp(log_volume) > 0:
        from scipy.optimize import OptimizeWarning, curve_fit

        def logistic(x, top, slope, midpoint):
            return top / (1.0 + np.exp(-slope * (x - midpoint)))

        low, high = float(log_volume.min()), float(log_volume.max())
        start = (float(np.clip(score.max(), 0.05, 1.0)), 2.0, float(np.median(log_volume)))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", OptimizeWarning)
                warnings.simplefilter("ignore", RuntimeWarning)
                parameters, _ = curve_fit(logistic, log_volume, score, p0=start,
                                          bounds=([0.0, 0.0, low - 1.0], [1.0, 50.0, high + 1.0]),
                                          maxfev=10000)
            if np.all(np.isfinite(parameters)):
                curve_x = np.linspace(low, high, 200)
                return "logistic", curve_x, logistic(curve_x, *parameters)
        except (RuntimeError, ValueError) as error:
            LOGGER.warning("%s: logistic fit of Dice on log volume failed (%s); drawing a "
                           "moving average instead", name, error)
    else:
        LOGGER.info("%s: %d cases (or one volume only); no logistic fit, drawing a moving "
                    "average", name, log_volume.size)
    if log_volume.size < 2:
        return "none", np.array([]), np.array([])
    order = np.argsort(log_volume, kind="stable")
    window = min(log_volume.size, max(3, log_volume.size // 5))
    kernel = np.ones(window) / window
    return ("moving average", np.convolve(log_volume[order], kernel, mode="valid"),
            np.convolve(score[order], kernel, mode="valid"))
