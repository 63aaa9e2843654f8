"""Model bundles: a manifest (``bundle.json``) beside nnU-Net v2 trained-model folders.

A bundle is a directory::

    <bundle>/
      bundle.json
      <member folder>/            # an nnU-Net v2 trained-model folder, one per member
        plans.json
        dataset.json
        fold_0/checkpoint_final.pth
        fold_1/checkpoint_final.pth

``bundle.json`` names the template space and resolution the members were trained in, the
input modality, the probability threshold and small-component rule applied to the ensemble's
averaged softmax probability, the members (folder, trainer, configuration, folds, checkpoint
name, weight in the average, sha256 of every checkpoint), the licence and the training data::

    {
      "name": "demo", "version": "0.1.0", "description": "...",
      "space": "MNI152NLin2009aSym", "resolution_mm": 1, "modality": "T1w",
      "threshold": 0.5, "min_component_voxels": 10, "connectivity": 26,
      "licence": "...", "training_data": "...", "demo": true,
      "members": [{"name": "dtk10_mscsa",
                   "folder": "StrokeTrainerDTK10MSCSA__nnUNetPlans__3d_fullres",
                   "trainer": "StrokeTrainerDTK10MSCSA", "configuration": "3d_fullres",
                   "folds": [0, 1], "checkpoint": "checkpoint_final.pth", "weight": 1.0,
                   "sha256": {"fold_0/checkpoint_final.pth": "…",
                              "fold_1/checkpoint_final.pth": "…"}}]
    }

Imported models (``stroke-lesion-model import``) carry their provenance: a top-level
``"source"`` (``framework``, ``url``, ``citation``) and per member a ``"source"`` (framework,
task or dataset, trainer, plans and network of the original) and an ``"aggregation"``: how the
member's test-time mirrorings and sliding windows are averaged. ``"logits"`` (the default) is
nnU-Net v2's own way; ``"softmax"`` averages softmax probabilities, as nnU-Net v1's predictor
does, so that an imported v1 model gives what v1 gives.

:func:`load_bundle` parses and checks the manifest's structure; :func:`validate_bundle` checks
it against the files (space, folders, checkpoints, checksums). Every problem raises
:class:`BundleError` (a :class:`ValueError`) with one line naming the file and the fix.
:func:`compute_checksums` and :func:`write_bundle_manifest` are for packaging a bundle after
training. This module imports neither torch nor nnU-Net.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .components import CONNECTIVITIES
from .fileio import write_json_atomic

__all__ = [
    "AGGREGATIONS",
    "BUNDLE_FILENAME",
    "DEMO_WARNING",
    "MODELS_ENV_VAR",
    "BundleError",
    "BundleMember",
    "ModelBundle",
    "bundle_search_path",
    "compute_checksums",
    "file_sha256",
    "load_bundle",
    "validate_bundle",
    "write_bundle_manifest",
]

LOGGER = logging.getLogger(__name__)

#: Name of the manifest inside a bundle directory.
BUNDLE_FILENAME = "bundle.json"
#: Environment variable listing folders (``os.pathsep``-separated) that hold named bundles.
MODELS_ENV_VAR = "STROKE_LESION_APP_MODELS"
#: Bundles shipped inside the package (e.g. the demo bundle), searched last.
PACKAGE_MODELS_DIR = Path(__file__).resolve().parents[1] / "data" / "models"

DEFAULT_SPACE = "MNI152NLin2009aSym"
#: Shown in every report (and logged) when a bundle's manifest says ``"demo": true``.
DEMO_WARNING = ("Model bundle marked as demo: a synthetic-data demo, not for research or "
                "clinical use. Its lesion masks show that the pipeline runs; they are not "
                "measurements.")

_REQUIRED_KEYS = ("name", "version", "space", "resolution_mm", "modality", "threshold",
                  "min_component_voxels", "connectivity", "members")
_REQUIRED_MEMBER_KEYS = ("name", "folder", "trainer", "configuration", "folds")
#: How a member's mirrorings and sliding windows are averaged (see the module docstring).
AGGREGATIONS = ("logits", "softmax")
_CHUNK = 1 << 20


class BundleError(ValueError):
    """A model bundle that cannot be used; the message names the file and the fix."""


@dataclass(frozen=True)
class BundleMember:
    """One ensemble member: an nnU-Net v2 trained-model folder and the folds to use.

    Attributes
    ----------
    name : str
        Member label (logs, provenance).
    folder : pathlib.Path
        Absolute path of the trained-model folder (``plans.json``, ``dataset.json``, ``fold_N/``).
    trainer : str
        nnU-Net trainer class name; must match the checkpoints' ``trainer_name``.
    configuration : str
        nnU-Net configuration, e.g. ``"3d_fullres"``.
    folds : tuple
        Folds (``int`` or ``"all"``), each run as its own pass and averaged as probabilities.
    checkpoint : str
        Checkpoint file name inside each ``fold_N/`` folder.
    weight : float
        Weight of the member in the average (normalised over members by the predictor); each
        fold gets ``weight / len(folds)``.
    sha256 : dict
        ``"fold_N/<checkpoint>"`` → hex digest.
    aggregation : {"logits", "softmax"}
        Average of test-time mirrorings and sliding windows: nnU-Net v2's logits (default) or
        nnU-Net v1's softmax probabilities (imported v1 models).
    source : dict
        Provenance of an imported member (framework, trainer, plans, ...); empty otherwise.
    """

    name: str
    folder: Path
    trainer: str
    configuration: str
    folds: tuple
    checkpoint: str = "checkpoint_final.pth"
    weight: float = 1.0
    sha256: Mapping[str, str] = field(default_factory=dict)
    aggregation: str = "logits"
    source: Mapping[str, Any] = field(default_factory=dict)

    def checkpoint_key(self, fold) -> str:
        """Relative checkpoint path of ``fold`` inside :attr:`folder` (the ``sha256`` key)."""
        return f"fold_{fold}/{self.checkpoint}"

    def checkpoint_path(self, fold) -> Path:
        """Absolute checkpoint path of ``fold``."""
        return self.folder / self.checkpoint_key(fold)


@dataclass(frozen=True)
class ModelBundle:
    """A parsed ``bundle.json`` (see the module docstring for the keys).

    Attributes
    ----------
    root : pathlib.Path
        Bundle directory.
    manifest : dict
        The manifest as read (for provenance).
    members : tuple of BundleMember
        Ensemble members, folders resolved against :attr:`root`.
    """

    root: Path
    name: str
    version: str
    space: str
    resolution_mm: float
    modality: str
    threshold: float
    min_component_voxels: int
    connectivity: int
    members: tuple
    description: str = ""
    licence: str = ""
    training_data: str = ""
    demo: bool = False
    #: Provenance of an imported bundle (``framework``, ``url``, ``citation``); empty otherwise.
    source: Mapping[str, Any] = field(default_factory=dict)
    manifest: Mapping[str, Any] = field(default_factory=dict, repr=False)
    #: sha256 of ``bundle.json`` as read by :func:`load_bundle` (provenance; no second read).
    manifest_sha256: str = ""

    @property
    def manifest_path(self) -> Path:
        """Path of ``bundle.json``."""
        return self.root / BUNDLE_FILENAME

    def identity(self) -> dict:
        """What outputs record as provenance: name, version, space, demo flag, manifest sha256,
        members; for an imported bundle also its licence, its source and each member's origin
        and aggregation."""
        identity = {"name": self.name, "version": self.version, "space": self.space,
                    "resolution_mm": self.resolution_mm, "demo": self.demo,
                    "path": str(self.root), "manifest_sha256": self.manifest_sha256,
                    "members": [{"name": m.name, "trainer": m.trainer, "folds": list(m.folds),
                                 "weight": m.weight} for m in self.members]}
        if self.source:
            identity["licence"] = self.licence or "not stated"
            identity["source"] = dict(self.source)
            for entry, member in zip(identity["members"], self.members):
                entry["aggregation"] = member.aggregation
                if member.source:
                    entry["source"] = dict(member.source)
        return identity


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 hex digest of a file, read in 1 MiB chunks.

    Examples
    --------
    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(delete=False) as f:
    ...     _ = f.write(b"abc")
    >>> file_sha256(f.name)[:16]
    'ba7816bf8f01cfea'
    >>> os.remove(f.name)
    """
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundle_search_path(models_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for a bundle given by name, in order.

    ``models_dir`` first (if given), then every entry of ``$STROKE_LESION_APP_MODELS``, then the
    package's ``stroke_lesion_app/data/models/`` if it exists.
    """
    folders = [Path(models_dir)] if models_dir is not None else []
    folders += [Path(e) for e in os.environ.get(MODELS_ENV_VAR, "").split(os.pathsep) if e.strip()]
    if PACKAGE_MODELS_DIR.is_dir():
        folders.append(PACKAGE_MODELS_DIR)
    return folders


def _resolve(path_or_name: str | os.PathLike, models_dir) -> Path:
    candidate = Path(path_or_name).expanduser()
    if candidate.is_file() and candidate.name == BUNDLE_FILENAME:
        return candidate.parent.resolve()
    name = str(path_or_name)
    bare_name = os.sep not in name and "/" not in name and name not in (".", "..")
    # a bare name is a folder of the working directory only if that folder is a bundle: `make
    # demo` runs the app next to its output folder demo/, and --model demo means the bundle
    if candidate.is_dir() and (not bare_name or (candidate / BUNDLE_FILENAME).is_file()):
        return candidate.resolve()
    if candidate.suffix == ".zip":
        raise BundleError(f"{candidate}: zipped bundles are not supported yet; unzip it and "
                          f"pass the folder holding {BUNDLE_FILENAME}.")
    if bare_name:
        for folder in bundle_search_path(models_dir):
            if (folder / name).is_dir():
                return (folder / name).resolve()
    if candidate.is_dir():  # load_bundle then names its missing bundle.json
        return candidate.resolve()
    searched = ", ".join(str(f) for f in bundle_search_path(models_dir)) or "none"
    raise BundleError(f"{path_or_name}: no such model bundle (a folder with {BUNDLE_FILENAME}); "
                      f"pass a bundle folder or a name found in ${MODELS_ENV_VAR} "
                      f"(searched: {searched}).")


def _number(value, key, manifest, *, integer=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise BundleError(f"{manifest}: {key!r} must be a finite number, got {value!r}; fix it.")
    if integer and int(value) != value:
        raise BundleError(f"{manifest}: {key!r} must be an integer, got {value!r}; fix it.")
    return int(value) if integer else float(value)


def _parse_member(entry, index: int, root: Path, manifest: Path) -> BundleMember:
    where = f"{manifest}: members[{index}]"
    if not isinstance(entry, Mapping):
        raise BundleError(f"{where} must be an object with keys {list(_REQUIRED_MEMBER_KEYS)}.")
    missing = [k for k in _REQUIRED_MEMBER_KEYS if k not in entry]
    if missing:
        raise BundleError(f"{where} lacks {missing}; add them "
                          f"(keys: {list(_REQUIRED_MEMBER_KEYS)}).")
    folds = entry["folds"]
    if not isinstance(folds, Sequence) or isinstance(folds, str) or not folds:
        raise BundleError(f"{where}: 'folds' must be a non-empty list such as [0, 1]; fix it.")
    folds = tuple(f if f == "all" else _number(f, "folds", manifest, integer=True) for f in folds)
    if len(set(folds)) != len(folds):
        raise BundleError(f"{where}: 'folds' lists a fold twice ({list(folds)}); list each once.")
    weight = _number(entry.get("weight", 1.0), f"members[{index}].weight", manifest)
    if weight <= 0:
        raise BundleError(f"{where}: 'weight' must be > 0, got {weight}; give a positive weight "
                          f"or remove the member.")
    folder = Path(entry["folder"])
    if folder.is_absolute() or ".." in folder.parts:
        raise BundleError(f"{where}: 'folder' must be a path relative to the bundle folder, "
                          f"got {entry['folder']!r}; fix it.")
    sha256 = entry.get("sha256", {})
    if not isinstance(sha256, Mapping):
        raise BundleError(f"{where}: 'sha256' must map 'fold_N/<checkpoint>' to a hex digest.")
    aggregation = entry.get("aggregation", "logits")
    if aggregation not in AGGREGATIONS:
        raise BundleError(f"{where}: 'aggregation' must be one of {list(AGGREGATIONS)}, got "
                          f"{aggregation!r}; fix it.")
    source = entry.get("source", {})
    if not isinstance(source, Mapping):
        raise BundleError(f"{where}: 'source' must be an object (framework, trainer, ...).")
    return BundleMember(
        name=str(entry["name"]), folder=root / folder, trainer=str(entry["trainer"]),
        configuration=str(entry["configuration"]), folds=folds,
        checkpoint=str(entry.get("checkpoint", "checkpoint_final.pth")), weight=weight,
        sha256=dict(sha256), aggregation=aggregation, source=dict(source),
    )


def _read_manifest(path: Path) -> bytes:
    """The bytes of a ``bundle.json`` (the one place a manifest is read)."""
    return path.read_bytes()


def load_bundle(path_or_name: str | os.PathLike,
                models_dir: str | os.PathLike | None = None) -> ModelBundle:
    """Read a bundle's manifest and check its structure (its files: :func:`validate_bundle`).

    Parameters
    ----------
    path_or_name : str or os.PathLike
        A bundle folder, its ``bundle.json``, or a bundle name looked up in ``models_dir``,
        ``$STROKE_LESION_APP_MODELS`` and the package's ``data/models/``.
    models_dir : str or os.PathLike, optional
        Extra folder searched first for a name.

    Returns
    -------
    ModelBundle

    Raises
    ------
    BundleError
        No such bundle, no ``bundle.json``, invalid JSON, missing keys or bad values.
    """
    root = _resolve(path_or_name, models_dir)
    manifest_path = root / BUNDLE_FILENAME
    if not manifest_path.is_file():
        raise BundleError(f"{manifest_path}: missing; a model bundle needs a {BUNDLE_FILENAME} "
                          f"manifest (write one with write_bundle_manifest).")
    raw = _read_manifest(manifest_path)
    try:
        manifest = json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{manifest_path}: not valid JSON ({error}); fix the syntax.") from None
    if not isinstance(manifest, Mapping):
        raise BundleError(f"{manifest_path}: must hold a JSON object; fix it.")
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{manifest_path}: missing keys {missing}; add them "
                          f"(required: {list(_REQUIRED_KEYS)}).")
    threshold = _number(manifest["threshold"], "threshold", manifest_path)
    if not 0.0 < threshold < 1.0:
        raise BundleError(f"{manifest_path}: 'threshold' must lie in (0, 1), got {threshold}.")
    resolution = _number(manifest["resolution_mm"], "resolution_mm", manifest_path)
    if resolution <= 0:
        raise BundleError(f"{manifest_path}: 'resolution_mm' must be > 0, got {resolution}.")
    min_voxels = _number(manifest["min_component_voxels"], "min_component_voxels",
                         manifest_path, integer=True)
    if min_voxels < 0:
        raise BundleError(f"{manifest_path}: 'min_component_voxels' must be >= 0, "
                          f"got {min_voxels}.")
    connectivity = _number(manifest["connectivity"], "connectivity", manifest_path, integer=True)
    if connectivity not in CONNECTIVITIES:
        raise BundleError(f"{manifest_path}: 'connectivity' must be one of "
                          f"{tuple(CONNECTIVITIES)}, "
                          f"got {connectivity}.")
    entries = manifest["members"]
    if not isinstance(entries, list) or not entries:
        raise BundleError(f"{manifest_path}: 'members' must be a non-empty list of members.")
    members = tuple(_parse_member(e, i, root, manifest_path) for i, e in enumerate(entries))
    names = [m.name for m in members]
    if len(set(names)) != len(names):
        raise BundleError(f"{manifest_path}: member names must be unique, got {names}.")
    source = manifest.get("source", {})
    if not isinstance(source, Mapping):
        raise BundleError(f"{manifest_path}: 'source' must be an object (framework, url, "
                          f"citation); fix it.")
    return ModelBundle(
        root=root, name=str(manifest["name"]), version=str(manifest["version"]),
        space=str(manifest["space"]), resolution_mm=resolution, modality=str(manifest["modality"]),
        threshold=threshold, min_component_voxels=min_voxels, connectivity=connectivity,
        members=members, description=str(manifest.get("description", "")),
        licence=str(manifest.get("licence", "")),
        training_data=str(manifest.get("training_data", "")),
        demo=bool(manifest.get("demo", False)), source=dict(source), manifest=manifest,
        manifest_sha256=hashlib.sha256(raw).hexdigest(),
    )


def validate_bundle(bundle: ModelBundle | str | os.PathLike, expected_space: str = DEFAULT_SPACE,
                    *, expected_modality: str | None = "T1w",
                    check_checksums: bool = True) -> ModelBundle:
    """Check a bundle against its files: space, member folders, checkpoints and checksums.

    Parameters
    ----------
    bundle : ModelBundle or path or name
        A loaded bundle, or anything :func:`load_bundle` accepts.
    expected_space : str
        Template space the app resamples images to.
    expected_modality : str or None
        Input modality the app feeds; ``None`` skips the check.
    check_checksums : bool
        Hash every checkpoint and compare with the manifest (seconds per GB).

    Returns
    -------
    ModelBundle
        The bundle, loaded if a path or name was given.

    Raises
    ------
    BundleError
        With one line naming the offending file and the fix.
    """
    if not isinstance(bundle, ModelBundle):
        bundle = load_bundle(bundle)
    manifest = bundle.manifest_path
    if bundle.space != expected_space:
        raise BundleError(f"{manifest}: bundle space is {bundle.space!r} but the app works in "
                          f"{expected_space!r}; use a bundle trained in {expected_space}.")
    if expected_modality is not None and bundle.modality != expected_modality:
        raise BundleError(f"{manifest}: bundle modality is {bundle.modality!r} but the input is "
                          f"{expected_modality!r}; use a {expected_modality} bundle.")
    for member in bundle.members:
        if not member.folder.is_dir():
            raise BundleError(f"{member.folder}: member {member.name!r} folder is missing; copy "
                              f"the nnU-Net trained-model folder there or fix 'folder' in "
                              f"{manifest}.")
        for required in ("plans.json", "dataset.json"):
            if not (member.folder / required).is_file():
                raise BundleError(f"{member.folder / required}: missing; copy it from the nnU-Net "
                                  f"results folder of member {member.name!r}.")
        for fold in member.folds:
            path = member.checkpoint_path(fold)
            if not path.is_file():
                raise BundleError(f"{path}: checkpoint of fold {fold} of member {member.name!r} is "
                                  f"missing; copy it or remove fold {fold} from {manifest}.")
            if not check_checksums:
                continue
            key = member.checkpoint_key(fold)
            expected = member.sha256.get(key)
            if not expected:
                raise BundleError(f"{path}: no sha256 for {key!r} in member {member.name!r} of "
                                  f"{manifest}; add it (compute_checksums).")
            actual = file_sha256(path)
            if actual.lower() != str(expected).lower():
                raise BundleError(f"{path}: sha256 mismatch (expected {expected}, got {actual}); "
                                  f"the file is corrupt or replaced: restore it or re-package "
                                  f"the bundle.")
    LOGGER.info("Model bundle %s %s (%s) is valid.", bundle.name, bundle.version, bundle.root)
    return bundle


def compute_checksums(member_folder: str | os.PathLike, folds: Iterable,
                      checkpoint: str = "checkpoint_final.pth") -> dict[str, str]:
    """sha256 of every ``fold_N/<checkpoint>`` of a trained-model folder (manifest format).

    Raises
    ------
    BundleError
        A checkpoint is missing.
    """
    sums = {}
    for fold in folds:
        key = f"fold_{fold}/{checkpoint}"
        path = Path(member_folder) / key
        if not path.is_file():
            raise BundleError(f"{path}: missing; train fold {fold} or drop it from the member.")
        sums[key] = file_sha256(path)
    return sums


def write_bundle_manifest(bundle_dir: str | os.PathLike, *, name: str, version: str,
                          members: Sequence[Mapping[str, Any]], description: str = "",
                          space: str = DEFAULT_SPACE, resolution_mm: float = 1,
                          modality: str = "T1w", threshold: float = 0.5,
                          min_component_voxels: int = 0, connectivity: int = 26,
                          licence: str = "", training_data: str = "",
                          demo: bool = False, source: Mapping[str, Any] | None = None) -> Path:
    """Write ``bundle.json`` into ``bundle_dir``, filling in missing checksums.

    Parameters
    ----------
    bundle_dir : path
        Folder that already holds the members' trained-model folders.
    members : sequence of dict
        Each with ``name``, ``folder`` (relative to ``bundle_dir``), ``trainer``,
        ``configuration``, ``folds`` and optionally ``checkpoint``, ``weight``,
        ``aggregation`` and ``source``; ``sha256`` is computed when absent.
    source : dict, optional
        Provenance of an imported bundle (``framework``, ``url``, ``citation``).

    Returns
    -------
    pathlib.Path
        The manifest, which :func:`load_bundle` then accepts.
    """
    bundle_dir = Path(bundle_dir)
    entries = []
    for member in members:
        entry = dict(asdict(member)) if isinstance(member, BundleMember) else dict(member)
        folder = Path(entry["folder"])
        if folder.is_absolute():
            folder = folder.relative_to(bundle_dir.resolve())
        entry["folder"] = folder.as_posix()
        entry["folds"] = list(entry["folds"])
        entry.setdefault("checkpoint", "checkpoint_final.pth")
        if not entry.get("source"):  # a BundleMember's defaults: keep the manifest unchanged
            entry.pop("source", None)
            if entry.get("aggregation", "logits") == "logits":
                entry.pop("aggregation", None)
        entry["weight"] = float(entry.get("weight", 1.0))
        if not entry.get("sha256"):
            entry["sha256"] = compute_checksums(bundle_dir / folder, entry["folds"],
                                                entry["checkpoint"])
        entries.append(entry)
    manifest = {
        "name": name, "version": version, "description": description, "space": space,
        "resolution_mm": resolution_mm, "modality": modality, "threshold": threshold,
        "min_component_voxels": min_component_voxels, "connectivity": connectivity,
        "licence": licence, "training_data": training_data, "demo": demo, "members": entries,
    }
    if source:
        manifest["source"] = dict(source)
    return write_json_atomic(bundle_dir / BUNDLE_FILENAME, manifest)
