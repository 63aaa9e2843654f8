"""Self-training (``docs/mscsa-spec.md`` §2.7): pseudo-label unlabelled images with an ensemble,
then retrain.

One round, as published:

1. an ensemble (a model bundle; softmax probabilities averaged over members and folds, see
   :class:`stroke_lesion_app.core.ensemble.EnsemblePredictor`) segments every unlabelled image
   (:func:`pseudo_label_images`; on ATLAS v2.0, the ``imagesTs`` images without public masks);
2. :func:`write_selftrain_dataset` writes a *new* nnU-Net raw dataset with the source's
   labelled cases plus the pseudo-labelled ones (case identifiers prefixed
   :data:`PSEUDO_PREFIX`), and records the model's identity and which cases are pseudo-labelled
   in ``dataset.json`` (``"stroke_lesion_app" → "self_training"``);
3. :func:`selftrain_splits` keeps the source's cross-validation folds: every validation list is
   unchanged and every pseudo-labelled case is added to every training list, so the validation
   scores stay comparable with the first round (no pseudo-labelled case is ever validated on);
4. the new dataset is planned, preprocessed and trained like the source
   (:mod:`stroke_lesion_app.training.nnunet_pipeline`; ``stroke-lesion-model self-train`` runs
   its ``train`` command on it).

:func:`make_selftrain_dataset` does steps 1-3 and is resumable: a dataset whose record shows the
same model, images and split is reused without predicting again.

.. warning::
   The published protocol leaks mildly: the pseudo-labels come from an ensemble trained on
   *all* folds, so each fold's validation cases influenced the pseudo-labels that fold is then
   trained on. Cross-validation scores of a self-trained model are therefore slightly
   optimistic; only a held-out test set gives an unbiased comparison.

The dataset is written to a hidden folder beside its final name and renamed when complete
(:func:`stroke_lesion_app.core.bids.replace_directory`), with its split as
``splits_final.json`` beside ``dataset.json`` (nnU-Net ignores it there; copy it to
``$nnUNet_preprocessed/<dataset>/``). Source images and labels are hard-linked when the file
system allows it (nnU-Net never writes into a raw dataset, and ``convert --force`` replaces a
dataset by renaming, so the links keep the old bytes), copied otherwise.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stroke_lesion_app import __version__
from stroke_lesion_app.core.bids import replace_directory
from stroke_lesion_app.training.convert import _check_target, dataset_folder_name
from stroke_lesion_app.training.splits import Fold, check_splits

__all__ = [
    "LEAK_NOTE",
    "PSEUDO_PREFIX",
    "find_unlabelled_images",
    "make_selftrain_dataset",
    "pseudo_label_images",
    "selftrain_record",
    "selftrain_splits",
    "write_selftrain_dataset",
]

LOGGER = logging.getLogger(__name__)

#: Prefix of the case identifiers of pseudo-labelled cases in the new dataset.
PSEUDO_PREFIX = "pseudo_"
#: Recorded in ``dataset.json`` and logged: the protocol's known, mild leak.
LEAK_NOTE = ("pseudo-labels come from an ensemble trained on all folds of the source dataset, so "
             "each fold's validation cases influenced the pseudo-labels that fold trains on; "
             "cross-validation scores are slightly optimistic")
_CHANNEL = re.compile(r"_(\d{4})$")


def find_unlabelled_images(images_dir: Path | str) -> dict[str, Path]:
    """Case identifier → image of a folder of unlabelled images (e.g. a dataset's ``imagesTs``).

    Parameters
    ----------
    images_dir : path
        Folder of single-channel ``<case>_0000.nii.gz`` images (``<case>.nii[.gz]`` accepted).

    Returns
    -------
    dict of str to pathlib.Path
        Sorted by case identifier.

    Raises
    ------
    ValueError
        Missing or empty folder, a second channel (``_0001``), or two files of one case.
    """
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise ValueError(f"unlabelled images folder {images_dir} does not exist; pass "
                         "--unlabelled or convert a dataset with test images (imagesTs).")
    images: dict[str, Path] = {}
    for path in sorted(images_dir.iterdir()):
        ending = next((end for end in (".nii.gz", ".nii") if path.name.endswith(end)), None)
        if ending is None or path.name.startswith(".") or not path.is_file():
            continue
        case = path.name[: -len(ending)]
        channel = _CHANNEL.search(case)
        if channel and channel[1] != "0000":
            raise ValueError(f"{path}: input channel {channel[1]}; the models take one T1w "
                             "channel (<case>_0000.nii.gz).")
        case = _CHANNEL.sub("", case)
        if case in images:
            raise ValueError(f"{images_dir}: two images of case {case} ({images[case].name}, "
                             f"{path.name}); keep one.")
        images[case] = path
    if not images:
        raise ValueError(f"{images_dir} holds no .nii/.nii.gz image; pass the folder of "
                         "unlabelled images (e.g. imagesTs).")
    return images


def pseudo_label_images(predictor, images: Mapping[str, Path], out_dir: Path | str,
                        ) -> dict[str, Path]:
    """Segment every image with an ensemble; write its mask as ``out_dir/<case>.nii.gz``.

    Parameters
    ----------
    predictor : stroke_lesion_app.core.ensemble.EnsemblePredictor
        Loaded ensemble (softmax averaging; its threshold and small-component rule make the
        mask).
    images : mapping of str to path
        Case identifier → image (:func:`find_unlabelled_images`).
    out_dir : path
        Folder for the masks (created); the probabilities are not kept.

    Returns
    -------
    dict of str to pathlib.Path
        Case identifier → ``uint8`` mask on the image's grid.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    masks = {}
    for number, (case, image) in enumerate(sorted(images.items()), start=1):
        probability = out_dir / f".{case}_probseg.nii.gz"
        try:
            predictor.predict_file(image, probability, out_dir / f"{case}.nii.gz")
        finally:
            probability.unlink(missing_ok=True)
        masks[case] = out_dir / f"{case}.nii.gz"
        LOGGER.info("Pseudo-labelled %s (%d/%d).", case, number, len(images))
    return masks


def selftrain_splits(splits: Sequence[Mapping[str, Sequence[str]]],
                     pseudo_cases: Sequence[str]) -> list[Fold]:
    """The source's folds with every pseudo-labelled case added to every training list.

    Parameters
    ----------
    splits : sequence of mapping
        The source dataset's ``splits_final.json`` (one ``{"train", "val"}`` per fold).
    pseudo_cases : sequence of str
        Case identifiers of the pseudo-labelled cases in the new dataset.

    Returns
    -------
    list of dict
        Same number of folds; each ``val`` exactly the source's, each ``train`` the source's
        followed by ``pseudo_cases`` (sorted).

    Raises
    ------
    ValueError
        Unusable splits, no pseudo-labelled case, a duplicate, or a pseudo-labelled identifier
        that is already a case of the splits.

    Examples
    --------
    >>> selftrain_splits([{"train": ["a"], "val": ["b"]}, {"train": ["b"], "val": ["a"]}],
    ...                  ["pseudo_x"])
    [{'train': ['a', 'pseudo_x'], 'val': ['b']}, {'train': ['b', 'pseudo_x'], 'val': ['a']}]
    """
    check_splits(splits)
    pseudo = sorted(pseudo_cases)
    if not pseudo:
        raise ValueError("no pseudo-labelled case; self-training needs unlabelled images.")
    if len(set(pseudo)) != len(pseudo):
        raise ValueError("a pseudo-labelled case is listed twice; case identifiers must be "
                         "unique.")
    known = {case for fold in splits for key in ("train", "val") for case in fold[key]}
    clash = sorted(known & set(pseudo))
    if clash:
        raise ValueError(f"pseudo-labelled case(s) {clash[:3]} are already cases of the split; "
                         "rename them (another prefix).")
    extended = [{"train": list(fold["train"]) + pseudo, "val": list(fold["val"])}
                for fold in splits]
    check_splits(extended)
    return extended


def selftrain_record(*, source_dataset: str, model: Mapping[str, Any],
                     pseudo_labelled: Mapping[str, str], labelled: Sequence[str],
                     unlabelled_dir: Path | str) -> dict[str, Any]:
    """The ``"self_training"`` entry of the new dataset's ``dataset.json``.

    Parameters
    ----------
    source_dataset : str
        ``Dataset<NNN>_<Name>`` the labelled cases come from.
    model : mapping
        Identity of the ensemble that made the pseudo-labels (bundle identity, threshold, ...).
    pseudo_labelled : mapping of str to str
        New case identifier → the unlabelled image's case identifier.
    labelled : sequence of str
        Case identifiers of the source's labelled cases.
    unlabelled_dir : path
        Folder the unlabelled images came from.

    Returns
    -------
    dict
        JSON-ready record; two runs that would write the same dataset give equal records.
    """
    record = {"source_dataset": source_dataset, "model": dict(model),
              "unlabelled_images": str(Path(unlabelled_dir).absolute()),
              "labelled_cases": sorted(labelled),
              "pseudo_labelled_cases": dict(sorted(pseudo_labelled.items())),
              "note": LEAK_NOTE}
    return json.loads(json.dumps(record))  # JSON types, as read back from dataset.json


def write_selftrain_dataset(source_dir: Path | str, out_raw_dir: Path | str, *,
                            dataset_id: int, name: str, images: Mapping[str, Path],
                            masks: Mapping[str, Path],
                            splits: Sequence[Mapping[str, Sequence[str]]],
                            model: Mapping[str, Any], unlabelled_dir: Path | str,
                            overwrite: bool = False) -> dict[str, Any]:
    """Write the self-training raw dataset: labelled source cases plus pseudo-labelled ones.

    Parameters
    ----------
    source_dir : path
        The source raw dataset ``.../Dataset<NNN>_<Name>`` (``imagesTr``, ``labelsTr``,
        ``dataset.json``).
    out_raw_dir : path
        ``nnUNet_raw`` folder of the new dataset.
    dataset_id : int
        New dataset number (not the source's).
    name : str
        New dataset name.
    images, masks : mapping of str to path
        Unlabelled case identifier → image and → its pseudo-label mask (same grid).
    splits : sequence of mapping
        The source's folds (:func:`selftrain_splits` extends them).
    model : mapping
        Identity of the ensemble (recorded).
    unlabelled_dir : path
        Where the unlabelled images came from (recorded).
    overwrite : bool
        Replace an existing dataset of the same folder name written by this package.

    Returns
    -------
    dict
        ``dataset_dir`` (Path), ``labelled`` and ``pseudo_labelled`` (new case identifiers),
        ``splits`` (the extended folds, also written as ``splits_final.json`` in the dataset)
        and ``record`` (the ``"self_training"`` entry).

    Raises
    ------
    ValueError
        A source that is not a raw dataset, a split naming cases the source lacks, images
        without masks, or the source's own id.
    FileExistsError
        The dataset exists (``overwrite`` false) or another folder uses ``dataset_id``.
    """
    source_dir = Path(source_dir)
    description, ending, labelled = _read_source(source_dir)
    folder = _new_folder(source_dir, dataset_id, name)
    in_split = sorted({case for fold in splits for key in ("train", "val") for case in fold[key]})
    unknown = sorted(set(in_split) - set(labelled))
    if unknown:
        raise ValueError(f"the split names case(s) {unknown[:3]} that {source_dir / 'labelsTr'} "
                         "lacks; pass the split of this dataset (--splits).")
    if set(images) != set(masks):
        raise ValueError(f"pseudo-labels missing for {sorted(set(images) ^ set(masks))[:3]}.")
    pseudo = {f"{PSEUDO_PREFIX}{case}": case for case in sorted(images)}
    extended = selftrain_splits(splits, list(pseudo))
    record = selftrain_record(source_dataset=source_dir.name, model=model,
                              pseudo_labelled=pseudo, labelled=labelled,
                              unlabelled_dir=unlabelled_dir)

    out_raw_dir = Path(out_raw_dir).absolute()
    target = _check_target(out_raw_dir, folder, dataset_id, overwrite)
    partial = out_raw_dir / f".{folder}.partial-{os.getpid()}"
    if partial.exists():
        shutil.rmtree(partial)
    try:
        for sub in ("imagesTr", "labelsTr"):
            (partial / sub).mkdir(parents=True)
        for case in labelled:
            _link_or_copy(source_dir / "imagesTr" / f"{case}_0000{ending}",
                          partial / "imagesTr" / f"{case}_0000{ending}")
            _link_or_copy(source_dir / "labelsTr" / f"{case}{ending}",
                          partial / "labelsTr" / f"{case}{ending}")
        for new_case, case in pseudo.items():
            shutil.copyfile(images[case], partial / "imagesTr" / f"{new_case}_0000{ending}")
            shutil.copyfile(masks[case], partial / "labelsTr" / f"{new_case}{ending}")
        entry = dict(description.get("stroke_lesion_app", {}))
        entry.update({"version": __version__, "numTest": 0, "self_training": record})
        new_description = {
            **description, "numTraining": len(labelled) + len(pseudo), "name": folder,
            "description": f"{description.get('description', source_dir.name)}; self-training: "
                           f"{len(labelled)} labelled + {len(pseudo)} pseudo-labelled cases",
            "stroke_lesion_app": entry,
        }
        (partial / "dataset.json").write_text(json.dumps(new_description, indent=4) + "\n")
        (partial / "splits_final.json").write_text(json.dumps(extended, indent=4) + "\n")
        replace_directory(partial, target)
    finally:
        if partial.exists():
            shutil.rmtree(partial)
    LOGGER.info("Wrote %s: %d labelled and %d pseudo-labelled case(s). Note: %s.", target,
                len(labelled), len(pseudo), LEAK_NOTE)
    return {"dataset_dir": target, "labelled": labelled, "pseudo_labelled": list(pseudo),
            "splits": extended, "record": record}


def make_selftrain_dataset(source_dir: Path | str, out_raw_dir: Path | str, *,
                           dataset_id: int, name: str, unlabelled_dir: Path | str,
                           splits: Sequence[Mapping[str, Sequence[str]]],
                           model: Mapping[str, Any], load_predictor: Callable[[], Any],
                           derived: Sequence[Path | str] = (),
                           overwrite: bool = False) -> dict[str, Any]:
    """Pseudo-label ``unlabelled_dir`` and write the self-training dataset, or reuse it.

    When the dataset exists and its ``"self_training"`` record equals the one this call would
    write (same source cases, unlabelled images, split and model, the model's path aside),
    nothing is predicted nor written (re-running a command resumes); otherwise it is replaced
    only with ``overwrite``.

    Parameters
    ----------
    source_dir, out_raw_dir, dataset_id, name, splits, model, overwrite
        As :func:`write_selftrain_dataset`.
    unlabelled_dir : path
        Folder of unlabelled images (:func:`find_unlabelled_images`).
    load_predictor : callable
        Returns the loaded ensemble (an
        :class:`~stroke_lesion_app.core.ensemble.EnsemblePredictor`); called only when the
        pseudo-labels must be made.
    derived : sequence of path
        Folders made from this dataset (``nnUNet_preprocessed/<dataset>``,
        ``nnUNet_results/<dataset>``): writing the dataset anew is refused while one exists,
        since nnU-Net would reuse stale preprocessed labels or finished folds.

    Returns
    -------
    dict
        As :func:`write_selftrain_dataset`, plus ``reused`` (bool).
    """
    source_dir, out_raw_dir = Path(source_dir), Path(out_raw_dir).absolute()
    _, _, labelled = _read_source(source_dir)
    folder = _new_folder(source_dir, dataset_id, name)
    images = find_unlabelled_images(unlabelled_dir)
    pseudo = {f"{PSEUDO_PREFIX}{case}": case for case in images}
    extended = selftrain_splits(splits, list(pseudo))
    record = selftrain_record(source_dataset=source_dir.name, model=model,
                              pseudo_labelled=pseudo, labelled=labelled,
                              unlabelled_dir=unlabelled_dir)
    target = out_raw_dir / folder
    if target.is_dir() and _recorded(target) == (_comparable(record), extended):
        LOGGER.info("%s was made from the same model, images and split; not redone.", target)
        return {"dataset_dir": target, "labelled": labelled, "pseudo_labelled": list(pseudo),
                "splits": extended, "record": record, "reused": True}
    _check_target(out_raw_dir, folder, dataset_id, overwrite)
    stale = [Path(path) for path in derived if Path(path).exists()]
    if stale:
        raise FileExistsError(f"{' and '.join(map(str, stale))} were made from an earlier "
                              f"{folder} (stale for new pseudo-labels); remove them or choose "
                              "another dataset id.")
    out_raw_dir.mkdir(parents=True, exist_ok=True)
    staging = out_raw_dir / f".{folder}.pseudo-labels-{os.getpid()}"
    try:
        masks = pseudo_label_images(load_predictor(), images, staging)
        result = write_selftrain_dataset(
            source_dir, out_raw_dir, dataset_id=dataset_id, name=name, images=images,
            masks=masks, splits=splits, model=model, unlabelled_dir=unlabelled_dir,
            overwrite=overwrite)
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return {**result, "reused": False}


def _read_source(source_dir: Path) -> tuple[dict, str, list[str]]:
    """``dataset.json``, file ending and labelled case identifiers of a raw dataset."""
    description_file = source_dir / "dataset.json"
    if not description_file.is_file() or not (source_dir / "labelsTr").is_dir():
        raise ValueError(f"{source_dir} is not an nnU-Net raw dataset (no dataset.json or "
                         "labelsTr); pass a dataset made by `stroke-lesion-model convert`.")
    description = json.loads(description_file.read_text())
    ending = description.get("file_ending", ".nii.gz")
    labelled = sorted(path.name[: -len(ending)] for path in (source_dir / "labelsTr").iterdir()
                      if path.name.endswith(ending) and not path.name.startswith("."))
    if not labelled:
        raise ValueError(f"{source_dir / 'labelsTr'} holds no {ending} label; pass a dataset "
                         "with labelled cases.")
    for case in labelled:
        if not (source_dir / "imagesTr" / f"{case}_0000{ending}").is_file():
            raise ValueError(f"{source_dir / 'imagesTr'}: no {case}_0000{ending} for the label "
                             f"{case}{ending}; pass a complete raw dataset.")
    return description, ending, labelled


def _new_folder(source_dir: Path, dataset_id: int, name: str) -> str:
    folder = dataset_folder_name(dataset_id, name)
    if folder.split("_")[0] == source_dir.name.split("_")[0]:
        raise ValueError(f"new dataset id {dataset_id} is the source's own id "
                         f"({source_dir.name}); choose an unused id.")
    return folder


def _comparable(record: Mapping[str, Any]) -> dict:
    """``record`` without the model's path (a bundle may move; its checksums identify it)."""
    model = {key: value for key, value in record["model"].items() if key != "path"}
    return {**record, "model": model}


def _recorded(dataset_dir: Path) -> tuple[dict, list] | None:
    try:
        description = json.loads((dataset_dir / "dataset.json").read_text())
        splits = json.loads((dataset_dir / "splits_final.json").read_text())
        record = description["stroke_lesion_app"]["self_training"]
        return _comparable(record), splits
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
