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
same ``seed`` always gives the same split. To reproduce the paper exactly, use its published
``splits_final.pkl`` instead: :func:`load_splits` reads it (and JSON), :func:`map_splits` maps its
case identifiers onto a dataset's, and :func:`install_splits` does both and writes the result
where nnU-Net v2 reads it.

Case identifiers. ``stroke-lesion-model convert atlas`` names a case ``sub-<label>_ses-<label>``
(:func:`stroke_lesion_app.training.convert.convert_atlas`), e.g. ``sub-r001s004_ses-1``. The
paper's pickle (nnU-Net v1, ``convert.py`` of the paper) uses the ATLAS v2.0 file stems, e.g.
``sub-r001s004_ses-1_space-MNI152NLin2009aSym_T1w``. :func:`case_id` reduces such a stem to its
``sub``/``ses`` entities; identifiers of any other form are kept as they are.

nnU-Net v2 reads ``<nnUNet_preprocessed>/<dataset>/splits_final.json``: a list with one
``{"train": [...], "val": [...]}`` per fold, of case identifiers (file names without
``_0000.nii.gz`` / ``.nii.gz``).
"""

from __future__ import annotations

import io
import json
import logging
import math
import pickle
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from stroke_lesion_app.core.fileio import write_bytes_atomic, write_text_atomic

__all__ = [
    "case_id",
    "check_splits",
    "dataset_cases",
    "fold_balance",
    "install_splits",
    "lesion_volumes",
    "load_splits",
    "map_splits",
    "size_balanced_folds",
    "write_splits",
]

LOGGER = logging.getLogger(__name__)

#: One fold of nnU-Net's ``splits_final.json``.
Fold = dict[str, list[str]]

#: Prefix of pseudo-labelled cases in a self-training dataset (as
#: :data:`stroke_lesion_app.training.selftrain.PSEUDO_PREFIX`; repeated here so that this module
#: does not import the self-training one).
PSEUDO_PREFIX = "pseudo_"

#: A BIDS-style file stem: ``sub-<label>[_<key>-<value>]...[_<suffix>]``.
_BIDS_STEM = re.compile(r"sub-[A-Za-z0-9]+(?:_[A-Za-z0-9]+-[A-Za-z0-9]+)*(?:_[A-Za-z0-9]+)?")

#: The only globals an nnU-Net v1 ``splits_final.pkl`` needs (a list of ``OrderedDict`` of numpy
#: string arrays); :func:`load_splits` refuses any other, so a pickle cannot run code.
_PICKLE_GLOBALS = frozenset({
    ("collections", "OrderedDict"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
})


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


def case_id(identifier: str) -> str:
    """The ``convert`` case identifier of a split entry (the paper's ATLAS stems reduced).

    A BIDS-style stem with more than the ``sub`` and ``ses`` entities, or with a suffix (the
    paper's ``sub-r001s004_ses-1_space-MNI152NLin2009aSym_T1w``), becomes
    ``sub-<label>[_ses-<label>]``, the identifier ``stroke-lesion-model convert atlas`` gives
    that image. A trailing ``.nii.gz``/``.nii`` and nnU-Net's ``_0000`` channel suffix are
    dropped first. Anything else (``sub-01_ses-1``, ``pseudo_...``, ``case_7``) is returned
    unchanged.

    Examples
    --------
    >>> case_id("sub-r001s004_ses-1_space-MNI152NLin2009aSym_T1w")
    'sub-r001s004_ses-1'
    >>> case_id("sub-r001s004_ses-1"), case_id("case_7"), case_id("sub-02_T1w_0000.nii.gz")
    ('sub-r001s004_ses-1', 'case_7', 'sub-02')
    """
    stem = re.sub(r"(_0000)?\.nii(\.gz)?$", "", identifier)
    if not _BIDS_STEM.fullmatch(stem):
        return identifier
    parts = stem.split("_")
    kept = [parts[0]] + [part for part in parts[1:2] if part.startswith("ses-")]
    return "_".join(kept)


def load_splits(path: Path | str) -> list[Fold]:
    """Read a split file: nnU-Net v2's ``splits_final.json`` or v1's ``splits_final.pkl``.

    The format is recognised from the content (a pickle starts with its protocol byte). A
    pickle is read with a restricted unpickler that accepts only what nnU-Net v1 writes (a list
    of ``OrderedDict`` of numpy string arrays), so an untrusted file cannot run code. Case
    identifiers are returned as they are in the file (see :func:`map_splits`).

    Parameters
    ----------
    path : path
        The split file.

    Returns
    -------
    list of dict
        One ``{"train": [...], "val": [...]}`` per fold (lists of str).

    Raises
    ------
    ValueError
        Missing or unreadable file, or not a list of ``{"train", "val"}`` folds.
    """
    path = Path(path)
    fix = "pass nnU-Net's splits_final.json or the paper's splits_final.pkl"
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise ValueError(f"split file {path} is unreadable ({error.strerror or error}); "
                         f"{fix}.") from None
    try:
        if raw[:1] == b"\x80":
            data = _SplitUnpickler(io.BytesIO(raw)).load()
        else:
            data = json.loads(raw.decode("utf-8"))
    except pickle.UnpicklingError as error:
        raise ValueError(f"split file {path}: {error}; {fix}.") from None
    except Exception as error:  # noqa: BLE001 - JSON, UTF-8 and pickle raise many types
        reason = " ".join(str(error).split()) or type(error).__name__
        raise ValueError(f"split file {path} is neither JSON nor a pickle ({reason}); "
                         f"{fix}.") from None
    splits = _as_folds(data)
    if splits is None:
        raise ValueError(f"split file {path} is not a list of folds ({{'train': [...], "
                         f"'val': [...]}} each); {fix}.")
    try:
        check_splits(splits)
    except ValueError as error:
        raise ValueError(f"split file {path}: {error}") from None
    return splits


def dataset_cases(dataset_dir: Path | str) -> set[str]:
    """The training case identifiers of an nnU-Net raw dataset: its ``labelsTr`` file names.

    Raises
    ------
    ValueError
        ``dataset_dir/labelsTr`` is missing or holds no ``.nii.gz``/``.nii`` file.
    """
    labels = Path(dataset_dir) / "labelsTr"
    cases = {re.sub(r"\.nii(\.gz)?$", "", path.name) for path in
             (labels.iterdir() if labels.is_dir() else ())
             if re.search(r"\.nii(\.gz)?$", path.name) and not path.name.startswith(".")}
    if not cases:
        raise ValueError(f"{labels} holds no .nii/.nii.gz label; pass an nnU-Net raw dataset "
                         "(stroke-lesion-model convert).")
    return cases


def map_splits(splits: Sequence[Mapping[str, Sequence[str]]], cases: Collection[str], *,
               source: Path | str = "the split", dataset: Path | str = "the dataset"
               ) -> list[Fold]:
    """Map every case identifier of ``splits`` onto ``cases``; refuse if any is missing.

    An identifier is kept when it is a case already; otherwise its :func:`case_id` is used, or
    (for the paper's self-training split ``splits_final_2.pkl``, whose extra cases are the
    ATLAS test images) :data:`PSEUDO_PREFIX` + its :func:`case_id`, whichever is a case.

    Parameters
    ----------
    splits : sequence of mapping
        Folds as :func:`load_splits` returns them.
    cases : collection of str
        The dataset's case identifiers (:func:`dataset_cases`).
    source, dataset : path or str
        Named in the error message.

    Returns
    -------
    list of dict
        The folds with the dataset's identifiers (order kept).

    Raises
    ------
    ValueError
        An identifier maps to no case (the message names the first three and the fix), or two
        identifiers map to one case.

    Examples
    --------
    >>> map_splits([{"train": ["sub-a_ses-1_space-MNI152NLin2009aSym_T1w"],
    ...              "val": ["sub-b_ses-1_space-MNI152NLin2009aSym_T1w"]}],
    ...            {"sub-a_ses-1", "sub-b_ses-1"})
    [{'train': ['sub-a_ses-1'], 'val': ['sub-b_ses-1']}]
    """
    cases = set(cases)
    missing: set[str] = set()

    def mapped(identifier: str) -> str:
        for candidate in (identifier, case_id(identifier), PSEUDO_PREFIX + case_id(identifier)):
            if candidate in cases:
                return candidate
        missing.add(identifier)
        return identifier

    result = [{key: [mapped(case) for case in fold[key]] for key in ("train", "val")}
              for fold in splits]
    if missing:
        total = len({case for fold in splits for key in ("train", "val") for case in fold[key]})
        example = min(cases) if cases else "none"
        raise ValueError(
            f"{source}: {len(missing)} of its {total} case IDs are not in {dataset} "
            f"(first: {', '.join(sorted(missing)[:3])}; the dataset has e.g. {example}); "
            "convert the same data the split was made for (stroke-lesion-model convert atlas) "
            "or make a split of this dataset (stroke-lesion-model split).")
    try:
        check_splits(result)
    except ValueError as error:
        raise ValueError(f"{source}, mapped onto {dataset}: {error}") from None
    return result


def install_splits(splits_file: Path | str, target: Path | str, *,
                   trained_dir: Path | str | None = None,
                   dataset_dir: Path | str | None = None) -> Path:
    """Install ``splits_file`` as ``target``, where nnU-Net reads it, unless a training used another.

    Parameters
    ----------
    splits_file : path
        A ``splits_final.json`` (e.g. written by :func:`write_splits`) or the paper's nnU-Net v1
        ``splits_final.pkl`` (:func:`load_splits`).
    target : path
        ``<nnUNet_preprocessed>/<dataset>/splits_final.json``; replaced atomically (unless it
        is ``splits_file`` itself). A JSON file whose identifiers need no mapping is copied
        byte for byte; anything else is written as nnU-Net v2 JSON (:func:`write_splits`).
    trained_dir : path, optional
        ``<nnUNet_results>/<dataset>``: while it holds a trained fold (``*/fold_*``), a
        ``target`` with other folds is not replaced.
    dataset_dir : path, optional
        The raw dataset ``Dataset<NNN>_<Name>``: every identifier is mapped onto its
        ``labelsTr`` cases and must be one (:func:`map_splits`).

    Returns
    -------
    Path
        ``target``.

    Raises
    ------
    ValueError
        An unreadable split, or (with ``dataset_dir``) an identifier that is not a case.
    FileExistsError
        ``target`` holds other folds and models were trained on it.
    """
    splits_file, target = Path(splits_file), Path(target)
    if target.is_file() and target.samefile(splits_file):
        return target
    splits = load_splits(splits_file)
    if dataset_dir is not None:
        splits = map_splits(splits, dataset_cases(dataset_dir), source=splits_file,
                            dataset=dataset_dir)
    if target.is_file() and trained_dir is not None and any(Path(trained_dir).glob("*/fold_*")):
        try:
            installed = load_splits(target)
        except ValueError:
            installed = None
        if installed != splits:
            raise FileExistsError(f"{target} differs from {splits_file} and models were "
                                  "already trained on it; use a new WORK_DIR.")
    raw = splits_file.read_bytes()
    if raw[:1] != b"\x80" and splits == json.loads(raw.decode("utf-8")):
        write_bytes_atomic(target, raw)
    else:
        write_splits(splits, target, overwrite=True)
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


def _as_folds(data) -> list[Fold] | None:
    """``data`` as a list of ``{"train": [...], "val": [...]}`` (numpy arrays → lists); None if
    it has another shape."""
    if not isinstance(data, list) or not data:
        return None
    splits = []
    for fold in data:
        if not isinstance(fold, Mapping) or set(fold) != {"train", "val"}:
            return None
        converted = {}
        for key in ("train", "val"):
            values = fold[key]
            if isinstance(values, np.ndarray):
                values = values.tolist()
            if not isinstance(values, (list, tuple)):
                return None
            converted[key] = list(values)
        splits.append(converted)
    return splits


class _SplitUnpickler(pickle.Unpickler):
    """Unpickler that only builds what an nnU-Net v1 split holds (:data:`_PICKLE_GLOBALS`)."""

    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise pickle.UnpicklingError(
                f"holds {module}.{name}, which an nnU-Net split file never does (refused)")
        return super().find_class(module, name)


def _check_volumes(volumes: Mapping[str, float]) -> None:
    if not volumes:
        raise ValueError("no cases given; pass {case identifier: lesion volume}.")
    bad = [case for case, volume in volumes.items()
           if not isinstance(case, str) or not np.isfinite(volume) or volume < 0]
    if bad:
        raise ValueError(f"invalid case identifier or volume for {bad[:3]}; identifiers must "
                         "be strings and volumes finite and >= 0.")
