"""Package trained nnU-Net v2 models as a model bundle (see :mod:`stroke_lesion_app.core.bundle`).

A bundle member is copied from a trained-model folder (``<trainer>__<plans>__<configuration>``
under ``nnUNet_results``): ``plans.json``, ``dataset.json`` and, for each chosen fold,
``fold_N/checkpoint_final.pth`` reduced to what inference needs (the network weights, the
trainer name, the init arguments and the mirroring axes; no optimizer state, which is as large
as the weights again). The bundle is written to a hidden folder, loaded and validated there,
and only then renamed into place.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from stroke_lesion_app.core.bids import replace_directory
from stroke_lesion_app.core.bundle import (
    BUNDLE_FILENAME,
    BundleError,
    load_bundle,
    validate_bundle,
    write_bundle_manifest,
)

__all__ = ["INFERENCE_CHECKPOINT_KEYS", "MemberSource", "member_identity", "package_bundle",
           "package_members", "slim_checkpoint"]

#: Checkpoint entries kept in a bundle (all that nnU-Net's predictor reads).
INFERENCE_CHECKPOINT_KEYS = ("network_weights", "trainer_name", "init_args",
                             "inference_allowed_mirroring_axes")
_MEMBER = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]*)=(?P<folder>[^@]+?)"
                     r"(?::(?P<folds>[0-9a-z,]+))?(?:@(?P<weight>[0-9.eE+-]+))?")
_FOLDER = re.compile(r"(?P<trainer>[A-Za-z0-9_]+)__(?P<plans>[A-Za-z0-9_]+)__"
                     r"(?P<configuration>[A-Za-z0-9_]+)")


@dataclass(frozen=True)
class MemberSource:
    """Where one ensemble member comes from.

    Attributes
    ----------
    name : str
        Member label in the manifest.
    folder : pathlib.Path
        Trained-model folder ``<trainer>__<plans>__<configuration>``.
    folds : tuple or None
        Folds to use; ``None``: every ``fold_*`` with a ``checkpoint_final.pth``.
    weight : float
        Weight in the ensemble average.
    """

    name: str
    folder: Path
    folds: tuple | None = None
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> MemberSource:
        """Parse ``NAME=MODEL_FOLDER[:FOLDS][@WEIGHT]`` (``FOLDS`` comma-separated or ``all``).

        Raises
        ------
        ValueError
            A malformed specification.
        """
        match = _MEMBER.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"--member {text!r} is not NAME=MODEL_FOLDER[:FOLDS][@WEIGHT], e.g. "
                             "dtk10=results/Dataset501_X/StrokeTrainerDTK10MSCSA__nnUNetPlans__"
                             "3d_fullres:0,1,2@1.0")
        folds = None
        if match["folds"]:
            folds = tuple(fold if fold == "all" else int(fold)
                          for fold in match["folds"].split(",") if fold)
        weight = float(match["weight"]) if match["weight"] else 1.0
        return cls(match["name"], Path(match["folder"]), folds, weight)

    def resolved_folds(self) -> tuple:
        """The folds to package: :attr:`folds` or every finished ``fold_*`` of the folder."""
        if self.folds is not None:
            return self.folds
        found = []
        for path in sorted(self.folder.glob("fold_*/checkpoint_final.pth")):
            suffix = path.parent.name[len("fold_"):]
            found.append(int(suffix) if suffix.isdigit() else suffix)
        if not found:
            raise ValueError(f"{self.folder}: no fold_*/checkpoint_final.pth; finish training "
                             "(stroke-lesion-model train) or name the folds.")
        return tuple(found)


def slim_checkpoint(source: Path, target: Path) -> None:
    """Copy an nnU-Net checkpoint keeping only :data:`INFERENCE_CHECKPOINT_KEYS`.

    Raises
    ------
    BundleError
        The file is not an nnU-Net checkpoint.
    """
    import torch

    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds on a bad file
        raise BundleError(f"{source}: not a readable checkpoint ({error}).") from None
    missing = [key for key in ("network_weights", "trainer_name") if key not in checkpoint]
    if missing:
        raise BundleError(f"{source}: no {', '.join(missing)}; is it an nnU-Net v2 checkpoint?")
    slim = {key: checkpoint[key] for key in INFERENCE_CHECKPOINT_KEYS if key in checkpoint}
    target.parent.mkdir(parents=True, exist_ok=True)
    torch.save(slim, target)


def package_bundle(out_dir: Path | str, members: list[MemberSource], *, name: str,
                   version: str, description: str = "", resolution_mm: float = 1.0,
                   threshold: float = 0.5, min_component_voxels: int = 0,
                   connectivity: int = 26, licence: str = "", training_data: str = "",
                   demo: bool = False, overwrite: bool = False) -> Path:
    """Write a bundle of ``members`` to ``out_dir`` and validate it.

    Parameters
    ----------
    out_dir : path
        Bundle folder to create.
    members : list of MemberSource
        Ensemble members (at least one; names unique).
    name, version, description, licence, training_data : str
        Manifest identity (see :mod:`stroke_lesion_app.core.bundle`).
    resolution_mm : float
        Template grid (mm) the members were trained on.
    threshold : float
        Probability threshold of the mask, in (0, 1).
    min_component_voxels : int
        Components smaller than this (template-grid voxels) are dropped.
    connectivity : {6, 18, 26}
        Neighbourhood of that rule.
    demo : bool
        Mark the bundle as a demo (reports warn).
    overwrite : bool
        Replace an existing bundle at ``out_dir``.

    Returns
    -------
    pathlib.Path
        The manifest ``out_dir/bundle.json``.

    Raises
    ------
    ValueError, FileExistsError, BundleError
        Bad members, an existing target, or a bundle that does not validate.
    """
    out_dir = Path(out_dir).absolute()
    if not members:
        raise ValueError("a bundle needs at least one --member.")
    names = [member.name for member in members]
    if len(set(names)) != len(names):
        raise ValueError(f"member names must be unique, got {names}.")
    check_bundle_target(out_dir, overwrite)
    with staged_bundle(out_dir) as staged:
        entries = [_copy_member(member, staged) for member in members]
        write_bundle_manifest(
            staged, name=name, version=version, members=entries, description=description,
            resolution_mm=resolution_mm, threshold=threshold,
            min_component_voxels=min_component_voxels, connectivity=connectivity,
            licence=licence, training_data=training_data, demo=demo)
    return out_dir / BUNDLE_FILENAME


def check_bundle_target(out_dir: Path, overwrite: bool) -> None:
    """Refuse an existing ``out_dir`` unless ``overwrite``, and never replace a folder that is
    not a bundle (no ``bundle.json``). Raises :class:`FileExistsError` with the fix."""
    if out_dir.exists() and not overwrite:
        raise FileExistsError(f"{out_dir} already exists; choose another folder or pass --force.")
    if out_dir.exists() and not (out_dir / BUNDLE_FILENAME).is_file():
        raise FileExistsError(f"{out_dir} exists and is not a bundle; remove it yourself or "
                              "choose another folder.")


@contextlib.contextmanager
def staged_bundle(out_dir: Path) -> Iterator[Path]:
    """A hidden staging folder beside ``out_dir`` to write a bundle into.

    When the ``with`` block ends without an error, the bundle in it is validated
    (:func:`~stroke_lesion_app.core.bundle.validate_bundle`) and renamed into place
    (replacing ``out_dir``); the staging folder is removed in every case, so a failed or
    interrupted write never leaves anything that looks like a bundle.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield staged
        validate_bundle(load_bundle(staged))
        replace_directory(staged, out_dir)
    finally:
        if staged.exists():
            shutil.rmtree(staged)


def package_members(out_dir: Path | str, members: Sequence[MemberSource], *,
                    reference_image: Path | str, threshold: float = 0.5) -> Path:
    """Package ``--member`` folders as a throw-away bundle to predict with; return its folder.

    What ``stroke-lesion-model ensemble`` and ``self-train`` do with ``--member`` options: a
    bundle named ``ensemble``, version ``0``, on the grid of ``reference_image`` (the voxel
    size of its first axis, in mm; the images to segment are on the members' training grid).

    Parameters
    ----------
    out_dir : path
        Bundle folder to create (normally inside a temporary folder).
    members : sequence of MemberSource
        Ensemble members.
    reference_image : path
        One of the images to segment.
    threshold : float
        Probability threshold of the mask, in (0, 1).

    Returns
    -------
    pathlib.Path
        The bundle folder (``out_dir``, absolute).

    Raises
    ------
    ValueError, FileExistsError, BundleError
        As :func:`package_bundle`.
    """
    import nibabel as nib

    resolution = float(nib.load(str(reference_image)).header.get_zooms()[0])
    return package_bundle(out_dir, list(members), name="ensemble", version="0",
                          threshold=threshold, resolution_mm=resolution).parent


def member_identity(members: Sequence[MemberSource]) -> dict:
    """Provenance of an ensemble given as ``--member`` folders (recorded by self-training).

    Returns
    -------
    dict
        ``{"members": [{"name", "folder" (absolute), "folds", "weight"}, ...]}``, the folds
        resolved (:meth:`MemberSource.resolved_folds`).

    Examples
    --------
    >>> member_identity([MemberSource("a", Path("/r/T__P__3d_fullres"), (0, 1), 2.0)])
    {'members': [{'name': 'a', 'folder': '/r/T__P__3d_fullres', 'folds': [0, 1], 'weight': 2.0}]}
    """
    return {"members": [{"name": member.name, "folder": str(member.folder.absolute()),
                         "folds": list(member.resolved_folds()), "weight": member.weight}
                        for member in members]}


def _copy_member(member: MemberSource, staged: Path) -> dict:
    folder = member.folder
    match = _FOLDER.fullmatch(folder.name)
    if not folder.is_dir() or match is None:
        raise ValueError(f"{folder}: not a trained-model folder "
                         "(<trainer>__<plans>__<configuration> under nnUNet_results).")
    for required in ("plans.json", "dataset.json"):
        if not (folder / required).is_file():
            raise ValueError(f"{folder / required}: missing; is {folder} a finished nnU-Net "
                             "training?")
    folds = member.resolved_folds()
    target = staged / member.name
    target.mkdir()
    for required in ("plans.json", "dataset.json"):
        shutil.copyfile(folder / required, target / required)
    for fold in folds:
        source = folder / f"fold_{fold}" / "checkpoint_final.pth"
        if not source.is_file():
            raise ValueError(f"{source}: missing; train fold {fold} or leave it out.")
        slim_checkpoint(source, target / f"fold_{fold}" / "checkpoint_final.pth")
        record = folder / f"fold_{fold}" / "stroke_lesion_app_training.json"
        if record.is_file():
            shutil.copyfile(record, target / f"fold_{fold}" / record.name)
    plans = json.loads((folder / "plans.json").read_text())
    if match["configuration"] not in plans.get("configurations", {}):
        raise ValueError(f"{folder / 'plans.json'}: no configuration "
                         f"{match['configuration']!r}.")
    return {"name": member.name, "folder": member.name, "trainer": match["trainer"],
            "configuration": match["configuration"], "folds": list(folds),
            "weight": member.weight}
