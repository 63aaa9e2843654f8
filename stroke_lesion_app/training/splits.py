"""Size-balanced k-fold cross-validation splits in nnU-Net's ``splits_final.json`` format.

``docs/mscsa-spec.md`` §2.9. The paper's ``splits_final.pkl`` (identical to MAPPING's
``fold_index.csv``) is
called "size-balanced", but the code that built it is not published. We use stratification by
rank:

1. sort the cases by lesion volume (ties broken by case identifier);
2. cut the sorted list into consecutive blocks of ``n_folds`` cases;
3. send the cases of each block to the folds in the order of a seeded random permutation of
   the folds (a last, incomplete block fills a random subset of the folds).

Each validation fold therefore holds exactly one case of every full block: the folds have
near-equal sizes (they differ by at most one case) and near-equal volume distributions, and the
same ``seed`` always gives the same split. To reproduce the paper exactly, convert its published
pickle instead.

nnU-Net v2 reads ``<nnUNet_preprocessed>/<dataset>/splits_final.json``: a list with one
``{"train": [...], "val": [...]}`` per fold, of case identifiers (file names without
``_0000.nii.gz`` / ``.nii.gz``).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stroke_lesion_app.core.fileio import atomic_path, write_text_atomic

__all__ = [
    "check_splits",
    "fold_balance",
    "install_splits",
    "lesion_volumes",
    "size_balanced_folds",
    "write_splits",
]

LOGGER = logging.getLogger(__name__)

#: One fold of nnU-Net's ``splits_final.json``.
Fold = dict[str, list[str]]


def size_balanced_folds(volumes: Mapping[str, float], n_folds: int = 5,
                        seed: int = 0) -> list[Fold]:
    """Split cases into ``n_folds`` folds with near-equal lesion volume distributions.

    Parameters
    ----------
    volumes : mapping of str to float
        Case identifier → lesion volume (any unit, e.g. voxels; only the order matters).
    n_folds : int
        Number of folds, at least 2 and at most the number of cases.
    seed : int
        Seed of the permutations (:func:`numpy.random.default_rng`); same seed, same split.

    Returns
    -------
    list of dict
        ``n_folds`` dicts ``{"train": [...], "val": [...]}`` (case identifiers, sorted); every
        case is in exactly one ``val`` list, and each ``train`` is the complement of its
        ``val``.

    Examples
    --------
    >>> folds = size_balanced_folds({"a": 1, "b": 2, "c": 30, "d": 40}, n_folds=2, seed=0)
    >>> [sorted(fold["val"]) for fold in folds]
    [['a', 'c'], ['b', 'd']]
    """
    if not isinstance(n_folds, int) or isinstance(n_folds, bool) or n_folds < 2:
        raise ValueError(f"n_folds={n_folds!r}; cross-validation needs at least 2 folds.")
    _check_volumes(volumes)
    if n_folds > len(volumes):
        raise ValueError(f"n_folds={n_folds} exceeds the {len(volumes)} cases; use at most "
                         f"{len(volumes)} folds.")
    order = sorted(volumes, key=lambda case: (float(volumes[case]), case))
    rng = np.random.default_rng(seed)
    fold_of = {}
    for start in range(0, len(order), n_folds):
        permutation = rng.permutation(n_folds)
        for case, fold in zip(order[start:start + n_folds], permutation):
            fold_of[case] = int(fold)
    cases = sorted(order)
    splits = [{"train": [case for case in cases if fold_of[case] != fold],
               "val": [case for case in cases if fold_of[case] == fold]}
              for fold in range(n_folds)]
    LOGGER.info("Size-balanced split of %d cases into %d folds (seed %s): %s validation cases",
                len(cases), n_folds, seed, "/".join(str(len(fold["val"])) for fold in splits))
    return splits


def check_splits(splits: Sequence[Mapping[str, Sequence[str]]]) -> None:
    """Raise ``ValueError`` unless ``splits`` is a usable nnU-Net split list.

    Checks that every fold has ``train`` and ``val`` lists of strings without duplicates, that
    no case is in both lists of a fold, and that no case is in two validation folds. A ``train``
    list may hold cases that are in no validation fold (e.g. pseudo-labelled cases for
    self-training, spec §2.7).

    Parameters
    ----------
    splits : sequence of mapping
        One ``{"train": [...], "val": [...]}`` per fold.
    """
    if not splits:
        raise ValueError("the split list is empty; build it with size_balanced_folds().")
    seen: dict[str, int] = {}
    for index, fold in enumerate(splits):
        if not isinstance(fold, Mapping) or set(fold) != {"train", "val"}:
            raise ValueError(f"fold {index} is not a {{'train': [...], 'val': [...]}} dict; "
                             "build splits with size_balanced_folds().")
        for key in ("train", "val"):
            if (isinstance(fold[key], str)
                    or not all(isinstance(case, str) for case in fold[key])):
                raise ValueError(f"fold {index} {key!r} must be a list of case identifiers "
                                 "(strings).")
            if len(set(fold[key])) != len(fold[key]):
                raise ValueError(f"fold {index} {key!r} lists a case twice; remove the "
                                 "duplicate.")
        both = sorted(set(fold["train"]) & set(fold["val"]))
        if both:
            raise ValueError(f"fold {index}: {both[:3]} in both train and val; a validation "
                             "case must not be trained on.")
        for case in fold["val"]:
            if case in seen:
                raise ValueError(f"case {case!r} is in validation folds {seen[case]} and "
                                 f"{index}; each case may be validated once.")
            seen[case] = index


def fold_balance(splits: Sequence[Mapping[str, Sequence[str]]],
                 volumes: Mapping[str, float]) -> tuple[pd.DataFrame, float]:
    """Describe the lesion volume distribution of each validation fold.

    Parameters
    ----------
    splits : sequence of mapping
        One ``{"train": [...], "val": [...]}`` per fold.
    volumes : mapping of str to float
        Case identifier → lesion volume, for every validation case.

    Returns
    -------
    frame : pandas.DataFrame
        Index ``fold``; columns ``n_train``, ``n_val``, and the ``mean``, ``min``, ``q1``,
        ``median``, ``q3``, ``max`` of the validation volumes (unit of ``volumes``).
    max_relative_median_difference : float
        ``(max - min) / median`` of the fold medians, relative to the median volume of all
        validation cases (0 for perfectly equal medians).
    """
    check_splits(splits)
    _check_volumes(volumes)
    rows = []
    for index, fold in enumerate(splits):
        missing = [case for case in fold["val"] if case not in volumes]
        if missing:
            raise ValueError(f"fold {index}: no volume for {missing[:3]}; pass the volumes of "
                             "every validation case.")
        values = np.array([volumes[case] for case in fold["val"]], dtype=float)
        q1, median, q3 = (np.percentile(values, [25, 50, 75]) if values.size
                          else (math.nan,) * 3)
        rows.append({"n_train": len(fold["train"]), "n_val": len(fold["val"]),
                     "mean": values.mean() if values.size else math.nan,
                     "min": values.min() if values.size else math.nan, "q1": q1,
                     "median": median, "q3": q3,
                     "max": values.max() if values.size else math.nan})
    frame = pd.DataFrame(rows)
    frame.index.name = "fold"
    overall = float(np.median([volumes[case] for fold in splits for case in fold["val"]]))
    spread = float(frame["median"].max() - frame["median"].min())
    difference = 0.0 if spread == 0 else (math.inf if overall == 0 else spread / overall)
    return frame, difference


def write_splits(splits: Sequence[Mapping[str, Sequence[str]]], path: Path | str, *,
                 overwrite: bool = False) -> Path:
    """Write ``splits`` as nnU-Net's ``splits_final.json``, atomically (temporary file + rename).

    Parameters
    ----------
    splits : sequence of mapping
        One ``{"train": [...], "val": [...]}`` per fold (checked with :func:`check_splits`).
    path : path
        Output file, normally ``<nnUNet_preprocessed>/<dataset>/splits_final.json``.
    overwrite : bool
        Replace an existing file (refused by default: trained folds depend on it).

    Returns
    -------
    Path
        ``path``.
    """
    check_splits(splits)
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; models trained on it depend on it - "
                              "choose another path or pass overwrite=True.")
    data = [{"train": list(fold["train"]), "val": list(fold["val"])} for fold in splits]
    write_text_atomic(path, json.dumps(data, indent=4) + "\n")
    LOGGER.info("Wrote %d folds to %s", len(data), path)
    return path


def install_splits(splits_file: Path | str, target: Path | str, *,
                   trained_dir: Path | str | None = None) -> Path:
    """Copy ``splits_file`` to ``target``, where nnU-Net reads it, unless a training used another.

    Parameters
    ----------
    splits_file : path
        A ``splits_final.json`` (e.g. written by :func:`write_splits`).
    target : path
        ``<nnUNet_preprocessed>/<dataset>/splits_final.json``; replaced atomically (unless it
        is ``splits_file`` itself).
    trained_dir : path, optional
        ``<nnUNet_results>/<dataset>``: while it holds a trained fold (``*/fold_*``), a
        ``target`` with other content is not replaced.

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    FileExistsError
        ``target`` differs from ``splits_file`` and models were trained on it.
    """
    splits_file, target = Path(splits_file), Path(target)
    if (target.is_file() and target.read_bytes() != splits_file.read_bytes()
            and trained_dir is not None and any(Path(trained_dir).glob("*/fold_*"))):
        raise FileExistsError(f"{target} differs from {splits_file} and models were already "
                              "trained on it; use a new WORK_DIR.")
    if not (target.is_file() and target.samefile(splits_file)):
        with atomic_path(target) as tmp:
            shutil.copyfile(splits_file, tmp)
        LOGGER.info("Installed %s as %s", splits_file, target)
    return target


def lesion_volumes(labels_dir: Path | str, *, threshold: float = 0.5) -> dict[str, int]:
    """Lesion volume (voxels) of every label image of a folder, e.g. nnU-Net's ``labelsTr``.

    Parameters
    ----------
    labels_dir : path
        Folder of ``<case>.nii.gz`` (or ``.nii``) masks.
    threshold : float
        A voxel is lesion where its value is above ``threshold``.

    Returns
    -------
    dict of str to int
        Case identifier (file name without ``.nii.gz`` / ``.nii``) → number of lesion voxels.
    """
    import nibabel as nib

    labels_dir = Path(labels_dir)
    if not labels_dir.is_dir():
        raise ValueError(f"labels folder {labels_dir} does not exist; check the path.")
    volumes = {}
    for path in sorted(labels_dir.iterdir()):
        ending = next((end for end in (".nii.gz", ".nii") if path.name.endswith(end)), None)
        if ending is None or path.name.startswith("."):
            continue
        data = np.asanyarray(nib.load(str(path)).dataobj)
        volumes[path.name[: -len(ending)]] = int(np.count_nonzero(data > threshold))
    if not volumes:
        raise ValueError(f"labels folder {labels_dir} holds no .nii/.nii.gz file; pass the "
                         "labelsTr folder.")
    return volumes


def _check_volumes(volumes: Mapping[str, float]) -> None:
    if not volumes:
        raise ValueError("no cases given; pass {case identifier: lesion volume}.")
    bad = [case for case, volume in volumes.items()
           if not isinstance(case, str) or not np.isfinite(volume) or volume < 0]
    if bad:
        raise ValueError(f"invalid case identifier or volume for {bad[:3]}; identifiers must "
                         "be strings and volumes finite and >= 0.")
