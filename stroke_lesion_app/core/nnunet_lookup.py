"""Find nnU-Net v2 trainer classes by name, ours included, without users setting
``nnUNet_extTrainer`` themselves.

Lookup code only (no training): the app's ensemble predictor (:mod:`.ensemble`) and the
training commands both use it, so it lives in ``core``. The trainer *modules* stay in
``stroke_lesion_app/training/nnunet_trainers/``; this module only names that folder and never
imports it.

nnU-Net 2.8 looks a trainer up by class name
(``nnunetv2.utilities.find_objects.recursive_find_trainer_class_by_name``): first in its own
``nnunetv2.training.nnUNetTrainer`` tree, then in every folder listed (``os.pathsep``-separated)
in the ``nnUNet_extTrainer`` environment variable, read at lookup time. Each module of such a
folder is imported as a *top-level* module, which is why ``nnunet_trainers/`` holds only trainer
modules with environment-unique names.

This module does not import nnU-Net at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import MutableMapping
from pathlib import Path

__all__ = [
    "TRAINER_ENV_VAR",
    "TRAINER_NAMES",
    "ensure_trainer_discovery",
    "find_trainer_class",
    "trainer_folder",
]

LOGGER = logging.getLogger(__name__)

#: Environment variable nnU-Net >= 2.8 reads for external trainer folders.
TRAINER_ENV_VAR = "nnUNet_extTrainer"

#: Frozen trainer names (they end up in checkpoints and result folder names: never rename).
TRAINER_NAMES = (
    "StrokeTrainerDefault",
    "StrokeTrainerDefaultMSCSA",
    "StrokeTrainerDTK10",
    "StrokeTrainerDTK10MSCSA",
    "StrokeTrainerResUNet",
    "StrokeTrainerResUNetMSCSA",
)


def trainer_folder() -> Path:
    """Folder holding our nnU-Net trainer modules (the one ``nnUNet_extTrainer`` must list).

    Returns
    -------
    pathlib.Path
        Absolute path of ``stroke_lesion_app/training/nnunet_trainers``.
    """
    return Path(__file__).resolve().parents[1] / "training" / "nnunet_trainers"


def ensure_trainer_discovery(environ: MutableMapping[str, str] | None = None) -> str:
    """Append :func:`trainer_folder` to ``nnUNet_extTrainer`` unless it is already listed.

    Entries already in the variable are kept, in order. Child processes started afterwards
    (e.g. ``nnUNetv2_train``) inherit the setting.

    Parameters
    ----------
    environ : MutableMapping[str, str], optional
        Environment to edit; ``os.environ`` by default.

    Returns
    -------
    str
        The new value of ``nnUNet_extTrainer``.
    """
    environ = os.environ if environ is None else environ
    folder = str(trainer_folder())
    entries = [e for e in environ.get(TRAINER_ENV_VAR, "").split(os.pathsep) if e.strip()]
    listed = {os.path.realpath(e) for e in entries}
    if os.path.realpath(folder) not in listed:
        entries.append(folder)
        environ[TRAINER_ENV_VAR] = os.pathsep.join(entries)
        LOGGER.info("Added %s to %s.", folder, TRAINER_ENV_VAR)
    else:
        LOGGER.debug("%s already lists %s - skipping.", TRAINER_ENV_VAR, folder)
    return environ[TRAINER_ENV_VAR]


def find_trainer_class(name: str) -> type:
    """Look a trainer up exactly as ``nnUNetv2_train`` and ``nnUNetPredictor`` do.

    Calls :func:`ensure_trainer_discovery` first, so our trainers are found by name.

    Parameters
    ----------
    name : str
        Trainer class name, ours (e.g. ``"StrokeTrainerDTK10MSCSA"``) or an nnU-Net one.

    Returns
    -------
    type
        The trainer class (a subclass of ``nnUNetTrainer``).

    Raises
    ------
    RuntimeError
        From nnU-Net, when no trainer of that name exists.
    """
    ensure_trainer_discovery()
    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

    return recursive_find_trainer_class_by_name(name)
