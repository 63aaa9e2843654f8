"""What the ``stroke-lesion-model`` subcommands do, as plain functions without click.

The command modules (``stroke_lesion_app/cli/model_*.py``) parse their options, call one or two
functions of this module and print the result; they turn the ``ValueError`` (and so
:class:`~stroke_lesion_app.core.bundle.BundleError`) and ``FileExistsError`` raised here into a
one-line usage error. Every message names the file or option and the fix.

========================  ============================================================
subcommand                functions
========================  ============================================================
``split``                 :func:`split_labels`
``train``                 :func:`parse_folds`, :func:`prepare_training` (with
                          :func:`find_raw_dataset` and
                          :func:`~stroke_lesion_app.training.splits.install_splits`)
``ensemble``              :func:`select_images`, :func:`refuse_non_empty`,
                          :func:`load_ensemble` (``--member`` →
                          :func:`~stroke_lesion_app.training.package.package_members`),
                          :func:`predict_images`
``evaluate``              :func:`parse_schemes`, :func:`evaluation_outputs`,
                          :func:`evaluate_schemes`
``self-train``            :func:`selftrain_inputs`, :func:`pseudo_label_model`,
                          :func:`make_pseudo_labelled_dataset`
========================  ============================================================

``synthesize``, ``convert`` and ``bundle`` call one library function each
(:func:`stroke_lesion_app.synthetic.synthesize_dataset`,
:mod:`stroke_lesion_app.training.convert`,
:func:`~stroke_lesion_app.training.package.package_bundle`). torch, nnU-Net and matplotlib are
imported only by the functions that need them.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stroke_lesion_app.core.fileio import atomic_path
from stroke_lesion_app.training import nnunet_pipeline
from stroke_lesion_app.training.package import MemberSource, member_identity, package_members
from stroke_lesion_app.training.splits import (
    case_id,
    dataset_cases,
    fold_balance,
    install_splits,
    lesion_volumes,
    load_splits,
    map_splits,
    size_balanced_folds,
    write_splits,
)

__all__ = [
    "SCHEME_NAME",
    "SelfTrainInputs",
    "case_name",
    "evaluate_schemes",
    "evaluation_outputs",
    "find_raw_dataset",
    "load_ensemble",
    "make_pseudo_labelled_dataset",
    "parse_folds",
    "parse_schemes",
    "predict_images",
    "prepare_training",
    "pseudo_label_model",
    "refuse_non_empty",
    "select_images",
    "selftrain_inputs",
    "split_labels",
]

#: What a scheme name of ``evaluate`` may be (it names output files).
SCHEME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_+-]*")


# --------------------------------------------------------------------------------------------
# split
# --------------------------------------------------------------------------------------------
def split_labels(labels_dir: Path | str, out_json: Path | str, *, n_folds: int = 5,
                 seed: int = 0, overwrite: bool = False) -> dict[str, Any]:
    """Write size-balanced folds of the masks of ``labels_dir`` to ``out_json``.

    Parameters
    ----------
    labels_dir : path
        Folder of ``<case>.nii[.gz]`` masks (a dataset's ``labelsTr``).
    out_json : path
        ``splits_final.json`` to write.
    n_folds, seed : int
        As :func:`~stroke_lesion_app.training.splits.size_balanced_folds`.
    overwrite : bool
        Replace ``out_json`` (refused by default: models trained on it depend on it).

    Returns
    -------
    dict
        ``splits``, ``volumes`` (case → lesion voxels), ``table`` and ``difference`` (the
        balance of the validation folds, :func:`~stroke_lesion_app.training.splits.fold_balance`)
        and ``path``.

    Raises
    ------
    FileExistsError
        ``out_json`` exists and ``overwrite`` is false (checked before anything is read).
    ValueError
        No labels, or fewer cases than folds.
    """
    out_json = Path(out_json)
    if out_json.exists() and not overwrite:
        raise FileExistsError(f"{out_json} already exists; models trained on it depend on it - "
                              "choose another path or pass --force.")
    volumes = lesion_volumes(labels_dir)
    splits = size_balanced_folds(volumes, n_folds=n_folds, seed=seed)
    table, difference = fold_balance(splits, volumes)
    write_splits(splits, out_json, overwrite=overwrite)
    return {"splits": splits, "volumes": volumes, "table": table, "difference": difference,
            "path": out_json}


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------
def parse_folds(values: Sequence[str], n_folds: int = 5) -> list[int | str]:
    """``--fold`` values → fold numbers (``all`` kept); none given → ``0 .. n_folds - 1``.

    Raises
    ------
    ValueError
        A value that is neither an integer nor ``all``.

    Examples
    --------
    >>> parse_folds(("0", "all")), parse_folds(())
    ([0, 'all'], [0, 1, 2, 3, 4])
    """
    try:
        return [fold if fold == "all" else int(fold) for fold in (values or range(n_folds))]
    except ValueError:
        raise ValueError(f"--fold takes an integer or 'all', got {values}") from None


def find_raw_dataset(raw_dir: Path | str, dataset_id: int) -> Path:
    """The raw dataset ``Dataset<NNN>_*`` of ``dataset_id`` under ``raw_dir`` (the first by name).

    Raises
    ------
    ValueError
        ``raw_dir`` is missing or holds no such dataset.
    """
    raw_dir = Path(raw_dir)
    matches = sorted(raw_dir.glob(f"Dataset{dataset_id:03d}_*")) if raw_dir.is_dir() else []
    if not matches:
        raise ValueError(f"no Dataset{dataset_id:03d}_* under {raw_dir}; make one with "
                         "`stroke-lesion-model convert` or pass --raw.")
    return matches[0]


def prepare_training(dataset_id: int, folders: Mapping[str, Path], *,
                     plan_preset: str = "paper", num_processes: int = 2,
                     splits_file: Path | str | None = None) -> Path:
    """Plan and preprocess dataset ``dataset_id`` and install its split: all before training.

    Must run inside :func:`~stroke_lesion_app.training.nnunet_pipeline.nnunet_environment`.

    Parameters
    ----------
    dataset_id : int
        nnU-Net dataset number.
    folders : mapping
        The folders ``nnunet_environment`` yields (``nnUNet_raw``, ``nnUNet_preprocessed``,
        ``nnUNet_results``).
    plan_preset : {"paper", "demo", "tiny"}
        As :func:`~stroke_lesion_app.training.nnunet_pipeline.plan_and_preprocess`.
    num_processes : int
        Processes of the preprocessing.
    splits_file : path, optional
        ``splits_final.json`` (``split``) or the paper's nnU-Net v1 ``splits_final.pkl``, to
        install in the preprocessed dataset folder
        (:func:`~stroke_lesion_app.training.splits.install_splits`); its case identifiers are
        mapped onto the dataset's (the paper's ATLAS file stems become ``convert atlas``'s
        ``sub-*_ses-*``) and each must be a case of the dataset, which is checked before
        anything is planned. Without it nnU-Net makes a random 5-fold split.

    Returns
    -------
    pathlib.Path
        The raw dataset folder.

    Raises
    ------
    ValueError
        No such dataset, a plan preset nnU-Net's plan does not fit, or a split that is
        unreadable or names a case the dataset lacks.
    FileExistsError
        Another split is installed and models were trained on it.
    """
    source = find_raw_dataset(folders["nnUNet_raw"], dataset_id)
    if splits_file is not None:  # refuse a wrong split before the long preprocessing
        map_splits(load_splits(splits_file), dataset_cases(source), source=splits_file,
                   dataset=source)
    nnunet_pipeline.plan_and_preprocess(dataset_id, plan_preset=plan_preset,
                                        num_processes=num_processes)
    if splits_file is not None:
        install_splits(splits_file,
                       Path(folders["nnUNet_preprocessed"]) / source.name / "splits_final.json",
                       trained_dir=Path(folders["nnUNet_results"]) / source.name,
                       dataset_dir=source)
    return source


# --------------------------------------------------------------------------------------------
# ensemble
# --------------------------------------------------------------------------------------------
def case_name(image: Path | str) -> str:
    """nnU-Net case identifier of an image file: its name without ``_0000`` and extension.

    Examples
    --------
    >>> case_name("imagesTs/sub-01_ses-1_0000.nii.gz"), case_name("sub-02.nii")
    ('sub-01_ses-1', 'sub-02')
    """
    return re.sub(r"(_0000)?\.nii(\.gz)?$", "", Path(image).name)


def select_images(images_dir: Path | str, *, split_file: Path | str | None = None,
                  fold: int | None = None) -> list[Path]:
    """The images to segment: every ``*.nii.gz`` then ``*.nii`` of ``images_dir``, sorted.

    With ``split_file`` (a ``splits_final.json`` or the paper's ``splits_final.pkl``,
    :func:`~stroke_lesion_app.training.splits.load_splits`) and ``fold``, only the validation
    cases of that fold (by :func:`case_name`; the paper's ATLAS file stems match ``convert
    atlas``'s case identifiers, :func:`~stroke_lesion_app.training.splits.case_id`).

    Raises
    ------
    ValueError
        An unreadable split, ``fold`` out of its range, or no image left.
    """
    images_dir = Path(images_dir)
    images = sorted(images_dir.glob("*.nii.gz")) + sorted(images_dir.glob("*.nii"))
    if split_file is not None:
        splits = load_splits(split_file)
        if fold >= len(splits):
            raise ValueError(f"{split_file} has {len(splits)} folds; --fold {fold} is out of "
                             "range.")
        wanted = {name for case in splits[fold]["val"] for name in (case, case_id(case))}
        images = [image for image in images if case_name(image) in wanted]
    if not images:
        raise ValueError(f"no .nii/.nii.gz images to segment in {images_dir}.")
    return images


def refuse_non_empty(out_dir: Path | str, overwrite: bool = False) -> None:
    """Refuse to write into a folder that holds anything, unless ``overwrite``.

    Raises
    ------
    FileExistsError
        ``out_dir`` exists, is not empty and ``overwrite`` is false.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not overwrite:
        raise FileExistsError(f"{out_dir} is not empty; choose another folder or pass --force.")


def load_ensemble(tmp_dir: Path | str, *, model: str | Path | None = None,
                  members: Sequence[str] = (), reference_image: Path | str | None = None,
                  threshold: float | None = None, device: str = "cpu", tta: bool = True,
                  step_size: float = 0.5):
    """Load the ensemble of ``--model`` or of ``--member`` folders (packaged into ``tmp_dir``).

    Parameters
    ----------
    tmp_dir : path
        Folder for the throw-away bundle of ``members``; it must outlive the predictor.
    model : str or path, optional
        A bundle folder or name (:func:`~stroke_lesion_app.core.bundle.load_bundle`).
    members : sequence of str
        ``NAME=MODEL_FOLDER[:FOLDS][@WEIGHT]`` specifications, instead of ``model``.
    reference_image : path, optional
        An image to segment; its voxel size is the members' grid (needed with ``members``).
    threshold : float, optional
        Mask threshold; default the bundle's (0.5 for ``members``).
    device : {"cpu", "cuda"}
        Resolved device.
    tta : bool
        Mirroring test-time augmentation.
    step_size : float
        Sliding-window step, fraction of the patch.

    Returns
    -------
    stroke_lesion_app.core.ensemble.EnsemblePredictor

    Raises
    ------
    ValueError, BundleError, FileExistsError
        A bad member specification or folder, or an invalid bundle.
    """
    from stroke_lesion_app.core.ensemble import EnsemblePredictor

    if members:
        model = package_members(Path(tmp_dir) / "bundle",
                                [MemberSource.parse(text) for text in members],
                                reference_image=reference_image, threshold=threshold or 0.5)
    predictor = EnsemblePredictor(model, device=device, tta=tta, step_size=step_size)
    if threshold is not None and not members:
        predictor.threshold = threshold
    return predictor


def predict_images(predictor, images: Sequence[Path], out_dir: Path | str) -> Iterator[str]:
    """Segment ``images`` one by one; yield each case identifier once its files are written.

    Writes ``out_dir/<case>.nii.gz`` (the mask) and ``out_dir/probabilities/<case>.nii.gz``
    with ``predictor.predict_file``.
    """
    out_dir = Path(out_dir)
    (out_dir / "probabilities").mkdir(parents=True, exist_ok=True)
    for image in images:
        case = case_name(image)
        predictor.predict_file(image, out_dir / "probabilities" / f"{case}.nii.gz",
                               out_dir / f"{case}.nii.gz")
        yield case


# --------------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------------
def parse_schemes(pred_dirs: Sequence[Path], schemes: Sequence[str]) -> dict[str, list[Path]]:
    """Scheme name → prediction folders, from the PRED_DIR arguments and ``--scheme`` values.

    ``NAME=PRED_DIR`` adds a folder to scheme ``NAME``; one bare ``NAME`` names the scheme of
    ``pred_dirs`` (default ``model``).

    Raises
    ------
    ValueError
        Two bare names, a bare name without ``pred_dirs``, an empty folder after ``=``, nothing
        given, or a name that cannot name files (:data:`SCHEME_NAME`).

    Examples
    --------
    >>> folders = parse_schemes([Path("a")], ["A", "B=b", "B=c"])
    >>> {name: [str(path) for path in paths] for name, paths in folders.items()}
    {'A': ['a'], 'B': ['b', 'c']}
    """
    folders: dict[str, list[Path]] = {}
    bare = [value for value in schemes if "=" not in value]
    if len(bare) > 1:
        raise ValueError(f"--scheme given without '=PRED_DIR' {len(bare)} times ({bare[0]}, "
                         f"{bare[1]}); a bare NAME only names the PRED_DIR arguments, once.")
    if bare and not pred_dirs:
        raise ValueError(f"--scheme {bare[0]} names the PRED_DIR arguments, but none was given; "
                         "pass PRED_DIRs or use --scheme NAME=PRED_DIR.")
    if pred_dirs:
        folders[bare[0] if bare else "model"] = list(pred_dirs)
    for value in schemes:
        if "=" not in value:
            continue
        name, folder = value.split("=", 1)
        if not folder:
            raise ValueError(f"--scheme {value}: no folder after '='; write NAME=PRED_DIR.")
        folders.setdefault(name, []).append(Path(folder))
    if not folders:
        raise ValueError("no predictions given; pass PRED_DIR arguments or --scheme "
                         "NAME=PRED_DIR options.")
    for name in folders:
        if not SCHEME_NAME.fullmatch(name):
            raise ValueError(f"scheme name {name!r} is invalid (it names output files); use "
                             "letters, digits, '_', '+' and '-'.")
    return folders


def evaluation_outputs(out_dir: Path | str, names: Sequence[str], *,
                       overwrite: bool = False) -> list[Path]:
    """The files :func:`evaluate_schemes` writes for schemes ``names``; refusals first.

    Raises
    ------
    FileExistsError
        One of them exists and ``overwrite`` is false.
    ValueError
        ``out_dir`` is a file.
    """
    out_dir = Path(out_dir)
    paths = [out_dir / f"{name}{ending}" for name in names
             for ending in ("_cases.tsv", "_summary.tsv", "_summary.md")]
    paths += [out_dir / "dice_vs_volume.png", out_dir / "dice_vs_volume.svg"]
    if len(names) > 1:
        paths += [out_dir / "comparison.tsv", out_dir / "comparison.md"]
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{existing[0]} already exists ({len(existing)} output file(s) in "
                              f"{out_dir}); choose another --out or pass --force.")
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; pass a folder.")
    return paths


def evaluate_schemes(folders: Mapping[str, Sequence[Path]], truth_dir: Path | str,
                     out_dir: Path | str, *, connectivity: int = 6,
                     small_lesion_threshold: float = 1000,
                     small_lesion_rule: str = "components",
                     overwrite: bool = False) -> dict[str, Any]:
    """Score every scheme's predictions and write tables and the Dice-vs-volume figure.

    Parameters
    ----------
    folders : mapping of str to sequence of path
        Scheme → prediction folders (pooled), as :func:`parse_schemes` returns.
    truth_dir : path
        Truth masks with the predictions' file names.
    out_dir : path
        Output folder (created); the files are :func:`evaluation_outputs`.
    connectivity : {6, 18, 26}
        Neighbourhood of lesion components.
    small_lesion_threshold : float
        Small-lesion subset threshold in voxels.
    small_lesion_rule : {"components", "total"}
        Which subjects form the small-lesion subset
        (:func:`~stroke_lesion_app.training.evaluate.small_lesion_mask`): ``"components"``
        (every truth lesion component under the threshold; the paper's text) or ``"total"``
        (total truth lesion volume under it). The summaries and the comparison name the rule
        (``small_rule``), and each ``<scheme>_cases.tsv`` marks the subset (``small_subset``).
    overwrite : bool
        Replace existing files.

    Returns
    -------
    dict of str to pandas.DataFrame
        Scheme → per-case metrics with the ``small_subset`` column (also written as
        ``<scheme>_cases.tsv``).

    Raises
    ------
    ValueError
        An unknown rule (checked first), or what
        :func:`~stroke_lesion_app.training.evaluate.evaluate_folder` refuses.
    """
    from stroke_lesion_app.training.evaluate import (
        compare_schemes,
        evaluate_folder,
        plot_dice_vs_volume,
        small_lesion_mask,
        summarise,
        write_table,
    )
    from stroke_lesion_app.training.evaluate import (
        small_lesion_rule as describe_rule,
    )

    describe_rule(small_lesion_rule)  # an unknown rule fails before any file is read
    out_dir = Path(out_dir)
    frames = {name: evaluate_folder(dirs, truth_dir, connectivity=connectivity)
              for name, dirs in folders.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, frame in frames.items():
        frame["small_subset"] = small_lesion_mask(frame, small_lesion_threshold,
                                                  small_lesion_rule)
        with atomic_path(out_dir / f"{name}_cases.tsv") as tmp:
            frame.to_csv(tmp, sep="\t", index=True, na_rep="n/a")
        write_table(summarise(frame, small_lesion_threshold, small_lesion_rule),
                    out_dir / f"{name}_summary.tsv", overwrite=overwrite)
    # the total-volume threshold is a line on the volume axis; the components rule is not
    plot_dice_vs_volume(frames, out_dir / "dice_vs_volume.png",
                        small_lesion_threshold=(small_lesion_threshold
                                                if small_lesion_rule == "total" else None),
                        overwrite=overwrite)
    if len(frames) > 1:
        write_table(compare_schemes(frames, small_lesion_threshold=small_lesion_threshold,
                                    rule=small_lesion_rule),
                    out_dir / "comparison.tsv", overwrite=overwrite)
    return frames


# --------------------------------------------------------------------------------------------
# self-train
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SelfTrainInputs:
    """What a self-training round starts from (:func:`selftrain_inputs`).

    Attributes
    ----------
    source : pathlib.Path
        The source raw dataset ``Dataset<NNN>_<Name>``.
    raw_dir : pathlib.Path
        Its ``nnUNet_raw`` folder; the new dataset is written there too.
    name : str
        Name of the new dataset.
    splits_file : pathlib.Path
        The source's ``splits_final.json``.
    splits : list of dict
        Its folds.
    unlabelled_dir : pathlib.Path
        Folder of the images to pseudo-label.
    folds : tuple of str
        Folds to train (``--fold`` values; every fold of ``splits`` by default).
    """

    source: Path
    raw_dir: Path
    name: str
    splits_file: Path
    splits: list
    unlabelled_dir: Path
    folds: tuple[str, ...]


def selftrain_inputs(dataset_id: int, work_dir: Path | str, *,
                     raw_dir: Path | str | None = None, new_name: str | None = None,
                     splits_file: Path | str | None = None,
                     unlabelled_dir: Path | str | None = None,
                     folds: Sequence[str] = ()) -> SelfTrainInputs:
    """Find the source dataset, its split and the unlabelled images; check ``--fold`` values.

    Parameters
    ----------
    dataset_id : int
        The source dataset's number.
    work_dir : path
        WORK_DIR of ``train`` (``nnUNet_raw``, ``nnUNet_preprocessed``).
    raw_dir : path, optional
        ``nnUNet_raw`` elsewhere; default ``work_dir/nnUNet_raw``.
    new_name : str, optional
        Default: the source's name + ``SelfTrain``.
    splits_file : path, optional
        Default: the split ``train`` used,
        ``work_dir/nnUNet_preprocessed/<source>/splits_final.json``. The paper's
        ``splits_final.pkl`` is accepted too; its identifiers are mapped onto the source's
        cases (:func:`~stroke_lesion_app.training.splits.map_splits`).
    unlabelled_dir : path, optional
        Default: the source's ``imagesTs``.
    folds : sequence of str
        ``--fold`` values (integers or ``all``).

    Raises
    ------
    ValueError
        No source dataset, no split file, a malformed split or ``--fold``, a split case the
        source lacks, or a fold the split lacks.
    """
    work_dir = Path(work_dir)
    raw_dir = Path(raw_dir) if raw_dir is not None else work_dir / "nnUNet_raw"
    source = find_raw_dataset(raw_dir, dataset_id)
    name = new_name or f"{source.name.split('_', 1)[1]}SelfTrain"
    splits_file = Path(splits_file) if splits_file is not None else (
        work_dir / "nnUNet_preprocessed" / source.name / "splits_final.json")
    if not splits_file.is_file():
        raise ValueError(f"{splits_file} does not exist; pass the source's split with --splits "
                         "(the validation folds must stay those of the first round).")
    unlabelled_dir = Path(unlabelled_dir) if unlabelled_dir is not None else (
        source / "imagesTs")
    splits = map_splits(load_splits(splits_file), dataset_cases(source), source=splits_file,
                        dataset=source)
    try:
        fold_list = [fold if fold == "all" else int(fold) for fold in folds]
    except ValueError as error:
        reason = " ".join(str(error).split())
        raise ValueError(f"--fold is malformed ({reason}); pass integers or 'all'.") from None
    bad = [fold for fold in fold_list if fold != "all" and not 0 <= fold < len(splits)]
    if bad:
        raise ValueError(f"--fold {bad[0]}: {splits_file} has folds 0-{len(splits) - 1}.")
    return SelfTrainInputs(
        source=source, raw_dir=raw_dir, name=name, splits_file=splits_file, splits=splits,
        unlabelled_dir=unlabelled_dir,
        folds=tuple(str(fold) for fold in (fold_list or range(len(splits)))))


def pseudo_label_model(tmp_dir: Path | str, *, unlabelled_dir: Path | str,
                       model: str | Path | None = None, members: Sequence[str] = (),
                       threshold: float | None = None, tta: bool = True,
                       step_size: float = 0.5) -> tuple[Path, dict[str, Any]]:
    """The bundle that makes the pseudo-labels, and its identity as the new dataset records it.

    Parameters
    ----------
    tmp_dir : path
        Folder for the throw-away bundle of ``members``.
    unlabelled_dir : path
        The images to pseudo-label (their grid is the members' grid).
    model : str or path, optional
        A bundle folder or name.
    members : sequence of str
        ``NAME=MODEL_FOLDER[:FOLDS][@WEIGHT]`` specifications, instead of ``model``.
    threshold : float, optional
        Pseudo-label threshold; default the bundle's (0.5 for ``members``).
    tta : bool
        Mirroring test-time augmentation.
    step_size : float
        Sliding-window step.

    Returns
    -------
    tuple
        The bundle folder, and the identity: the bundle's
        (:meth:`~stroke_lesion_app.core.bundle.ModelBundle.identity`) or the members'
        (:func:`~stroke_lesion_app.training.package.member_identity`), with ``threshold``,
        ``tta`` and ``step_size``. Equal identities mean equal pseudo-labels, so a dataset
        made with the same identity is reused.

    Raises
    ------
    ValueError, BundleError, FileExistsError
        A bad member specification or folder, no unlabelled image, or an invalid bundle.
    """
    from stroke_lesion_app.core.bundle import load_bundle
    from stroke_lesion_app.training.selftrain import find_unlabelled_images

    if members:
        parsed = [MemberSource.parse(text) for text in members]
        images = find_unlabelled_images(unlabelled_dir)
        root = package_members(Path(tmp_dir) / "bundle", parsed,
                               reference_image=next(iter(images.values())),
                               threshold=threshold or 0.5)
        identity = {**member_identity(parsed), "threshold": threshold or 0.5}
    else:
        loaded = load_bundle(model)
        identity = {**loaded.identity(), "threshold": threshold or loaded.threshold}
        root = loaded.root
    identity.update(tta=tta, step_size=step_size)
    return root, identity


def make_pseudo_labelled_dataset(inputs: SelfTrainInputs, work_dir: Path | str, *,
                                 new_dataset_id: int, model: str | Path | None = None,
                                 members: Sequence[str] = (), threshold: float | None = None,
                                 tta: bool = True, step_size: float = 0.5,
                                 device: str = "cpu", overwrite: bool = False) -> dict[str, Any]:
    """Pseudo-label the unlabelled images and write the self-training dataset (or reuse it).

    :func:`pseudo_label_model`, then
    :func:`~stroke_lesion_app.training.selftrain.make_selftrain_dataset`; the ensemble is
    loaded only when the pseudo-labels must be made. The new dataset's folders under
    ``work_dir/nnUNet_preprocessed`` and ``work_dir/nnUNet_results`` count as made from it.

    Returns
    -------
    dict
        As :func:`~stroke_lesion_app.training.selftrain.make_selftrain_dataset` (``dataset_dir``,
        ``labelled``, ``pseudo_labelled``, ``splits``, ``record``, ``reused``).
    """
    from stroke_lesion_app.training.selftrain import make_selftrain_dataset

    with tempfile.TemporaryDirectory(prefix="stroke-lesion-selftrain-") as tmp:
        root, identity = pseudo_label_model(
            tmp, unlabelled_dir=inputs.unlabelled_dir, model=model, members=members,
            threshold=threshold, tta=tta, step_size=step_size)

        def load_predictor():
            from stroke_lesion_app.core.ensemble import EnsemblePredictor

            predictor = EnsemblePredictor(root, device=device, tta=tta, step_size=step_size)
            predictor.threshold = identity["threshold"]
            return predictor

        folder = f"Dataset{new_dataset_id:03d}_{inputs.name}"
        return make_selftrain_dataset(
            inputs.source, inputs.raw_dir, dataset_id=new_dataset_id, name=inputs.name,
            unlabelled_dir=inputs.unlabelled_dir, splits=inputs.splits, model=identity,
            load_predictor=load_predictor, overwrite=overwrite,
            derived=[Path(work_dir) / sub / folder
                     for sub in ("nnUNet_preprocessed", "nnUNet_results")])
